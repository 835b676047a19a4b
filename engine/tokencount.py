"""Exact caption token counts with a base model's own CLIP tokenizer, without torch or transformers.

Stable Diffusion's text encoder reads 77 tokens: a start token, 75 of the caption and an end token;
the trainer cuts off the rest, so words past the 75th never reach the model. `engine.captions`
estimates the count without a tokenizer (the TUI's live hint); `tunelab check PROJECT CONFIG` counts
exactly with the tokenizer of the config's `model.base` (`engine.basemodel.tokenizer_folder`).

The `tokenizers` library (Rust, imported in ~15 ms) does the work. A tokenizer folder holds either a
`tokenizer.json` (what transformers 5 saves) or CLIP's `vocab.json` + `merges.txt` (the SD 1.x/2.x
repos on the hub); the latter is assembled exactly as transformers' `CLIPTokenizer` assembles it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

CLIP_CONTENT_TOKENS = 75  # 77 minus the start and end tokens

# transformers.models.clip.tokenization_clip.CLIPTokenizer's pre-tokenizer pattern.
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TokenizerError(Exception):
    """A tokenizer folder that cannot be read; the message names the file."""


class TokenCounter:
    """Callable: captions → their content-token counts (start/end tokens not counted, nothing cut off)."""

    def __init__(self, tokenizer, folder: Path):
        self._tok = tokenizer
        self.folder = folder
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def add_tokens(self, tokens: Sequence[str]) -> None:
        """Count each of `tokens` as one token, as the trainer's tokenizer does once textual inversion
        added its placeholder tokens."""
        self._tok.add_tokens(list(tokens))

    def __call__(self, texts: Sequence[str]) -> list[int]:
        unique = list(dict.fromkeys(texts))  # templated and fixed captions repeat; count each once
        counts = {t: len(e.ids) for t, e in zip(unique, self._tok.encode_batch(unique, add_special_tokens=False))}
        return [counts[t] for t in texts]


def load_counter(folder: str | os.PathLike) -> TokenCounter:
    """A counter for the tokenizer in `folder` (a diffusers `tokenizer/` folder). Raises TokenizerError."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    folder = Path(folder)
    fast = folder / "tokenizer.json"
    if fast.is_file():
        try:
            return TokenCounter(Tokenizer.from_file(str(fast)), folder)
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exception for a bad file
            raise TokenizerError(f"{fast}: not a tokenizer file ({e})") from None
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if not (vocab_file.is_file() and merges_file.is_file()):
        raise TokenizerError(f"{folder}: no tokenizer.json, and no vocab.json + merges.txt")
    try:
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        lines = merges_file.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{folder}: cannot read vocab.json / merges.txt ({e})") from None
    merges = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#version"):
            merges.append((parts[0], parts[1]))
    unk = _special(folder, "unk_token", "<|endoftext|>")
    try:
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="</w>", fuse_unk=False, unk_token=unk))
    except Exception as e:  # noqa: BLE001
        raise TokenizerError(f"{folder}: vocab.json / merges.txt do not make a BPE tokenizer ({e})") from None
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return TokenCounter(tok, folder)


def _special(folder: Path, key: str, default: str) -> str:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return default
