"""Bad inputs and a full disk in real (tiny) training runs, in-process: odd images are trained correctly or
skipped with their reason listed; odd captions are read sensibly and flagged where lossy; a disk that
fills during a save leaves the earlier checkpoints intact and says which path failed."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from engine.project import scan_project
from tests.projectkit import png_header_only
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)

RED, BLUE = (220, 20, 20), (20, 20, 220)


def two_tone(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue (so a rotation shows)."""
    w, h = size
    im = Image.new("RGB", size, RED)
    im.paste(Image.new("RGB", (w - w // 2, h), BLUE), (w // 2, 0))
    return im.convert(mode) if mode != "RGB" else im


def save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored landscape 48x32 (red left, blue right) with orientation 6: shown rotated 90° clockwise, i.e.
    portrait 32x48 with red on top and blue below."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(two_tone((48, 32)), "JPEG", quality=95, exif=exif.tobytes())


def sixteen_bit_grey_png(level: int = 20000) -> bytes:
    import numpy as np

    return save(Image.fromarray(np.full((40, 40), level, dtype=np.uint16)), "PNG")


def palette_with_transparency_png() -> bytes:
    im = two_tone((40, 40)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return save(im, "PNG", transparency=0)


def corrupt_pixels_png() -> bytes:
    """A PNG whose header and IEND are fine but whose compressed pixel data is garbage."""
    data = bytearray(save(two_tone((40, 40)), "PNG"))
    start = data.find(b"IDAT") + 6
    for i in range(start, start + 16):
        data[i] ^= 0x55
    return bytes(data)


GOOD = {  # file -> (bytes, caption bytes)
    "cmyk.jpg": (lambda: save(two_tone((40, 40), "CMYK"), "JPEG"), b"\xef\xbb\xbfa caption with a BOM\n"),
    "grey16.png": (sixteen_bit_grey_png, b"first line\r\nsecond line\r\n"),
    "palette.png": (palette_with_transparency_png, b""),
    "rgba.png": (lambda: save(two_tone((40, 40), "RGBA"), "PNG"), b"caf\xe9 latin-1, not UTF-8"),
    "grey.png": (lambda: save(two_tone((40, 40), "L"), "PNG"), b"a grey square\r"),
    "rotated.jpg": (exif_rotated_jpeg, b"a rotated photo"),
}
BAD = {  # file -> (bytes, words the listed reason must contain)
    "truncated.jpg": (lambda: save(two_tone((64, 64)), "JPEG")[:300], "truncated"),
    "empty.png": (lambda: b"", "empty"),
    "bomb.png": (lambda: png_header_only(20000, 20000), "decompression bomb"),
    "notes.png": (lambda: b"this is a text file, not a picture\n", "not an image"),
}


def odd_project(root: Path) -> Path:
    proj = make_project(root, n=2, goals=False)  # two ordinary images as well
    images = proj / "images"
    for name, (make, caption) in GOOD.items():
        (images / name).write_bytes(make())
        (images / name).with_suffix(".txt").write_bytes(caption)
    for name, (make, _) in BAD.items():
        (images / name).write_bytes(make())
        (images / name).with_suffix(".txt").write_text("a bad file\n")
    return proj


def test_odd_images_and_captions_train_or_are_skipped_with_the_reason(tmp_path, monkeypatch):
    from engine.train import data as datamod
    from engine.train.loop import train

    proj = odd_project(tmp_path)
    ds = scan_project(proj, 32, use_cache=False)
    flags = {i.rel.split("/")[-1]: i.flags for i in ds.items}
    # What `tunelab check` lists: each bad file with its reason; the odd-but-good ones as usable.
    for name, (_, reason) in BAD.items():
        assert any(f.startswith("unreadable") and reason in f for f in flags[name]), (name, flags[name])
    for name in GOOD:
        assert all(not f.startswith("unreadable") for f in flags[name]), (name, flags[name])
    assert any(f.startswith("caption not UTF-8 (read as Windows-1252") for f in flags["rgba.png"])  # flagged
    assert "empty caption" in flags["palette.png"]
    captions = {i.rel.split("/")[-1]: i.caption for i in ds.items}
    assert captions["cmyk.jpg"] == "a caption with a BOM"  # BOM stripped
    assert captions["grey16.png"] == "first line second line"  # CRLF lines joined
    assert captions["grey.png"] == "a grey square"  # a lone CR
    assert captions["rgba.png"] == "café latin-1, not UTF-8"  # the text written, not "caf\ufffd"

    seen = {}
    real_load_examples = datamod.load_examples

    def recording(project_dir, cfg):
        seen["examples"] = real_load_examples(project_dir, cfg)
        return seen["examples"]

    monkeypatch.setattr(datamod, "load_examples", recording)
    cfg = tiny_config(**{"train.epochs": 1, "train.batch_size": 4})
    cfg.sample.at_start = False
    run = make_run(proj, cfg)
    assert train(run.path) == 0, events(run, "error")
    assert events(run, "finished")
    warning = next(w for w in events(run, "warning") if "unusable" in w["message"])
    listed = {item["path"].split("/")[-1]: item["reason"] for item in warning["items"]}
    assert set(listed) == set(BAD), listed
    for name, (_, reason) in BAD.items():
        assert reason in listed[name] and name in warning["message"]
    trained = {e.rel.split("/")[-1]: e.caption for e in seen["examples"].train}
    assert set(trained) == set(GOOD) | {"img00.png", "img01.png"}
    assert trained["cmyk.jpg"] == "a caption with a BOM" and trained["palette.png"] == ""
    assert trained["grey16.png"] == "first line second line"
    assert events(run, "start")[0]["cache"]["latents"] and run.latest_complete_checkpoint() is not None


def test_exif_orientation_is_applied_before_cropping(tmp_path):
    from engine.train.data import load_image

    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg())
    pixels = load_image(path, 32)  # (3, 32, 32) in [-1, 1]; shown upright: red on top, blue below
    top, bottom = pixels[:, :8].mean(dim=(1, 2)), pixels[:, -8:].mean(dim=(1, 2))
    assert top[0] > 0.5 and top[2] < -0.5, top  # red
    assert bottom[2] > 0.5 and bottom[0] < -0.5, bottom  # blue


def test_sixteen_bit_greyscale_keeps_its_brightness(tmp_path):
    """PIL's convert("RGB") clips 16-bit values at 255, which turns a mid grey white."""
    from engine.train.data import load_image

    path = tmp_path / "grey16.png"
    path.write_bytes(sixteen_bit_grey_png(20000))  # 20000 / 65535: about 31% grey
    pixels = load_image(path, 32)
    expected = 20000 / 65535 * 2 - 1
    assert abs(float(pixels.mean()) - expected) < 0.02, float(pixels.mean())


def test_an_image_with_corrupt_pixel_data_is_skipped_not_fatal(tmp_path):
    from engine.train.loop import train

    proj = make_project(tmp_path, n=2, goals=False)
    (proj / "images" / "corrupt.png").write_bytes(corrupt_pixels_png())
    (proj / "images" / "corrupt.txt").write_text("corrupt pixels\n")
    cfg = tiny_config(**{"train.epochs": 1})
    cfg.sample.at_start = False
    cfg.save.last = False
    run = make_run(proj, cfg)
    assert train(run.path) == 0
    assert any("corrupt.png" in w["message"] for w in events(run, "warning"))
    start = events(run, "start")[0]
    assert start["images"] == 2  # the corrupt image is not trained on


def test_an_uncached_run_skips_corrupt_pixel_data_up_front(tmp_path):
    from engine.train.loop import train

    proj = make_project(tmp_path, n=2, goals=False)
    (proj / "images" / "corrupt.png").write_bytes(corrupt_pixels_png())
    cfg = tiny_config(**{"train.epochs": 1, "data.cache_latents": False, "data.cache_text": False})
    cfg.sample.at_start = False
    cfg.save.last = False
    run = make_run(proj, cfg)
    assert train(run.path) == 0
    warning = next(w for w in events(run, "warning") if "corrupt.png" in w["message"])
    assert any(i["path"].endswith("corrupt.png") and "decode" in i["reason"] for i in warning["items"])


def test_a_run_whose_only_image_is_corrupt_fails_naming_it(tmp_path):
    from engine.train.loop import train

    proj = make_project(tmp_path, n=0, goals=False)
    (proj / "images").mkdir(exist_ok=True)
    (proj / "images" / "corrupt.png").write_bytes(corrupt_pixels_png())
    cfg = tiny_config(**{"train.epochs": 1})
    cfg.sample.at_start = False
    run = make_run(proj, cfg)
    assert train(run.path) == 1
    (error,) = events(run, "error")
    assert "corrupt.png" in error["message"] and "no usable training images" in error["message"]


# --- a full disk during a save ---------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def _disk_full_run(tmp_path: Path):
    cfg = tiny_config(**{"train.epochs": 2})
    cfg.sample.at_start = False
    cfg.save.every_n_epochs = 1
    return make_run(make_project(tmp_path, n=2, goals=False), cfg)


def _assert_nothing_lost(run) -> None:
    from engine.train import checkpoint as ckpt

    err = events(run, "error")
    assert len(err) == 1 and "disk is full" in err[0]["message"], err
    assert err[0]["path"].endswith("checkpoints/e0002-s00000002")  # the error names the path
    assert not events(run, "finished")
    # The earlier checkpoint is whole and loadable; nothing half-written is left, under any name.
    assert sorted(p.name for p in run.checkpoints_dir.iterdir() if p.name != "lost+found") == ["e0001-s00000001"]
    (ck,) = run.checkpoints()
    assert ck.complete
    state = ckpt.read_state(ck.path)
    assert state.progress["step"] == 1 and state.trainable


@pytest.mark.slow
def test_a_real_full_disk_during_a_save_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    """checkpoints/ on a tmpfs that is shrunk, after the first save, to leave less room than a checkpoint."""
    from engine.train import checkpoint as ckpt
    from engine.train.loop import train

    run = _disk_full_run(tmp_path)
    if not _mount_tmpfs(run.checkpoints_dir, 64 << 20):
        pytest.skip("cannot mount a tmpfs here (not root, or not permitted); the injected variant covers this")
    try:
        real_prune = ckpt.prune

        def shrink_after_first_save(run_dir, keep_last, protected):
            st = os.statvfs(run.checkpoints_dir)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            r = subprocess.run(["mount", "-o", f"remount,size={used + 64 * 1024}", str(run.checkpoints_dir)],
                               capture_output=True, timeout=10)
            assert r.returncode == 0, r.stderr
            monkeypatch.setattr(ckpt, "prune", real_prune)
            return real_prune(run_dir, keep_last, protected)

        monkeypatch.setattr(ckpt, "prune", shrink_after_first_save)
        assert train(run.path) == 1
        _assert_nothing_lost(run)
    finally:
        _umount(run.checkpoints_dir)


def test_an_injected_enospc_in_the_tensor_writer_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    """The safetensors writer itself fails half-way through a file of the second checkpoint."""
    from safetensors import SafetensorError

    from engine.train import checkpoint as ckpt
    from engine.train.loop import train

    run = _disk_full_run(tmp_path)
    real_save_file = ckpt.save_file

    def save_file(tensors, filename, metadata=None):
        if "e0002" in filename:  # half a file, then the error safetensors raises on a full disk
            Path(filename).write_bytes(b"\0" * 100)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", save_file)
    assert train(run.path) == 1
    _assert_nothing_lost(run)


def test_transparency_trains_and_previews_over_white_not_the_colour_hidden_under_it(tmp_path):
    """A cut-out PNG keeps some colour under alpha 0 (here pure green); convert("RGB") would train on it."""
    from PIL import Image

    from engine.train.data import load_image
    from tui.thumbnails import make_thumbnail

    im = Image.new("RGBA", (64, 64), (0, 255, 0, 0))        # transparent, green underneath
    im.paste((200, 0, 0, 255), (16, 16, 48, 48))           # an opaque red square in the middle
    im.save(tmp_path / "cutout.png")
    im.convert("RGBA").convert("LA").save(tmp_path / "grey-alpha.png")
    im.convert("RGB").quantize(4).save(tmp_path / "palette.png", transparency=0)

    pixels = load_image(tmp_path / "cutout.png", 64)
    corner, centre = pixels[:, :8, :8], pixels[:, 28:36, 28:36]
    assert float(corner.min()) > 0.99                      # white ([-1, 1] scale), not green
    assert abs(float(centre[0].mean()) - (200 / 127.5 - 1)) < 0.02 and float(centre[1].max()) < -0.99
    for name in ("grey-alpha.png", "palette.png"):
        assert float(load_image(tmp_path / name, 64)[:, :8, :8].min()) > 0.99, name

    thumb = make_thumbnail(tmp_path / "cutout.png", tmp_path, (64, 64), use_cache=False)
    assert thumb.image.getpixel((2, 2)) == (255, 255, 255)  # the preview shows what trains
    assert thumb.image.getpixel((32, 32))[0] > 190
