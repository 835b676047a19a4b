"""How an image file's pixels become 8-bit RGB: one rule for training, the preview and auto-captioning,
so what the Dataset tab shows is what the model sees.

- 16-bit greyscale keeps its high byte (PIL's convert("RGB") clips it at 255: a mid grey turns white).
- Transparency is laid over white. A plain convert("RGB") drops the alpha channel and trains on
  whatever colour the file keeps under it: often black, sometimes green or noise, never what a viewer
  shows. White is what a cut-out on a page looks like, and what sprite and sticker data sets use.
PIL only: light enough for the TUI.
"""
from __future__ import annotations

from PIL import Image

TRANSPARENT_FILL = (255, 255, 255)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def eight_bit(im: Image.Image) -> Image.Image:
    """16-bit greyscale as 8-bit "L" (its high byte); any other image as it is."""
    if im.mode in SIXTEEN_BIT:
        import numpy as np

        return Image.fromarray((np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8), "L")
    return im


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB as training reads it: 16-bit greyscale by its high byte, transparency over white."""
    im = eight_bit(im)
    if has_alpha(im):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (*TRANSPARENT_FILL, 255))
        bg.alpha_composite(im)
        return bg.convert("RGB")
    return im.convert("RGB")
