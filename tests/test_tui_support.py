"""Shared helpers for the TUI tests: a small deterministic project folder and a way to wait on the app.

Images are drawn in code (flat colours and gradients), so thumbnails and snapshots are the same on
every machine. No test functions live here.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Callable

from PIL import Image

from engine.config import default_config, dump_config

# Fixed mtimes keep "last activity" (and snapshots) stable.
FIXED_TIME = 1_790_000_000  # 2026-09-21


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int], stripe: tuple[int, int, int]) -> None:
    im = Image.new("RGB", size, colour)
    w, h = size
    for x in range(w // 3, w // 3 + max(1, w // 6)):
        for y in range(h):
            im.putpixel((x, y), stripe)
    im.save(path)


def make_project(root: Path, name: str = "pets", n_extra: int = 0) -> Path:
    """A project with 6 images (one broken, one uncaptioned, one tiny), captions, metadata and two configs."""
    p = root / name
    images = p / "images"
    images.mkdir(parents=True)
    (p / "configs").mkdir()
    (p / "project.toml").write_text(
        f'name = "{name}"\nnotes = "a small test project"\n\n[goals]\naccuracy = ["a photo of sks dog"]\n'
        'flexibility = ["sks dog as an astronaut"]\npreservation = ["a red car"]\n')
    specs = [
        ("cat_01", (64, 64), (200, 60, 60), (250, 220, 40), "a photo of a ginger cat, sitting"),
        ("cat_02", (64, 48), (60, 60, 200), (240, 240, 240), "a photo of a black cat, sleeping"),
        ("dog_01", (48, 64), (60, 160, 60), (30, 30, 30), "a photo of sks dog on a sofa"),
        ("dog_02", (64, 64), (120, 80, 40), (250, 250, 250), None),
        ("tiny", (16, 16), (90, 90, 90), (255, 0, 255), "a tiny picture"),
    ]
    for stem, size, colour, stripe, caption in specs:
        _image(images / f"{stem}.png", size, colour, stripe)
        if caption is not None:
            (images / f"{stem}.txt").write_text(caption)
    (images / "broken.png").write_bytes(b"this is not a png file at all")
    (images / "broken.txt").write_text("a broken image")
    for i in range(n_extra):
        _image(images / f"extra_{i:03d}.png", (32, 32), (10 * (i % 25), 100, 150), (0, 0, 0))
        (images / f"extra_{i:03d}.txt").write_text(f"extra picture number {i}")
    (p / "metadata.csv").write_text(
        "file_name,name,kind\n" + "".join(f"images/{s[0]}.png,{s[0].split('_')[0]} {s[0][-1]},{s[0].split('_')[0]}\n"
                                          for s in specs) + "images/broken.png,broken,none\n")
    (p / "configs" / "lora.toml").write_text('method = "lora"\ndescription = "first try"\n\n[train]\nepochs = 5\n'
                                             '\n[model]\nbase = "tiny"\n')
    (p / "configs" / "bad.toml").write_text('method = "lora"\n\n[train]\nlearning_rate = -1\nepochs = 3\nepoch = 4\n'
                                            '\n[model]\nbase = "tiny"\n')
    set_times(p)
    return p


def set_times(path: Path, stamp: float = FIXED_TIME) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames:
            os.utime(os.path.join(dirpath, n), (stamp, stamp))
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        os.utime(dirpath, (stamp, stamp))


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until `condition()` holds (workers finish, messages land)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)
    await pilot.pause()


def config_text(method: str = "lora") -> str:
    return dump_config(default_config(method))


def sync(test):
    """Run an async test function in its own event loop (the project has no pytest async plugin)."""
    import functools

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper
