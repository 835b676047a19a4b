"""The placeholder token of textual inversion and pivotal tuning: the tokens it stands for and the rules
it must meet against the base model's tokenizer, checked before a run is launched.

`textual_inversion.placeholder_token` (`<concept>`) with `num_vectors = N` becomes the new tokens
`<concept> <concept>_1 … <concept>_{N-1}` (diffusers' multi-vector naming, which
`load_textual_inversion` re-creates). None of them may already be a token of the base's tokenizer
(diffusers refuses to load such an embedding, and training would overwrite a word the model knows),
and `textual_inversion.initializer_token` must be exactly one token (its embedding is the start).

The trainer (`engine.train.methods.textual_inversion.PlaceholderTokens`) applies `tokenizer_problems`
to the tokenizer it loads. `prelaunch_problems` applies the same rules to the tokenizer on disk, so
`tunelab check`, `tunelab run` and the TUI refuse such a config with the file, line and key before
anything is created. Light: the tokenizer is read with the `tokenizers` library (`engine.tokencount`),
no torch or transformers. Where the base has no tokenizer on disk yet (a `tiny` base not built yet,
a single-file base without `model.config`), only the trainer checks, at its start.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

METHODS = ("textual_inversion", "pivotal")
PLACEHOLDER_KEY = "textual_inversion.placeholder_token"
INITIALIZER_KEY = "textual_inversion.initializer_token"


def placeholder_names(token: str, num_vectors: int) -> list[str]:
    """`<concept>`, 3 → [`<concept>`, `<concept>_1`, `<concept>_2`]."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def _mention(token: str) -> "re.Pattern[str]":
    return re.compile(re.escape(token) + r"(?!_\d)")  # `<concept>`, not the vector token `<concept>_1`


def mentions_placeholder(text: str, token: str) -> bool:
    """Whether `text` says the placeholder itself (`<concept>_1`, a vector token, does not count)."""
    return bool(_mention(token).search(text))


def with_placeholder(caption: str, token: str) -> str:
    """The caption textual inversion trains an image with: as written when it says the placeholder,
    else with `<token>, ` put in front, and the placeholder alone for an image with no caption (an
    image whose text lacks the placeholder teaches the embedding nothing). The trainer and
    `tunelab check` both apply this, so what check reports is what trains."""
    if mentions_placeholder(caption, token):
        return caption
    return f"{token}, {caption}" if caption else token


def expand_placeholder(text: str, token: str, num_vectors: int) -> str:
    """`a <concept> dog` → `a <concept> <concept>_1 dog` for 2 vectors (as diffusers' `maybe_convert_prompt`)."""
    if num_vectors < 2:
        return text
    return _mention(token).sub(" ".join(placeholder_names(token, num_vectors)), text)


def tokenizer_problems(ti: Any, vocab: Collection[str], count_tokens: Callable[[str], int]) -> list[tuple[str, str]]:
    """(key, message) pairs for `ti` (a `TextualInversionConfig`) against a tokenizer's vocabulary (every
    token, added ones too) and its token count of a text (no start/end tokens)."""
    out = []
    names = placeholder_names(ti.placeholder_token, ti.num_vectors)
    taken = [n for n in names if n in vocab]
    if taken:
        which = (f"{taken[0]!r} is" if taken[0] == ti.placeholder_token
                 else f"its vector token {taken[0]!r} (num_vectors = {ti.num_vectors}) is")
        out.append((PLACEHOLDER_KEY, f"= {ti.placeholder_token!r}: {which} already a token of the base model's "
                    "tokenizer; pick a new word, e.g. \"<my-subject>\""))
    n = count_tokens(ti.initializer_token)
    if n != 1:
        out.append((INITIALIZER_KEY, f"= {ti.initializer_token!r} is {n} tokens for the base model's tokenizer; it "
                    "must be a single token (a common word such as \"dog\", \"person\" or \"style\")"))
    return out


def read_vocab(folder: str | os.PathLike) -> set[str]:
    """Every token of the tokenizer in `folder` (a diffusers `tokenizer/`), added tokens included.
    Raises `engine.tokencount.TokenizerError` naming the file."""
    from engine.tokencount import TokenizerError

    folder = Path(folder)
    fast = folder / "tokenizer.json"
    try:
        if fast.is_file():
            data = json.loads(fast.read_text(encoding="utf-8"))
            vocab = set(data["model"]["vocab"])
            vocab.update(t["content"] for t in data.get("added_tokens") or [])
            return vocab
        vocab = set(json.loads((folder / "vocab.json").read_text(encoding="utf-8")))
        added = folder / "added_tokens.json"
        if added.is_file():
            vocab.update(json.loads(added.read_text(encoding="utf-8")))
        return vocab
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerError(f"{folder}: cannot read the tokenizer's vocabulary ({e})") from None


def prelaunch_problems(cfg: Any, project_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(key, message) pairs for a textual-inversion or pivotal config whose placeholder or initializer
    does not fit the base's tokenizer; [] for other methods and where no tokenizer is on disk."""
    if cfg.method not in METHODS:
        return []
    from engine.basemodel import tokenizer_folder
    from engine.tokencount import TokenizerError, load_counter

    folder, _why = tokenizer_folder(cfg.model.base, project_dir, cfg.model.config or None)
    if folder is None:
        return []
    try:
        vocab = read_vocab(folder)
        counter = load_counter(folder)
    except TokenizerError:
        return []  # an unreadable tokenizer is the trainer's (and the token count's) to report
    return tokenizer_problems(cfg.textual_inversion, vocab, lambda text: counter([text])[0])


def located_problems(cfg: Any, project_dir: str | os.PathLike, path: str | os.PathLike, source: str,
                     overrides: Iterable[str] = ()) -> list[Any]:
    """`prelaunch_problems` as `engine.schema.Problem`s with the config file and line of each key."""
    found = prelaunch_problems(cfg, project_dir)
    if not found:
        return []
    from engine.schema import Problem, key_line

    overrides = list(overrides)
    return [Problem(str(path), key_line(source, key, overrides), key, message) for key, message in found]
