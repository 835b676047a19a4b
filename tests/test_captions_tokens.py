"""Exact caption token counts: the base model's own tokenizer, read without torch, as `tunelab check` warns with."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.basemodel import tokenizer_folder
from engine.tokencount import TokenizerError, load_counter
from tests.projectkit import write_image
from tui.cli import main

CAPTIONS = [
    "a red circle",
    "A Photo of a BLUE Square, on a plain background!",
    "sks toy dog at the top left corner, high quality, detailed render",
    "supercalifragilistic zyzzyva   qwertyuiop",
    "café naïve crème brûlée — 東京 🙂",
    "it's 2024: the dog's 3 toys (red/blue) cost $12.50...",
    "",
    ", ".join(["bright pink star"] * 30),
]


def transformers_counts(folder: Path, texts: list[str]) -> list[int]:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    return [len(tok(t, add_special_tokens=False, truncation=False)["input_ids"]) for t in texts]


@pytest.fixture(scope="module")
def vocab_merges_folder(tmp_path_factory) -> Path:
    """A tokenizer folder laid out like the SD 1.x hub repos: vocab.json + merges.txt, no tokenizer.json."""
    from engine.train.tiny import tokenizer_files

    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    folder.mkdir()
    vocab, merges = tokenizer_files()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def test_counts_from_vocab_and_merges_match_transformers_clip_tokenizer(vocab_merges_folder):
    counter = load_counter(vocab_merges_folder)
    assert counter(CAPTIONS) == transformers_counts(vocab_merges_folder, CAPTIONS)
    assert counter(["a red circle"]) == [3]


def test_counts_from_a_saved_tokenizer_json_match_transformers(tiny_base):
    folder = tiny_base / "tokenizer"
    assert (folder / "tokenizer.json").is_file()
    counts = load_counter(folder)(CAPTIONS)
    assert counts == transformers_counts(folder, CAPTIONS)
    assert counts[-1] > 75  # padding and truncation in the saved file do not cap the count


def test_a_folder_without_tokenizer_files_is_refused_by_name(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json, and no vocab.json"):
        load_counter(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json: not a tokenizer file"):
        load_counter(tmp_path)


def test_the_tokenizer_folder_of_each_base_form(tiny_base, tmp_path, monkeypatch):
    assert tokenizer_folder(str(tiny_base), tmp_path)[0] == tiny_base / "tokenizer"
    assert tokenizer_folder("tiny", tmp_path)[0] == tiny_base / "tokenizer"  # the conftest cache holds the build
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    folder, why = tokenizer_folder(str(ckpt), tmp_path)
    assert folder is None and "set model.config" in why
    assert tokenizer_folder(str(ckpt), tmp_path, config=str(tiny_base))[0] == tiny_base / "tokenizer"
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "empty-cache"))
    folder, why = tokenizer_folder("tiny", tmp_path)
    assert folder is None and "not built yet" in why


@pytest.fixture
def long_caption_project(tmp_path, tiny_base) -> Path:
    p = tmp_path / "p"
    # Eleven words the tiny vocabulary lacks: 11 tokens by estimate, 7 letter tokens each for the model.
    write_image(p / "img" / "rare.png", (64, 64), caption=" ".join(["zyzzyvx"] * 11))
    # Eighty whole-word tokens for the tiny model; the estimate agrees this one is long.
    write_image(p / "img" / "long.png", (64, 64), caption=" ".join(["red"] * 80))
    write_image(p / "img" / "short.png", (64, 64), caption="a red circle")
    (p / "configs").mkdir()
    (p / "configs" / "c.toml").write_text(f'[model]\nbase = "{tiny_base}"\n[data]\nresolution = 64\n')
    return p


def test_check_with_a_config_counts_with_the_models_tokenizer(long_caption_project, tiny_base, capsys):
    rc = main(["check", str(long_caption_project), "c"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"base model: diffusers folder {tiny_base}" in out
    assert "caption tokens: counted with the tokenizer of" in out and "2 caption(s) over 75" in out
    assert "img/long.png: caption too long (80 tokens, the text encoder reads 75; the rest is cut off)" in out
    assert "img/rare.png: caption too long (77 tokens" in out  # exact, where the estimate says 11
    assert "img/short.png" not in out


def test_check_without_a_config_estimates_and_says_so(long_caption_project, capsys):
    rc = main(["check", str(long_caption_project)])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "caption tokens: estimated without a tokenizer" in out
    assert "img/long.png: caption too long (~80 tokens" in out and "img/rare.png" not in out


def test_check_with_a_vocab_and_merges_tokenizer_counts_the_same(long_caption_project, tiny_base,
                                                                 vocab_merges_folder, tmp_path, capsys):
    base = tmp_path / "hub-style"
    shutil.copytree(tiny_base, base)
    shutil.rmtree(base / "tokenizer")
    shutil.copytree(vocab_merges_folder, base / "tokenizer")
    (long_caption_project / "configs" / "c.toml").write_text(f'[model]\nbase = "{base}"\n')
    rc = main(["check", str(long_caption_project), "c"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "img/long.png: caption too long (80 tokens" in out and "img/rare.png: caption too long (77 tokens" in out
