"""Time the Dataset tab on a 10,000-image project: first paint, and keystroke-to-redraw while scrolling.

    python bench/tui_dataset.py [--images 10000] [--keys 100] [--keep DIR]

Generates the project with `bench/check_10k.py`'s generator (PNG/JPEG files in nested folders with
sidecar captions), then drives the real app headless (`App.run_test`, 160x50, half-block images):

- paint: from pushing the project screen until the list is first drawn (it says "scanning…"),
- rows: from pushing the project screen until the list is drawn with its rows (the scan runs in a
  worker thread in between), cold (no header cache) and warm,
- key: per keystroke, from the key to the next frame drawn, for `down`, `pagedown` and a filter
  keystroke, median and 95th percentile over --keys presses,
- and each of these as CPU time of the process too (`*_cpu_*`), which a busy machine hardly moves,
- the same keystroke against an empty Textual app, for Textual's and Pilot's own share.

A "frame drawn" is measured as the time until the app is idle again after the key (Pilot's
`press` waits for that), so it includes the message round trip, the refresh and the compositor.
Prints one JSON object; docs/performance.md quotes it.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _generator():
    spec = importlib.util.spec_from_file_location("check_10k", ROOT / "bench" / "check_10k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.make_project


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(projects: Path, keys: int, images: str = "halfblock") -> dict:
    from tui.app import make_app
    from tui.screens.project import ProjectScreen

    app = make_app(projects, images=images, watch=False, animations=False)
    out: dict = {}
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        from tui.widgets.dataset_table import DatasetTable

        drawn: dict[str, tuple[float, float]] = {}
        original = DatasetTable.render_line

        def render_line(table, y):  # note when the list is first drawn, then first drawn with rows
            stamp = (time.perf_counter(), time.process_time())
            drawn.setdefault("paint", stamp)
            if table.items:
                drawn.setdefault("rows", stamp)
            return original(table, y)

        DatasetTable.render_line = render_line  # type: ignore[method-assign]
        t0, c0 = time.perf_counter(), time.process_time()
        app.push_screen(ProjectScreen(projects / "bench"))
        while "rows" not in drawn:
            await pilot.pause(0.005)
        DatasetTable.render_line = original  # type: ignore[method-assign]
        pane = app.screen.query_one("DatasetPane")
        for name in ("paint", "rows"):
            out[f"{name}_s"] = round(drawn[name][0] - t0, 3)
            out[f"{name}_cpu_s"] = round(drawn[name][1] - c0, 3)
        out["items"] = len(pane.items)
        table = pane.table
        table.focus()
        await pilot.pause()
        for key in ("down", "pagedown"):
            times, cpu = [], []
            for _ in range(keys):
                t, c = time.perf_counter(), time.process_time()
                await pilot.press(key)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            out[f"{key}_median_ms"] = round(1000 * statistics.median(times), 1)
            out[f"{key}_cpu_median_ms"] = round(1000 * statistics.median(cpu), 1)
            out[f"{key}_p95_ms"] = round(1000 * pct(times, 0.95), 1)
        await pilot.press("slash")
        times, cpu = [], []
        for ch in "part0" * (keys // 5 or 1):  # type "part0", clear, again
            t, c = time.perf_counter(), time.process_time()
            await pilot.press(ch)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if len(times) % 5 == 0:
                pane.query_one("#dataset-filter").value = ""
                await pilot.pause()
        out["filter_key_median_ms"] = round(1000 * statistics.median(times), 1)
        out["filter_key_cpu_median_ms"] = round(1000 * statistics.median(cpu), 1)
        out["filter_key_p95_ms"] = round(1000 * pct(times, 0.95), 1)
    return out


async def baseline(keys: int) -> dict:
    from textual.app import App
    from textual.widgets import Static

    class Empty(App):
        def compose(self):
            yield Static("x")

    app = Empty()
    times, cpu = [], []
    async with app.run_test(size=(160, 50)) as pilot:
        for _ in range(keys):
            t, c = time.perf_counter(), time.process_time()
            await pilot.press("down")
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return {"key_median_ms": round(1000 * statistics.median(times), 1),
            "key_cpu_median_ms": round(1000 * statistics.median(cpu), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--keep", help="generate the project here and keep it")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tunelab-bench-"))
    projects = tmp / "projects"
    try:
        if not (projects / "bench").exists():
            t = time.perf_counter()
            _generator()(projects / "bench", args.images)
            gen = time.perf_counter() - t
        else:
            gen = 0.0
        shutil.rmtree(projects / "bench" / ".cache", ignore_errors=True)
        cold = asyncio.run(measure(projects, args.keys))
        warm = asyncio.run(measure(projects, args.keys))
        no_images = asyncio.run(measure(projects, args.keys, images="none"))
        result = {
            "images": args.images,
            "generate_s": round(gen, 1),
            "load_1min": round(os.getloadavg()[0], 1),
            "cold_halfblock": cold,
            "warm_halfblock": warm,
            "warm_no_images": no_images,
            "textual_empty_app": asyncio.run(baseline(args.keys)),
        }
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
