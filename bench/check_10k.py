"""Time `tunelab check` on a generated 10,000-image project, cold (no header cache) and warm.

    python bench/check_10k.py [--images 10000] [--repeat 3] [--keep DIR]

Wall times are the best of --repeat runs (a busy machine only adds to them); CPU times (user + system
of the check process) are medians and hardly move with load. Generates the project in a temporary folder (PNG and JPEG files of several sizes, each with a sidecar
caption, in 10 folders of subfolders), then runs `tunelab check PROJECT` as a user would: a fresh
process each time, so the times include interpreter start-up and imports. Prints one JSON object.
The numbers in docs/performance.md come from this script.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_project(root: Path, n: int) -> None:
    from PIL import Image

    blobs = []
    for i, (w, h) in enumerate([(512, 512), (640, 480), (768, 1024), (300, 200)]):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (i * 40, 100, 200 - i * 40)).save(buf, "PNG" if i % 2 == 0 else "JPEG")
        blobs.append((".png" if i % 2 == 0 else ".jpg", buf.getvalue()))
    root.mkdir(parents=True, exist_ok=True)
    (root / "project.toml").write_text('name = "bench"\n\n[[concepts]]\nfolder = "images"\nrepeats = 2\n')
    for i in range(n):
        ext, data = blobs[i % len(blobs)]
        d = root / "images" / f"part{i % 10:02d}" / f"sub{(i // 10) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:05d}{ext}").write_bytes(data)
        if i % 50:  # every 50th image has no caption, as in real data
            (d / f"img{i:05d}.txt").write_text(f"a photo of thing number {i}, red and blue, studio light")


def time_check(project: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `tunelab check`. CPU time is what to compare on a busy machine."""
    cmd = [sys.executable, "-m", "tui.cli", "check", str(project)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"tunelab check failed ({r.returncode}): {r.stderr[-2000:]}")
    return dt, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="generate here and keep it")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    tmp = Path(tempfile.mkdtemp(prefix="tunelab-bench-")) if args.keep is None else args.keep
    project = tmp / "bench"
    try:
        t = time.perf_counter()
        make_project(project, args.images)
        gen = time.perf_counter() - t
        cache = project / ".cache" / "scan.json"
        cold, warm = [], []
        for _ in range(args.repeat):
            cache.unlink(missing_ok=True)
            cold.append(time_check(project, env))
            warm.append(time_check(project, env))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tui.cli"], env=env, check=True)
        startup = time.perf_counter() - t
        print(json.dumps({
            "images": args.images,
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "generate_s": round(gen, 2),
            "check_cold_s": round(min(w for w, _ in cold), 3),
            "check_warm_s": round(min(w for w, _ in warm), 3),
            "check_cold_cpu_s": round(statistics.median(c for _, c in cold), 3),
            "check_warm_cpu_s": round(statistics.median(c for _, c in warm), 3),
            "cold_runs_wall_s": [round(w, 3) for w, _ in cold],
            "warm_runs_wall_s": [round(w, 3) for w, _ in warm],
            "python_startup_and_cli_import_s": round(startup, 3),
            "cache_bytes": cache.stat().st_size if cache.exists() else 0,
        }, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
