"""`tunelab caption`: bulk operations from the command line, dry runs, undo, and BLIP auto-captions."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.projectkit import tree_digest, write_image
from tui.cli import main


def caption(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["caption", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def project(tmp_path) -> Path:
    p = tmp_path / "poke"
    write_image(p / "images" / "001.png", caption="a green creature")
    write_image(p / "images" / "002.png")
    write_image(p / "images" / "sub" / "003.png")
    write_image(p / "other" / "x.png", caption="unrelated")
    (p / "images" / "metadata.csv").write_text(
        "file_name,name,type1,type2\n001.png,bulbasaur,grass,poison\n002.png,charmander,fire,\n"
        "sub/003.png,squirtle,water,\n")
    (p / "project.toml").write_text(
        '[[concepts]]\nfolder = "images"\ncaption = "sidecar"\ntemplate = "official art of pokemon {name}, {type1}, {type2}"\n'
        '[[concepts]]\nfolder = "other"\n')
    return p


def read(p: Path) -> str | None:
    return p.read_text() if p.exists() else None


def test_dry_run_prints_a_per_file_diff_and_writes_nothing(project, capsys):
    before = tree_digest(project, exclude=())
    rc, out, _ = caption(capsys, project, "fixed", "a pokemon", "--dry-run")
    assert rc == 0
    assert "+++ b/images/002.txt" in out and "+a pokemon" in out and "+++ b/other/x.txt" not in out
    assert "3 caption(s)" not in out and "2 caption(s) to change (2 new)" in out
    assert "dry run: nothing written" in out
    assert tree_digest(project, exclude=()) == before


def test_template_uses_the_concepts_template_and_metadata_and_undo_restores(project, capsys):
    before = tree_digest(project)
    rc, out, err = caption(capsys, project, "template", "--overwrite", "--concept", "images")
    assert rc == 0, err
    assert read(project / "images" / "001.txt") == "official art of pokemon bulbasaur, grass, poison"
    assert read(project / "images" / "sub" / "003.txt") == "official art of pokemon squirtle, water"
    assert read(project / "other" / "x.txt") == "unrelated"
    assert "--undo" in out
    rc, out, _ = caption(capsys, project, "--undo")
    assert rc == 0 and "restored 3 caption file(s)" in out
    assert {k: v.split(":")[0] for k, v in tree_digest(project).items()} == \
        {k: v.split(":")[0] for k, v in before.items()}


def test_a_template_field_missing_from_metadata_is_an_error_naming_field_and_images(project, capsys):
    rc, _, err = caption(capsys, project, "template", "{name} {generation}", "--concept", "images")
    assert rc == 1
    assert "field {generation} is missing from images/metadata.csv (its columns: name, type1, type2)" in err
    assert "3 image(s) lack it" in err and "images/sub/003.png" in err
    assert not (project / "images" / "002.txt").exists()


def two_concepts_sharing_project_metadata(root: Path) -> Path:
    """8 + 6 images in two concept folders, one metadata.csv at the project's top without a type1 column."""
    p = root / "shared"
    for i in range(8):
        write_image(p / "a" / f"a{i}.png")
    for i in range(6):
        write_image(p / "b" / f"b{i}.png")
    (p / "metadata.csv").write_text("file_name,name\n" + "".join(f"a/a{i}.png,x{i}\n" for i in range(8))
                                    + "".join(f"b/b{i}.png,y{i}\n" for i in range(6)))
    return p


def test_a_missing_field_counts_the_images_of_every_concept_not_only_the_first(tmp_path, capsys):
    p = two_concepts_sharing_project_metadata(tmp_path)
    rc, _, err = caption(capsys, p, "template", "{name} {type1}", "--dry-run")
    assert rc == 1
    assert "field {type1} is missing from metadata.csv" in err and "14 image(s) lack it" in err
    assert "8 image(s)" not in err and "and 4 more" in err


def test_images_without_a_metadata_row_are_named_and_skip_missing_captions_the_rest(project, capsys):
    write_image(project / "images" / "004.png")  # not in metadata.csv
    rc, _, err = caption(capsys, project, "template", "--concept", "images")
    assert rc == 1 and "no row in images/metadata.csv for 1 image(s): images/004.png" in err
    assert "--skip-missing" in err and not (project / "images" / "002.txt").exists()
    rc, out, err = caption(capsys, project, "template", "--concept", "images", "--skip-missing")
    assert rc == 0, err
    assert "skipped 1 (already captioned; --overwrite replaces), 1 (no row in images/metadata.csv)" in out
    assert read(project / "images" / "002.txt") == "official art of pokemon charmander, fire"
    assert not (project / "images" / "004.txt").exists()


def test_prefix_twice_changes_nothing_the_second_time(project, capsys):
    rc, out, _ = caption(capsys, project, "prefix", "sks")
    assert read(project / "images" / "001.txt") == "sks, a green creature"
    assert " caption(s) changed (0 new)" in out and "to change" not in out  # applied: it says what it did
    rc, out, _ = caption(capsys, project, "prefix", "sks")
    assert rc == 0 and "0 caption(s) changed" in out


def test_a_bad_regex_is_a_clear_error(project, capsys):
    rc, _, err = caption(capsys, project, "replace", "green (", "x")
    assert rc == 1 and "does not compile" in err and "position" in err


def test_undo_refuses_when_a_caption_was_edited_since(project, capsys):
    caption(capsys, project, "suffix", "pixel art")
    (project / "other" / "x.txt").write_text("hand edit")
    rc, _, err = caption(capsys, project, "--undo")
    assert rc == 1 and "other/x.txt" in err and "nothing was touched" in err
    assert read(project / "images" / "001.txt") == "a green creature, pixel art"


def test_an_unknown_concept_is_an_error_listing_the_concepts(project, capsys):
    rc, _, err = caption(capsys, project, "empty", "--concept", "nope")
    assert rc == 1 and "images" in err and "other" in err


def tiny_blip(path: Path) -> Path:
    """A randomly initialised BLIP small enough to build in a second, saved with its processor."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat", "dog", "red", "blue"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, bos_token="[DEC]")
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3,
                         max_position_embeddings=64),
        vision_config=dict(hidden_size=32, image_size=32, patch_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=37),
        projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def test_auto_captions_only_missing_images_with_a_local_blip_and_can_be_undone(project, tmp_path, capsys):
    model = tiny_blip(tmp_path / "blip")
    rc, out, err = caption(capsys, project, "auto", "--model", model, "--max-new-tokens", "4", "--batch-size", "2",
                           "--device", "cpu")
    assert rc == 0, err
    assert "captioned 2/2" in err
    assert read(project / "images" / "001.txt") == "a green creature"
    new = read(project / "images" / "002.txt")
    assert new is not None and set(new.split()) <= {"a", "photo", "of", "cat", "dog", "red", "blue"}
    assert read(project / "images" / "sub" / "003.txt") is not None
    rc, _, _ = caption(capsys, project, "--undo")
    assert rc == 0 and not (project / "images" / "002.txt").exists()


def test_auto_with_a_model_that_is_not_there_says_how_to_get_it(project, tmp_path, capsys):
    rc, _, err = caption(capsys, project, "auto", "--model", tmp_path / "no-such-blip")
    assert rc == 1 and "cannot load BLIP" in err and "--model" in err


def test_auto_checks_the_model_even_when_every_image_is_already_captioned(project, tmp_path, capsys, monkeypatch):
    caption(capsys, project, "fixed", "a pokemon")  # nothing left for auto to do
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    not_blip = tmp_path / "clip"
    not_blip.mkdir()
    (not_blip / "config.json").write_text('{"model_type": "clip"}')
    for model, says in [(tmp_path / "no-such-blip", "no such folder"),  # was: exit 0, 'skipped 3'
                        (tmp_path, "has no config.json"),
                        (not_blip, "is a clip model's config, not BLIP's"),
                        (project / "images" / "001.png", "is a file; --model takes a folder"),
                        ("nobody/blip", "no hub model nobody/blip in the local Hugging Face cache")]:
        rc, out, err = caption(capsys, project, "auto", "--model", model, "--dry-run")
        assert rc == 1 and f"cannot load BLIP from --model {model}: " in err and says in err, (model, err)
        assert "skipped" not in out

    # A model that is there (a folder, or a hub id in the cache) still finds nothing to do.
    model = tiny_blip(tmp_path / "blip")
    snapshot = tmp_path / "hf" / "models--someone--blip" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    model.rename(snapshot)
    rc, out, err = caption(capsys, project, "auto", "--model", "someone/blip")
    assert rc == 0 and "0 caption(s) changed" in out and "(already captioned" in out, err
    rc, out, err = caption(capsys, project, "auto", "--model", snapshot)
    assert rc == 0 and "0 caption(s) changed" in out and "(already captioned" in out, err


def test_undo_with_dry_run_shows_each_file_going_back_and_restores_nothing(project, capsys):
    caption(capsys, project, "prefix", "sks")
    caption(capsys, project, "fixed", "new one")  # the last operation: creates 002.txt and sub/003.txt
    rc, out, _ = caption(capsys, project, "--undo", "--dry-run")
    assert rc == 0
    assert "--- a/images/002.txt\n+++ /dev/null" in out and "-new one" in out
    assert "2 caption file(s) to restore" in out and "dry run: nothing restored" in out
    assert read(project / "images" / "002.txt") == "new one"
    rc, out, _ = caption(capsys, project, "--undo")
    assert rc == 0 and read(project / "images" / "002.txt") is None
    assert read(project / "images" / "001.txt") == "sks, a green creature"  # the earlier operation stays


def test_dry_run_before_the_operation_name_still_writes_nothing(project, capsys):
    before = tree_digest(project, exclude=())
    rc, out, _ = caption(capsys, project, "--dry-run", "fixed", "a pokemon")
    assert rc == 0 and "dry run: nothing written" in out
    assert tree_digest(project, exclude=()) == before
