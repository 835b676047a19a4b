"""Preview thumbnails: made at display size in a worker thread, cached under the project's `.cache/thumbs/`.

A thumbnail is keyed by the image's resolved path, modification time and byte size, and by the pixel
box it was made for, so an edited image gets a new thumbnail and a resized pane reuses the nearest
bucket. The cache is safe to delete (it is under `.cache/`). A file that does not decode gives a
`Thumbnail` with the reason instead of raising, and the preview shows that reason.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from engine import atomic
from engine.pixels import eight_bit, to_rgb

THUMBS_DIR = Path(".cache") / "thumbs"
BUCKET = 64        # boxes are rounded up to multiples of this, so small resizes reuse the cache
MAX_SIDE = 1024    # never bigger than this, whatever the terminal claims


@dataclass(frozen=True)
class Thumbnail:
    source: Path
    image: Image.Image | None   # loaded RGB thumbnail, or None when the file could not be decoded
    error: str = ""
    cached: bool = False        # served from the disk cache


def bucket_box(width_px: int, height_px: int) -> tuple[int, int]:
    def up(v: int) -> int:
        v = max(BUCKET, min(MAX_SIDE, v))
        return min(MAX_SIDE, -(-v // BUCKET) * BUCKET)
    return up(width_px), up(height_px)


def cache_key(source: Path, box: tuple[int, int]) -> str:
    st = source.stat()
    ident = f"{source.resolve()}\0{st.st_mtime_ns}\0{st.st_size}\0{box[0]}x{box[1]}"
    return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()


def cache_path(project_dir: Path, key: str) -> Path:
    return project_dir / THUMBS_DIR / key[:2] / f"{key}.png"


def make_thumbnail(source: str | os.PathLike, project_dir: str | os.PathLike, box: tuple[int, int],
                   use_cache: bool = True) -> Thumbnail:
    """A thumbnail of `source` that fits `box` pixels (bucketed), from the cache when possible."""
    source = Path(source)
    project_dir = Path(project_dir)
    box = bucket_box(*box)
    try:
        key = cache_key(source, box)
    except OSError as e:
        return Thumbnail(source, None, f"cannot read: {e.strerror or e}")
    cached = cache_path(project_dir, key)
    if use_cache and cached.is_file():
        try:
            with Image.open(cached) as im:
                im.load()
                return Thumbnail(source, im.convert("RGB"), cached=True)
        except (OSError, ValueError):
            pass  # a damaged cache entry: make it again
    try:
        with Image.open(source) as im:
            im.draft("RGB", box)  # JPEG: decode at reduced size, much faster for big photos
            im = eight_bit(ImageOps.exif_transpose(im))
            im.thumbnail(box, Image.Resampling.BILINEAR, reducing_gap=2.0)
            thumb = to_rgb(im)  # as training reads it: transparency over white
    except Image.DecompressionBombError as e:
        return Thumbnail(source, None, f"too large to decode safely: {e}")
    except UnidentifiedImageError:
        return Thumbnail(source, None, "not an image PIL can read")
    except (OSError, ValueError, SyntaxError) as e:
        # truncated files, bad headers, unsupported modes
        return Thumbnail(source, None, f"cannot decode: {e}")
    if use_cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            thumb.save(buf, "PNG")
            atomic.write_bytes(cached, buf.getvalue())
        except OSError:
            pass  # a read-only project still previews, just without a cache
    return Thumbnail(source, thumb)
