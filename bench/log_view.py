"""Benchmark the live log view on a big log: first paint time and memory.

    python bench/log_view.py [--size-mb 1024] [--path /tmp/tunelab-bench.log] [--full]

Writes a log of about SIZE MB (~100-byte lines; kept and reused if it already has that size), opens it in
a headless app with a `LogView`, and reports: the time from mounting the view until its last line is
painted (the toolong-style backward tail scan), the same from app start, resident memory (RSS) after the
first paint and after the background indexing budget is spent, and with --full the time and memory to
index the whole file (what `home` does).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App, ComposeResult  # noqa: E402

from tui.widgets.log_view import LogView  # noqa: E402

LAST = b"the very last line of the log\n"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_log(path: Path, size_mb: int) -> None:
    want = size_mb * 1024 * 1024
    if path.exists() and path.stat().st_size == want + len(LAST):
        return
    line = b"step %08d: loss 0.123456 lr 1.0e-04 img/s 12.3 | some accelerate chatter to fill the line....\n"
    block = b"".join(line % i for i in range(10000))
    with open(path, "wb") as f:
        written = 0
        while written + len(block) <= want:
            f.write(block)
            written += len(block)
        f.write(block[: want - written])
        f.write(LAST)


class Bench(App):
    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.t_mount = 0.0

    def compose(self) -> ComposeResult:
        yield LogView(self.path, id="log")

    def on_mount(self) -> None:
        self.t_mount = time.perf_counter()


async def run(path: Path, full: bool) -> dict[str, float]:
    t0 = time.perf_counter()
    app = Bench(path)
    out: dict[str, float] = {}
    async with app.run_test(size=(140, 45)) as pilot:
        view = app.query_one(LogView)
        while True:
            lines = [view.render_line(y).text for y in range(view.scrollable_content_region.height)]
            if any("the very last line" in ln for ln in lines):
                break
            await asyncio.sleep(0.002)
        now = time.perf_counter()
        out["first_paint_from_mount_s"] = now - app.t_mount
        out["first_paint_from_start_s"] = now - t0
        out["rss_after_paint_mb"] = rss_mb()
        out["indexed_after_paint_mb"] = (view.index.end - view.index.low) / 2**20
        await pilot.pause(3.0)
        out["rss_after_budget_mb"] = rss_mb()
        out["indexed_after_budget_mb"] = (view.index.end - view.index.low) / 2**20
        out["offsets_after_budget_mb"] = view.index.nbytes / 2**20
        if full:
            t1 = time.perf_counter()
            await pilot.press("home")
            while not view.index.complete:
                await asyncio.sleep(0.01)
            out["full_index_s"] = time.perf_counter() - t1
            out["full_index_lines"] = view.index.line_count
            out["rss_after_full_index_mb"] = rss_mb()
            out["offsets_full_mb"] = view.index.nbytes / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--path", type=Path, default=Path("/tmp/tunelab-bench.log"))
    ap.add_argument("--full", action="store_true", help="also index the whole file (as `home` does)")
    args = ap.parse_args()
    t = time.perf_counter()
    make_log(args.path, args.size_mb)
    print(f"log: {args.path} {os.path.getsize(args.path) / 2**30:.2f} GiB (made/checked in {time.perf_counter() - t:.1f} s)")
    print(f"rss before app: {rss_mb():.0f} MB")
    results = asyncio.run(run(args.path, args.full))
    for k, v in results.items():
        print(f"{k:28} {v:,.3f}" if isinstance(v, float) else f"{k:28} {v:,}")


if __name__ == "__main__":
    main()
