"""engine.captions: reading and writing captions, bulk plans, and exact undo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import captions as C
from tests.projectkit import tree_digest, write_image


def make(tmp_path: Path, captions: dict[str, str | bytes | None]) -> list[C.Target]:
    out = []
    for name, cap in captions.items():
        img = write_image(tmp_path / "imgs" / name)
        if isinstance(cap, bytes):
            img.with_suffix(".txt").write_bytes(cap)
        elif cap is not None:
            img.with_suffix(".txt").write_text(cap, encoding="utf-8")
        out.append(C.Target(img, f"imgs/{name}"))
    return out


def caption_of(t: C.Target) -> str | None:
    c = C.read_sidecar(t.image)
    return None if c is None else c.text


def test_read_caption_normalises_and_reports_what_it_changed(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    assert C.read_caption(p) == C.CaptionText("line one line two", ("caption has several lines (joined)",))
    p.write_bytes(b"caf\xe9")
    assert C.read_caption(p) == C.CaptionText("café", ("caption not UTF-8 (read as Windows-1252; a save writes UTF-8)",))
    with pytest.raises(FileNotFoundError):
        C.read_caption(tmp_path / "missing.txt")


@pytest.mark.parametrize("raw, text, encoding", [
    ("plüsch à la café".encode("latin-1"), "plüsch à la café", "Windows-1252"),
    (b"\x93smart quotes\x94 \x80 5", "\u201csmart quotes\u201d \u20ac 5", "Windows-1252"),
    (b"odd \x81 byte \xe9", "odd \x81 byte é", "Latin-1"),  # undefined in cp1252: every byte still read
    ("ünïcode, two\r\nlines".encode("utf-16"), "ünïcode, two lines", "UTF-16"),  # Notepad's "Unicode"
])
def test_a_caption_that_is_not_utf8_is_read_as_written_never_with_replacement_characters(tmp_path, raw, text,
                                                                                       encoding):
    p = tmp_path / "c.txt"
    p.write_bytes(raw)
    read = C.read_caption(p)
    assert read.text == text and "\ufffd" not in read.text
    assert f"caption not UTF-8 (read as {encoding}; a save writes UTF-8)" in read.flags


def test_a_bulk_edit_of_a_latin1_caption_writes_the_same_letters_as_utf8_says_so_and_undo_restores_the_bytes(
        tmp_path):
    latin = "plüsch à la café".encode("latin-1")
    items = make(tmp_path, {"a.png": latin, "b.png": "a plush"})
    plan = C.plan_prefix(items, "sks", root=tmp_path)
    assert "-plüsch à la café" in plan.diff() and "+sks, plüsch à la café" in plan.diff()
    assert "1 of them not UTF-8 (imgs/a.txt): will be written as UTF-8, the same text" in plan.summary()
    C.apply_plan(plan)
    assert (tmp_path / "imgs/a.txt").read_bytes() == "sks, plüsch à la café".encode("utf-8")
    assert C.undo_plan(tmp_path).changes[0].new == "plüsch à la café"  # undo --dry-run shows the letters too
    C.undo_last(tmp_path)
    assert (tmp_path / "imgs/a.txt").read_bytes() == latin


def test_write_caption_writes_exactly_the_text_and_leaves_no_temporary_files(tmp_path):
    p = tmp_path / "c.txt"
    C.write_caption(p, "a cat, ünïcode")
    assert p.read_bytes() == "a cat, ünïcode".encode("utf-8")
    assert os.listdir(tmp_path) == ["c.txt"]


def test_estimated_tokens_grow_with_long_words_and_punctuation():
    assert C.estimate_tokens("a photo of a dog") == 5
    assert C.estimate_tokens("a photo, of a dog.") == 7
    assert C.estimate_tokens("supercalifragilistic") == 3
    assert C.estimate_tokens(", ".join(["red dog"] * 30)) > 75


def test_fixed_writes_only_missing_captions_unless_overwrite(tmp_path):
    ts = make(tmp_path, {"a.png": "old caption", "b.png": None})
    plan = C.plan_fixed(ts, "sks dog")
    assert [(c.label, c.old, c.new) for c in plan.changes] == [("imgs/b.txt", None, "sks dog")]
    assert plan.skipped == [("imgs/a.png", "already captioned; --overwrite replaces")]
    plan = C.plan_fixed(ts, "sks dog", mode="overwrite")
    assert [(c.old, c.new) for c in plan.changes] == [("old caption", "sks dog"), (None, "sks dog")]


def test_a_plan_writes_nothing_until_applied_and_its_diff_shows_each_file(tmp_path):
    ts = make(tmp_path, {"a.png": "a dog", "b.png": None})
    before = tree_digest(tmp_path)
    plan = C.plan_fixed(ts, "sks dog", mode="overwrite")
    diff = plan.diff()
    assert tree_digest(tmp_path) == before
    assert "--- a/imgs/a.txt\n+++ b/imgs/a.txt\n@@ -1 +1 @@\n-a dog\n+sks dog\n" in diff
    assert "--- /dev/null\n+++ b/imgs/b.txt\n@@ -0,0 +1 @@\n+sks dog\n" in diff
    C.apply_plan(plan, tmp_path)
    assert [caption_of(t) for t in ts] == ["sks dog", "sks dog"]


def test_prefix_is_idempotent_and_skips_images_without_a_caption(tmp_path):
    ts = make(tmp_path, {"a.png": "a dog", "b.png": "sks, a dog", "c.png": None})
    plan = C.plan_prefix(ts, "sks")
    assert [c.new for c in plan.changes] == ["sks, a dog"]
    assert ("imgs/c.png", "no caption") in plan.skipped
    C.apply_plan(plan, tmp_path)
    assert len(C.plan_prefix(ts, "sks")) == 0


def test_suffix_is_idempotent(tmp_path):
    ts = make(tmp_path, {"a.png": "a dog"})
    C.apply_plan(C.plan_suffix(ts, "high quality"), tmp_path)
    assert caption_of(ts[0]) == "a dog, high quality"
    assert len(C.plan_suffix(ts, "high quality")) == 0


def test_replace_uses_regex_groups_and_tidies_the_result(tmp_path):
    ts = make(tmp_path, {"a.png": "a photo of a dog, blurry", "b.png": "a cat"})
    plan = C.plan_replace(ts, r"a (dog|cat)", r"a sks \1")
    assert [c.new for c in plan.changes] == ["a photo of a sks dog, blurry", "a sks cat"]
    plan = C.plan_replace(ts, r"\bblurry\b", "")
    assert [c.new for c in plan.changes] == ["a photo of a dog"]
    plan = C.plan_replace(ts, "a (dog", "x", literal=True)
    assert len(plan) == 0


def test_a_regex_that_does_not_compile_names_the_pattern_and_position(tmp_path):
    ts = make(tmp_path, {"a.png": "a dog"})
    with pytest.raises(C.CaptionError) as e:
        C.plan_replace(ts, "a (dog", "x")
    assert "regex `a (dog` does not compile" in str(e.value) and "position 2" in str(e.value)


def test_the_summary_shows_pattern_and_replacement_as_typed_not_as_a_python_repr(tmp_path):
    ts = make(tmp_path, {"a.png": "a plushie toy", "b.png": "it's a plushie"})
    plan = C.plan_replace(ts, r"\bplushie\b", r"sks \0")
    assert plan.summary().startswith(r"replace `\bplushie\b` -> `sks \0`: 2 caption(s) to change")  # was '\\bplushie\\b'
    assert C.plan_prefix(ts, "it's").summary().startswith("prefix `it's`:")  # was "it's" in double quotes
    assert C.plan_fixed(ts, "a `raw` tag", "overwrite").operation == "fixed ``a `raw` tag``"


def test_template_fills_fields_and_a_missing_field_names_the_field_and_the_images(tmp_path):
    ts = make(tmp_path, {"1.png": None, "2.png": None, "3.png": None})
    rows = {"1.png": {"name": "bulbasaur", "type1": "grass"}, "2.png": {"name": "charmander", "type1": "fire"},
            "3.png": {"name": "squirtle"}}
    lookup = lambda t: rows[t.image.name]  # noqa: E731
    with pytest.raises(C.CaptionError) as e:
        C.plan_template(ts, "pokemon {name}, {type1}", lookup)
    assert "{type1} is missing for 1 image(s): imgs/3.png" in str(e.value)
    rows["3.png"]["type1"] = ""
    plan = C.plan_template(ts, "pokemon {name}, {type1}", lookup)
    assert [c.new for c in plan.changes] == ["pokemon bulbasaur, grass", "pokemon charmander, fire", "pokemon squirtle"]


@pytest.mark.parametrize("template", ["{name", "{}", "{0}", "{name.__class__}", "no fields"])
def test_bad_templates_are_refused_before_anything_is_planned(tmp_path, template):
    ts = make(tmp_path, {"1.png": None})
    with pytest.raises(C.CaptionError):
        C.plan_template(ts, template, lambda t: {"name": "x"})


def test_undo_restores_the_last_operation_exactly_and_removes_captions_it_created(tmp_path):
    ts = make(tmp_path, {"a.png": b"caf\xe9 latin-1\r\nsecond line", "b.png": None, "c.png": "kept"})
    before = tree_digest(tmp_path, exclude=(".cache",))
    plan = C.plan_fixed(ts[:2], "sks dog", mode="overwrite")
    journal = C.apply_plan(plan, tmp_path)
    assert journal is not None and journal.parent == tmp_path / ".cache" / "caption-undo"
    assert caption_of(ts[1]) == "sks dog"
    res = C.undo_last(tmp_path)
    assert sorted(res.restored) == ["imgs/a.txt", "imgs/b.txt"]
    assert ts[0].caption_path.read_bytes() == b"caf\xe9 latin-1\r\nsecond line"
    assert not ts[1].caption_path.exists()
    assert {k: v.split(":")[0] for k, v in tree_digest(tmp_path).items()} == \
        {k: v.split(":")[0] for k, v in before.items()}
    with pytest.raises(C.CaptionError, match="nothing to undo"):
        C.undo_last(tmp_path)


def test_undo_refuses_and_touches_nothing_when_a_file_changed_since(tmp_path):
    ts = make(tmp_path, {"a.png": "one", "b.png": "two"})
    C.apply_plan(C.plan_prefix(ts, "sks"), tmp_path)
    C.write_caption(ts[1].caption_path, "edited by hand")
    state = tree_digest(tmp_path, exclude=())
    with pytest.raises(C.UndoConflict) as e:
        C.undo_last(tmp_path)
    assert e.value.files == [ts[1].caption_path.resolve()]
    assert str(ts[1].caption_path.resolve()) in str(e.value)
    assert tree_digest(tmp_path, exclude=()) == state


def test_successive_undos_walk_back_through_operations(tmp_path):
    ts = make(tmp_path, {"a.png": "a dog"})
    C.apply_plan(C.plan_prefix(ts, "sks"), tmp_path)
    C.apply_plan(C.plan_suffix(ts, "photo"), tmp_path)
    assert caption_of(ts[0]) == "sks, a dog, photo"
    C.undo_last(tmp_path)
    assert caption_of(ts[0]) == "sks, a dog"
    C.undo_last(tmp_path)
    assert caption_of(ts[0]) == "a dog"


def test_an_operation_interrupted_after_its_journal_can_still_be_undone(tmp_path, monkeypatch):
    ts = make(tmp_path, {"a.png": "one", "b.png": "two"})
    plan = C.plan_prefix(ts, "sks")
    real_write, calls = C.write_caption, []

    def crash_on_second(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, text)
    monkeypatch.setattr(C, "write_caption", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        C.apply_plan(plan, tmp_path)
    monkeypatch.setattr(C, "write_caption", real_write)
    assert [caption_of(t) for t in ts] == ["sks, one", "two"]
    C.undo_last(tmp_path)  # b.txt still holds its old content: not a conflict
    assert [caption_of(t) for t in ts] == ["one", "two"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.text(max_size=30)), min_size=1, max_size=5), st.text(min_size=1, max_size=10))
def test_apply_then_undo_restores_any_captions(tmp_path_factory, texts, fixed):
    root = tmp_path_factory.mktemp("prop")
    ts = make(root, {f"{i}.png": t for i, t in enumerate(texts)})
    before = {t.caption_path: (t.caption_path.read_bytes() if t.caption_path.exists() else None) for t in ts}
    plan = C.plan_fixed(ts, fixed, mode="overwrite")
    C.apply_plan(plan, root)
    if plan.changes:
        C.undo_last(root)
    assert {p: (p.read_bytes() if p.exists() else None) for p in before} == before


def test_undo_still_works_after_the_project_folder_was_moved(tmp_path):
    root = tmp_path / "before"
    ts = make(root, {"a.png": "a dog"})
    C.apply_plan(C.plan_prefix(ts, "sks"), root)
    moved = root.rename(tmp_path / "after")
    C.undo_last(moved)
    assert (moved / "imgs" / "a.txt").read_text() == "a dog"
