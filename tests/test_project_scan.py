"""scan_project: what a project's folders hold, as training will see it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import project as P
from engine.project import scan_project
from tests.projectkit import image_bytes, write_image


def toml(project: Path, text: str) -> None:
    (project / "project.toml").write_text(text, encoding="utf-8")


def by_rel(ds):
    return {i.rel: i for i in ds.items}


def test_without_concepts_each_top_level_image_folder_is_a_concept_and_tool_folders_are_ignored(tmp_path):
    write_image(tmp_path / "dogs" / "a.png", caption="a dog")
    write_image(tmp_path / "dogs" / "deep" / "er" / "b.jpg", caption="another dog")
    write_image(tmp_path / "cats" / "c.webp", caption="a cat")
    write_image(tmp_path / "loose.png")
    write_image(tmp_path / "runs" / "r1" / "samples" / "s.png")
    write_image(tmp_path / "configs" / "x.png")
    write_image(tmp_path / ".cache" / "latent.png")
    write_image(tmp_path / ".hidden" / "h.png")
    write_image(tmp_path / "dogs" / ".thumb.png")
    (tmp_path / "empty").mkdir()
    ds = scan_project(tmp_path)
    assert ds.implicit_concepts
    assert [c.name for c in ds.concepts] == [".", "cats", "dogs"]
    assert all(c.repeats == 1 and c.caption == "sidecar" for c in ds.concepts)
    assert sorted(by_rel(ds)) == ["cats/c.webp", "dogs/a.png", "dogs/deep/er/b.jpg", "loose.png"]
    assert by_rel(ds)["dogs/deep/er/b.jpg"].concept == "dogs"
    assert by_rel(ds)["loose.png"].concept == "."


def test_effective_count_multiplies_repeats_and_steps_per_epoch_follow_batch_accumulation_and_processes(tmp_path):
    for i in range(5):
        write_image(tmp_path / "subject" / f"{i}.png", caption="sks dog")
    for i in range(3):
        write_image(tmp_path / "reg" / f"{i}.png", caption="a dog")
    toml(tmp_path, '[[concepts]]\nfolder = "subject"\nrepeats = 4\n\n[[concepts]]\nfolder = "reg"\n')
    ds = scan_project(tmp_path)
    assert {c.name: (c.images, c.effective) for c in ds.concepts} == {"subject": (5, 20), "reg": (3, 3)}
    assert ds.effective_count == 23
    assert ds.steps_per_epoch(1) == 23
    assert ds.steps_per_epoch(4) == 6                 # ceil(23/4)
    assert ds.steps_per_epoch(4, 2) == 3              # ceil(6/2)
    assert ds.steps_per_epoch(2, 1, processes=4) == 3  # ceil(23/8)


def test_image_extensions_match_in_any_case_and_other_files_are_not_items(tmp_path):
    write_image(tmp_path / "d" / "a.PNG", caption="x")
    write_image(tmp_path / "d" / "b.JpEg", fmt="JPEG", caption="y")
    write_image(tmp_path / "d" / "c.TIFF", caption="z")
    (tmp_path / "d" / "notes.md").write_text("hello")
    (tmp_path / "d" / "metadata.csv").write_text("file_name,name\n")
    ds = scan_project(tmp_path)
    assert sorted(by_rel(ds)) == ["d/a.PNG", "d/b.JpEg", "d/c.TIFF"]
    assert all(i.usable and i.caption for i in ds.items)


def test_sizes_come_from_headers_and_match_what_pil_decodes(tmp_path):
    cases = {"a.png": (640, 480), "b.jpg": (300, 700), "c.webp": (123, 45), "d.gif": (50, 60), "e.bmp": (33, 22),
             "f.tif": (70, 80)}
    for name, size in cases.items():
        write_image(tmp_path / "d" / name, size)
    write_image(tmp_path / "d" / "g.jpg", (257, 129), progressive=True)
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000  # a big APP1 segment before the frame header
    write_image(tmp_path / "d" / "h.jpg", (99, 77), exif=exif.tobytes())
    ds = scan_project(tmp_path)
    for item in ds.items:
        with Image.open(item.path) as im:
            assert (item.width, item.height) == im.size, item.rel
        assert item.usable, item.flags


def test_exif_rotated_photos_report_the_size_they_are_shown_and_trained_at(tmp_path):
    from PIL import ImageOps

    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        write_image(tmp_path / "d" / f"o{orientation}.jpg", (120, 60), exif=exif.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(tmp_path / "d" / "w.webp", (120, 60), exif=exif.tobytes())
    ds = scan_project(tmp_path)
    assert len(ds.items) == 5
    for item in ds.items:
        with Image.open(item.path) as im:
            shown = ImageOps.exif_transpose(im).size
        assert (item.width, item.height) == shown, item.rel
    assert {i.rel.split("/")[-1]: (i.width, i.height) for i in ds.items}["o6.jpg"] == (60, 120)


def test_caption_sources_fixed_filename_empty_and_trigger_once(tmp_path):
    write_image(tmp_path / "fixed" / "1.png", caption="ignored sidecar")
    write_image(tmp_path / "names" / "red_fox_in-snow.png")
    write_image(tmp_path / "blank" / "2.png")
    write_image(tmp_path / "trig" / "3.png", caption="sks dog on grass")
    write_image(tmp_path / "trig" / "4.png", caption="a dog on grass")
    toml(tmp_path, """
[[concepts]]
folder = "fixed"
caption = "fixed"
text = "a photo of sks dog"
[[concepts]]
folder = "names"
caption = "filename"
[[concepts]]
folder = "blank"
caption = "empty"
[[concepts]]
folder = "trig"
trigger = "sks"
""")
    items = by_rel(scan_project(tmp_path))
    assert items["fixed/1.png"].caption == "a photo of sks dog"
    assert items["names/red_fox_in-snow.png"].caption == "red fox in-snow"
    assert items["blank/2.png"].caption == "" and "no caption" not in items["blank/2.png"].flags
    assert items["trig/3.png"].caption == "sks dog on grass"
    assert items["trig/4.png"].caption == "sks, a dog on grass"
    assert items["fixed/1.png"].caption_source == "fixed"


@pytest.mark.parametrize("meta_name, meta_text", [
    ("metadata.csv", "file_name,name,type1,type2\n001.png,bulbasaur,grass,poison\nsub/002.png,charmander,fire,\n"),
    ("metadata.jsonl", '{"file_name": "001.png", "name": "bulbasaur", "type1": "grass", "type2": "poison"}\n'
                       '{"file_name": "sub/002.png", "name": "charmander", "type1": "fire", "type2": null}\n'),
])
def test_template_captions_fill_metadata_fields_and_tidy_empty_ones(tmp_path, meta_name, meta_text):
    write_image(tmp_path / "pokemon" / "001.png")
    write_image(tmp_path / "pokemon" / "sub" / "002.png")
    write_image(tmp_path / "pokemon" / "003.png")
    (tmp_path / "pokemon" / meta_name).write_text(meta_text)
    toml(tmp_path, '[[concepts]]\nfolder = "pokemon"\ncaption = "template"\n'
                   'template = "official art of pokemon {name}, {type1}, {type2}"\n')
    items = by_rel(scan_project(tmp_path))
    assert items["pokemon/001.png"].caption == "official art of pokemon bulbasaur, grass, poison"
    assert items["pokemon/sub/002.png"].caption == "official art of pokemon charmander, fire"
    assert items["pokemon/003.png"].caption is None
    assert any(f.startswith("no caption (no row in") for f in items["pokemon/003.png"].flags)


def test_template_without_metadata_file_is_an_error_naming_the_concept(tmp_path):
    write_image(tmp_path / "p" / "1.png")
    toml(tmp_path, '[[concepts]]\nfolder = "p"\ncaption = "template"\ntemplate = "{name}"\n')
    ds = scan_project(tmp_path)
    assert any("no metadata.csv" in e and e.startswith("p:") for e in ds.errors)


def test_sidecar_captions_are_read_forgivingly_and_say_what_was_forgiven(tmp_path):
    write_image(tmp_path / "d" / "bom.png")
    (tmp_path / "d" / "bom.txt").write_bytes(b"\xef\xbb\xbfa cat")
    write_image(tmp_path / "d" / "crlf.png")
    (tmp_path / "d" / "crlf.txt").write_bytes(b"a cat,\r\n sitting\r\n\r\n")
    write_image(tmp_path / "d" / "latin1.png")
    (tmp_path / "d" / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    write_image(tmp_path / "d" / "none.png")
    write_image(tmp_path / "d" / "blank.png", caption="  \n")
    items = by_rel(scan_project(tmp_path))
    assert items["d/bom.png"].caption == "a cat" and items["d/bom.png"].flags == []
    assert items["d/crlf.png"].caption == "a cat, sitting"
    assert items["d/latin1.png"].caption == "café au lait"  # read as Windows-1252, not as "caf\ufffd au lait"
    assert items["d/latin1.png"].flags == ["caption not UTF-8 (read as Windows-1252; a save writes UTF-8)"]
    assert items["d/latin1.png"].usable
    assert items["d/none.png"].caption is None and "no caption" in items["d/none.png"].flags
    assert "empty caption" in items["d/blank.png"].flags


def test_small_images_and_long_captions_are_flagged_but_still_usable(tmp_path):
    write_image(tmp_path / "d" / "small.png", (300, 900), caption="short")
    write_image(tmp_path / "d" / "big.png", (512, 600), caption=", ".join(["a very detailed description"] * 20))
    items = by_rel(scan_project(tmp_path, resolution=512))
    small, big = items["d/small.png"], items["d/big.png"]
    assert any(f.startswith("too small") for f in small.flags) and small.usable
    assert not any(f.startswith("too small") for f in big.flags)
    assert any(f.startswith("caption too long") for f in big.flags) and big.usable
    assert not any(f.startswith("too small") for f in by_rel(scan_project(tmp_path))["d/small.png"].flags)


def test_orphan_captions_are_problems_not_items(tmp_path):
    write_image(tmp_path / "d" / "a.png", caption="x")
    (tmp_path / "d" / "gone.txt").write_text("image was deleted")
    ds = scan_project(tmp_path)
    assert [(p.path, p.error) for p in ds.problems] == [("d/gone.txt", False)]
    assert "no image" in ds.problems[0].reason


def test_missing_concept_folder_is_an_error_and_no_usable_images_is_an_error(tmp_path):
    toml(tmp_path, '[[concepts]]\nfolder = "nowhere"\n')
    ds = scan_project(tmp_path)
    assert any(e.startswith("nowhere: concept folder not found") for e in ds.errors)
    assert any("no usable images" in e for e in ds.errors)


def test_concept_filter_keeps_only_the_named_concepts(tmp_path):
    write_image(tmp_path / "a" / "1.png", caption="x")
    write_image(tmp_path / "b" / "2.png", caption="y")
    ds = scan_project(tmp_path, concepts=["b"])
    assert [i.rel for i in ds.items] == ["b/2.png"]


def test_the_header_cache_makes_a_second_scan_open_no_image(tmp_path, monkeypatch):
    for i in range(5):
        write_image(tmp_path / "d" / f"{i}.png", (80 + i, 90), caption="x")
    first = scan_project(tmp_path)
    assert (tmp_path / P.CACHE_FILE).is_file()
    json.loads((tmp_path / P.CACHE_FILE).read_text())  # valid JSON, written atomically

    def boom(*a, **k):
        raise AssertionError("header read despite the cache")
    monkeypatch.setattr(P, "read_header", boom)
    second = scan_project(tmp_path)
    assert [(i.rel, i.width, i.height) for i in second.items] == [(i.rel, i.width, i.height) for i in first.items]


def test_the_cache_notices_a_replaced_image_and_survives_deletion_or_corruption(tmp_path):
    img = write_image(tmp_path / "d" / "a.png", (100, 100), caption="x")
    scan_project(tmp_path)
    img.write_bytes(image_bytes((200, 150)))
    os.utime(img, ns=(1, 1))
    assert (scan_project(tmp_path).items[0].width, scan_project(tmp_path).items[0].height) == (200, 150)
    (tmp_path / P.CACHE_FILE).write_text("{not json")
    assert scan_project(tmp_path).items[0].width == 200
    (tmp_path / P.CACHE_FILE).unlink()
    assert scan_project(tmp_path).items[0].width == 200


def test_scanning_without_the_cache_writes_nothing(tmp_path):
    write_image(tmp_path / "d" / "a.png", caption="x")
    scan_project(tmp_path, use_cache=False)
    assert not (tmp_path / ".cache").exists()


def test_a_project_where_the_cache_cannot_be_written_still_scans(tmp_path):
    write_image(tmp_path / "d" / "a.png", caption="x")
    (tmp_path / ".cache").write_text("a file where the cache folder would go")
    ds = scan_project(tmp_path)
    assert len(ds.usable_items) == 1
    assert (tmp_path / ".cache").read_text() == "a file where the cache folder would go"


def test_project_level_metadata_matches_by_relative_path_or_unique_base_name(tmp_path):
    write_image(tmp_path / "pokemon" / "001.png")
    write_image(tmp_path / "pokemon" / "deep" / "002.png")
    (tmp_path / "metadata.csv").write_text("file_name,name\npokemon/001.png,bulbasaur\n002.png,ivysaur\n")
    toml(tmp_path, '[[concepts]]\nfolder = "pokemon"\ncaption = "template"\ntemplate = "pokemon {name}"\n')
    items = by_rel(scan_project(tmp_path))
    assert items["pokemon/001.png"].caption == "pokemon bulbasaur"
    assert items["pokemon/deep/002.png"].caption == "pokemon ivysaur"


def test_unreadable_metadata_is_an_error_naming_the_file_and_line(tmp_path):
    write_image(tmp_path / "p" / "1.png")
    (tmp_path / "p" / "metadata.jsonl").write_text('{"file_name": "1.png", "name": "a"}\n{broken\n')
    toml(tmp_path, '[[concepts]]\nfolder = "p"\ncaption = "template"\ntemplate = "{name}"\n')
    errors = scan_project(tmp_path).errors
    assert any(e.startswith("p/metadata.jsonl:2: invalid JSON") for e in errors), errors


def test_symlinked_folders_are_followed_but_a_link_loop_is_not(tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "a.png", caption="x")
    proj = tmp_path / "proj"
    (proj / "d").mkdir(parents=True)
    (proj / "d" / "linked").symlink_to(outside)
    (proj / "d" / "loop").symlink_to(proj / "d")
    (proj / "d" / "dangling.png").symlink_to(tmp_path / "missing.png")
    items = by_rel(scan_project(proj))
    assert "d/linked/a.png" in items and items["d/linked/a.png"].usable
    assert not any("loop/loop" in rel for rel in items)
    assert not items["d/dangling.png"].usable


@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 3000), h=st.integers(1, 3000), fmt=st.sampled_from(["PNG", "JPEG", "JPEG-progressive", "PNG-L"]))
def test_the_fast_header_reader_agrees_with_pil(w, h, fmt):
    import io

    buf = io.BytesIO()
    mode = "L" if fmt == "PNG-L" else "RGB"
    Image.new(mode, (w, h)).save(buf, fmt.split("-")[0] if fmt != "PNG-L" else "PNG",
                                 **({"progressive": True} if fmt.endswith("progressive") else {}))
    data = buf.getvalue()
    fast = P._fast_size(data[:65536])
    assert fast is not None and fast[:2] == Image.open(io.BytesIO(data)).size


def test_a_png_cut_short_is_flagged_as_truncated(tmp_path):
    data = image_bytes((64, 64), "PNG")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cut.png").write_bytes(data[:-20])
    (item,) = scan_project(tmp_path).items
    assert item.flags == ["unreadable: truncated (no PNG IEND chunk)", "no caption"] and not item.usable


def test_a_caption_with_an_upper_case_extension_is_named_not_silently_missing(tmp_path):
    write_image(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "a.TXT").write_text("a caption from windows")
    write_image(tmp_path / "d" / "b.png")
    items = by_rel(scan_project(tmp_path))
    assert items["d/a.png"].flags == ["no caption (a.TXT is not read: rename it to .txt)"]
    assert items["d/b.png"].flags == ["no caption"]
