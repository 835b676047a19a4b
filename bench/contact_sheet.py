"""Benchmark the contact sheet: an 8×8 page in the Compare tab, and the PNG export.

    python bench/contact_sheet.py [--image-px 512] [--mode halfblock]

Makes a run with 8 prompts × 8 sample columns of IMAGE_PX-square PNGs (SD-sized by default) in a temp
dir, then reports: the time from mounting the Compare pane until all 64 cells show their thumbnails
(cold: every thumbnail decoded and resized in the worker), a page flip to other columns and back (warm:
thumbnails from the LRU), one cursor move, and `render_sheet` + PNG encode of the whole sheet
(what `e` and `tunelab grid` do).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402
from textual.app import App, ComposeResult  # noqa: E402

from engine.contact_sheet import load_sheet, render_sheet  # noqa: E402
from engine.rundir import RunDir, checkpoint_name, sample_name  # noqa: E402
from tui.widgets.compare_pane import ComparePane  # noqa: E402
from tui.widgets.contact_grid import ContactGrid  # noqa: E402

KINDS = ["accuracy", "accuracy", "accuracy", "flexibility", "flexibility", "flexibility", "preservation",
         "preservation"]


def make_run(root: Path, px: int, cols: int = 10) -> RunDir:
    import json

    run = RunDir(root / "p" / "runs" / "20260101-000000-bench")
    prompts = [{"text": f"prompt number {i} for the benchmark", "kind": KINDS[i]} for i in range(8)]
    for c in range(cols):
        folder = run.samples_dir / checkpoint_name(c, c * 100)
        folder.mkdir(parents=True)
        for p in range(8):
            img = Image.radial_gradient("L").resize((px, px)).convert("RGB")
            img.paste((c * 25 % 256, p * 30 % 256, 128), (0, 0, px // 2, px // 2))
            img.save(folder / sample_name(p, 42))
        (folder / "samples.json").write_text(json.dumps({"prompts": prompts, "seeds": [42]}))
    return run


class Bench(App):
    def __init__(self, project: Path, mode: str):
        super().__init__()
        self.project, self.image_mode = project, mode
        self.t_mount = 0.0

    def compose(self) -> ComposeResult:
        yield ComparePane(self.project, poll=0)

    def on_mount(self) -> None:
        self.t_mount = time.perf_counter()


def all_shown(app: App) -> bool:
    grid = app.query_one(ContactGrid)
    cells = grid.visible_cells()
    return len(cells) == 64 and all(cells) and grid.all_loaded()


async def wait(pilot, cond, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise SystemExit("timed out: the page never finished loading")
        await asyncio.sleep(0.005)
    await pilot.pause()


async def run(project: Path, mode: str) -> dict[str, float]:
    app = Bench(project, mode)
    out = {}
    async with app.run_test(size=(170, 80)) as pilot:
        await wait(pilot, lambda: all_shown(app), 60)
        out["page_8x8_cold_s"] = time.perf_counter() - app.t_mount
        grid = app.query_one(ContactGrid)
        grid.focus()
        t = time.perf_counter()
        await pilot.press("end")  # columns 2..9: two new columns' thumbnails are made
        await wait(pilot, lambda: grid.page.col0 == 2 and all_shown(app))
        await pilot.press("home")
        await wait(pilot, lambda: grid.page.col0 == 0 and all_shown(app))
        out["page_flip_and_back_s"] = time.perf_counter() - t
        t = time.perf_counter()
        await pilot.press("down")
        out["cursor_move_s (incl. pilot)"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-px", type=int, default=512)
    ap.add_argument("--mode", default="halfblock", choices=("halfblock", "none", "kitty"),
                    help="kitty: the textual-image widget path (headless, so only its Textual cost)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = make_run(Path(tmp), args.image_px)
        (Path(tmp) / "p" / "project.toml").write_text('name = "p"\n')
        results = asyncio.run(run(Path(tmp) / "p", args.mode))
        t = time.perf_counter()
        sheet = load_sheet(run_dir)
        img = render_sheet(sheet)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        results["export_png_8x10_s"] = time.perf_counter() - t
        results["export_png_px"] = f"{img.width}x{img.height}"
    for k, v in results.items():
        print(f"{k:30} {v:.3f}" if isinstance(v, float) else f"{k:30} {v}")


if __name__ == "__main__":
    main()
