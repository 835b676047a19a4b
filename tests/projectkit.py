"""Building blocks for project tests: small real images, captions, and a tree fingerprint."""
from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

from PIL import Image


def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "PNG", color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **save)
    return buf.getvalue()


def write_image(path: Path, size: tuple[int, int] = (64, 48), fmt: str | None = None, caption: str | None = None,
                **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                  ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    path.write_bytes(image_bytes(size, fmt, **save))
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width × height, with an empty IDAT and IEND: costs bytes, not memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def tree_digest(root: Path, exclude: tuple[str, ...] = (".cache",)) -> dict[str, str]:
    """rel path → sha256 (or the link target / 'dir') for everything under root, except excluded top folders."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in exclude:
            dirnames[:] = []
            continue
        for d in dirnames:
            if not (rel_dir / d).parts[0] in exclude:
                out[(rel_dir / d).as_posix() + "/"] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            key = (rel_dir / f).as_posix()
            if p.is_symlink():
                out[key] = "link:" + os.readlink(p)
            else:
                st = p.stat()
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mtime_ns}:{oct(st.st_mode)}"
    return out
