"""TUI start-up: seconds from process start to the first painted frame of `tunelab PROJECTS_DIR`.

    python bench/tui_startup.py [PROJECTS_DIR] [--repeat 7] [--importtime]

Each repeat starts a fresh interpreter that does what `tunelab PROJECTS_DIR` does (the `tunelab`
entry point's `tui.cli.main`, so the CLI router and its imports are included) but runs the app
headless with `--images none` (no terminal probe) and exits on the app's `Ready` event, which
Textual posts after the first screen has been composed and painted. The parent takes the time
from just before it spawns the child to the child's report of its `Ready` (both `time.time()`, so
interpreter start-up is included). Also reported: whether torch, diffusers or numpy were imported
by then (the TUI must never import torch), and with `--importtime` the ten slowest imports
(`python -X importtime`, cumulative). Target: < 0.5 s. Prints JSON; `--out` writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time
sys.path.insert(0, {root!r})
import textual.app

def _ready(self):
    mods = sorted(m for m in ("torch", "diffusers", "numpy", "PIL", "transformers") if m in sys.modules)
    print("READY", time.time(), time.process_time(), ",".join(mods), flush=True)
    self.exit()

_run = textual.app.App.run
def _headless_run(self, *a, **kw):
    kw["headless"] = True
    return _run(self, *a, **kw)
textual.app.App.run = _headless_run
textual.app.App.on_ready = _ready  # TunelabApp defines no on_ready of its own (checked below)
from tui.cli import main
sys.exit(main([{projects!r}, "--images", "none"]))
"""


def one_start(projects: Path) -> dict:
    code = CHILD.format(root=str(ROOT), projects=str(projects))
    env = dict(os.environ, TUNELAB_SETTINGS=os.devnull, TERM="xterm-256color")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=str(ROOT))
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("READY")), None)
    if line is None:
        raise RuntimeError(f"no first paint: rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    _, t_ready, cpu, mods = (line.split(" ") + [""])[:4]
    return {"first_paint_s": float(t_ready) - t0, "cpu_s": float(cpu), "heavy_modules": [m for m in mods.split(",") if m]}


def import_offenders(top: int = 10) -> list[dict]:
    """The slowest imports of `tui.cli` + `tui.commands.open_tui` + `tui.app` (cumulative µs)."""
    code = "import tui.cli, tui.commands.open_tui, tui.app, tui.screens.home"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=120)
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m:
            rows.append({"module": m.group(4), "self_ms": int(m.group(1)) / 1000, "cumulative_ms": int(m.group(2)) / 1000,
                         "depth": len(m.group(3)) // 2})
    top_level = [r for r in rows if r["depth"] == 0]
    return sorted(top_level, key=lambda r: -r["cumulative_ms"])[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("projects_dir", nargs="?", type=Path, default=None,
                    help="folder of projects (default: a temporary one holding a copy-free link to projects/demo)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--importtime", action="store_true", help="also list the slowest imports")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tui.app import TunelabApp

    assert "on_ready" not in TunelabApp.__dict__, "TunelabApp has its own on_ready: update the harness"
    projects = args.projects_dir
    if projects is None:
        projects = Path(tempfile.mkdtemp(prefix="tunelab-startup-"))
        demo = ROOT / "projects" / "demo"
        if demo.is_dir():
            (projects / "demo").symlink_to(demo)
    one_start(projects)  # warm the OS page cache and .pyc files
    runs = [one_start(projects) for _ in range(args.repeat)]
    paint = sorted(r["first_paint_s"] for r in runs)
    result = {
        "projects_dir": str(projects), "repeat": args.repeat, "python": sys.version.split()[0],
        "load_1min": round(os.getloadavg()[0], 2),
        "first_paint_s_median": round(statistics.median(paint), 3), "first_paint_s_best": round(paint[0], 3),
        "first_paint_s_worst": round(paint[-1], 3),
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "heavy_modules_loaded": sorted({m for r in runs for m in r["heavy_modules"]}),
        "target_s": 0.5,
    }
    if args.importtime:
        result["slowest_imports"] = import_offenders()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
