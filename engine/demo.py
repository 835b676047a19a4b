"""The demo project's dataset: coloured shapes whose colour words the tiny base model never learned.

`python -m engine.demo --ensure [PROJECT_DIR]` writes `PROJECT_DIR/images/*.png` (default: this
checkout's `projects/demo`) and that folder's `metadata.csv` (`file_name,color,shape,background`),
from which the project's concept builds templated captions (`a {color} {shape}`).

Why this data: the tiny base model (`engine/train/tiny.py`) was pretrained on shapes whose captions
name the shape and never the colour, so it draws "a red circle" as a circle in an arbitrary colour.
A fine-tune on these images has one visible thing to add: binding the six colour words to colours.
Some colour x shape pairs are left out of the data on purpose (`HELD_OUT`); the project's flexibility
goals ask for them, so the contact sheet shows whether the colour was learned as a word or only as
part of the trained pairs. `scripts/demo_learning.py` measures it from a run's samples.

Generation is deterministic (Python's `random.Random(seed).random()`, whose stream is stable across
Python versions) and idempotent: a stamp file records a hash of everything that decides the pixels,
and a second `--ensure` only checks the stamp and that the files exist. Light: PIL only, no torch.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from engine.atomic import current_umask

# Bump when the drawing code changes in a way the spec hash cannot see.
DEMO_VERSION = "1"
SEED = 1234
SIZE = 64  # the tiny model's image size
SUPERSAMPLE = 4  # draw at 4x and shrink, for anti-aliased edges like a real photo's
IMAGES_PER_PAIR = 4

# Six colours that stay far apart in Lab (the closest pair, blue/magenta, is ~55 apart) and far from
# the light backgrounds. The RGB values are the tiny model's own palette, so its VAE reproduces them.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.90, 0.10),
    "magenta": (0.90, 0.10, 0.85),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES = ("circle", "square", "triangle", "star")

# One pair per colour is never trained: colour i with shape (i + 1) mod 4. Every colour is still
# trained on three shapes and every shape on at least four colours.
HELD_OUT: tuple[tuple[str, str], ...] = tuple(
    (colour, SHAPES[(i + 1) % len(SHAPES)]) for i, colour in enumerate(COLOURS)
)

# Plain light backgrounds (named for metadata only; captions never mention them).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "offwhite": (244, 243, 240),
    "lightgrey": (220, 220, 220),
    "cream": (243, 236, 214),
    "paleblue": (222, 230, 240),
}

IMAGES_DIR = "images"
STAMP_NAME = ".demo-stamp.json"
METADATA_COLUMNS = ("file_name", "color", "shape", "background")
DEFAULT_PROJECT = Path(__file__).resolve().parent.parent / "projects" / "demo"


@dataclass(frozen=True)
class DemoImage:
    """Everything that decides one image's pixels."""

    file_name: str
    colour: str
    shape: str
    background: str
    cx: float  # centre, in pixels of the 64 px image
    cy: float
    radius: float  # the shape's outer radius, in pixels

    def metadata_row(self) -> dict[str, str]:
        return {"file_name": self.file_name, "color": self.colour, "shape": self.shape,
                "background": self.background}


def trained_pairs() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]


def demo_spec(seed: int = SEED, per_pair: int = IMAGES_PER_PAIR) -> list[DemoImage]:
    """The demo images, in file order. Sizes and positions vary like the tiny model's pretraining data."""
    rng = random.Random(seed)
    backgrounds = list(BACKGROUNDS)
    out = []
    for colour, shape in trained_pairs():
        for k in range(per_pair):
            bg = backgrounds[int(rng.random() * len(backgrounds))]
            cx = SIZE * (0.5 + (rng.random() - 0.5) * 0.3)
            cy = SIZE * (0.5 + (rng.random() - 0.5) * 0.3)
            radius = SIZE * (0.18 + 0.14 * rng.random())
            out.append(DemoImage(f"{colour}_{shape}_{k + 1}.png", colour, shape, bg,
                                 round(cx, 3), round(cy, 3), round(radius, 3)))
    return out


def rgb8(colour: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * v)) for v in colour)  # type: ignore[return-value]


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices for the angular shapes (None for a circle). Same geometry as the tiny model's
    pretraining pictures: a square of half-side 0.85 r, an upward triangle inscribed in radius r, a
    five-pointed star with inner radius 0.45 r."""
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.radians(d) for d in (90, 210, 330))]
    if shape == "star":
        pts = []
        for i in range(10):
            a = math.radians(90 + 36 * i)
            rr = r if i % 2 == 0 else 0.45 * r
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        return pts
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(item: DemoImage) -> Image.Image:
    """One 64x64 RGB image: the shape in its colour on its plain background."""
    s = SUPERSAMPLE
    big = Image.new("RGB", (SIZE * s, SIZE * s), BACKGROUNDS[item.background])
    draw = ImageDraw.Draw(big)
    fill = rgb8(COLOURS[item.colour])
    cx, cy, r = item.cx * s, item.cy * s, item.radius * s
    poly = shape_polygon(item.shape, cx, cy, r)
    if poly is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(poly, fill=fill)
    return big.resize((SIZE, SIZE), Image.Resampling.BOX)


def metadata_csv(spec: list[DemoImage]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in spec:
        writer.writerow(item.metadata_row())
    return buf.getvalue()


def spec_hash(spec: list[DemoImage]) -> str:
    payload = json.dumps({
        "version": DEMO_VERSION, "size": SIZE, "supersample": SUPERSAMPLE,
        "colours": COLOURS, "backgrounds": BACKGROUNDS,
        "images": [vars(i) for i in spec],
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the images were unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def is_current(project_dir: str | os.PathLike, spec: list[DemoImage] | None = None) -> bool:
    """True when the stamp matches the current spec and every image and the metadata exist."""
    images = Path(project_dir) / IMAGES_DIR
    spec = spec if spec is not None else demo_spec()
    try:
        stamp = json.loads((images / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(stamp, dict) or stamp.get("hash") != spec_hash(spec):
        return False
    try:
        if (images / "metadata.csv").read_text(encoding="utf-8") != metadata_csv(spec):
            return False
    except OSError:
        return False
    return all((images / item.file_name).is_file() for item in spec)


def ensure_demo(project_dir: str | os.PathLike = DEFAULT_PROJECT, *, force: bool = False) -> tuple[Path, bool]:
    """Write the demo images and metadata into `project_dir/images` unless they are already current.

    Returns (images folder, whether anything was written). The folder is generated: PNGs not in the
    spec (from an older demo version) are removed; other files are left alone. The stamp is written last, so an
    interrupted run is redone by the next call.
    """
    images = Path(project_dir) / IMAGES_DIR
    spec = demo_spec()
    if not force and is_current(project_dir, spec):
        return images, False
    images.mkdir(parents=True, exist_ok=True)
    (images / STAMP_NAME).unlink(missing_ok=True)
    wanted = {item.file_name for item in spec}
    for old in images.glob("*.png"):
        if old.name not in wanted:
            old.unlink()
    for item in spec:
        _write_atomic(images / item.file_name, _png_bytes(render(item)))
    meta = metadata_csv(spec)
    meta_path = images / "metadata.csv"
    if not meta_path.is_file() or meta_path.read_text(encoding="utf-8") != meta:
        _write_atomic(meta_path, meta.encode("utf-8"))
    stamp = {"version": DEMO_VERSION, "hash": spec_hash(spec), "images": len(spec),
             "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_atomic(images / STAMP_NAME, (json.dumps(stamp, indent=1) + "\n").encode("utf-8"))
    return images, True


def ensure_tiny_model() -> str:
    """Build (or find) the tiny base model, in a subprocess so this module never imports torch."""
    code = "from engine.train.tiny import ensure_tiny; print(ensure_tiny())"
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.demo",
        description="Generate the demo project's images and metadata.csv (idempotent).",
    )
    parser.add_argument("project_dir", nargs="?", type=Path, default=DEFAULT_PROJECT,
                        help=f"the demo project folder (default: {DEFAULT_PROJECT})")
    parser.add_argument("--ensure", action="store_true",
                        help="write the images if missing or stale (the default action)")
    parser.add_argument("--force", action="store_true", help="rewrite the images even if current")
    parser.add_argument("--tiny", action="store_true", help="also build the tiny base model into its cache")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    images, wrote = ensure_demo(args.project_dir, force=args.force)
    n = len(demo_spec())
    state = f"wrote {n} images" if wrote else f"{n} images up to date"
    print(f"{images}: {state} ({time.monotonic() - t0:.2f}s)")
    if args.tiny:
        print(f"tiny model: {ensure_tiny_model()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
