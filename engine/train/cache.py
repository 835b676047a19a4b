"""The latent and text-embedding cache under the project's `.cache/` (safe to delete).

When the VAE is frozen, each image's VAE posterior (mean and log-variance, so training still samples
from it) is computed once and stored in `.cache/latents/`, keyed by the image's content hash and the
transform: resolution, crop, flip variants and the VAE's identity (a fingerprint of its weights). With
`data.flip`, both the plain and the mirrored variant are stored and each step picks one. With
`data.crop = "random"` nothing is cached: every step needs a fresh crop.

When the text encoder is frozen, each distinct caption's embedding (and the empty caption's, for caption
dropout) is stored in `.cache/text/`, keyed by the caption and the text encoder's and tokenizer's identity.

Files are safetensors written atomically, so runs sharing a project reuse each other's work and a
crash never leaves a half-written entry. For the epoch loop everything is stacked into one tensor on
the training device.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import torch
from safetensors.torch import load, save

from engine import atomic
from engine.train.data import DECODE_ERRORS, Example, decode_error_reason, load_image, tokenize
from engine.train.interrupt import raise_if_stop_requested

CACHE_VERSION = "1"
PIXELS_VERSION = "2"  # how a file's pixels are read (engine.pixels); 2: transparency over white
ENCODE_BATCH = 8


def module_fingerprint(module: torch.nn.Module) -> str:
    """A cheap identity of a model's weights: names, shapes, dtypes and a strided sample of each tensor."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 512)
        h.update(flat[::step][:512].to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LatentCache:
    def __init__(self, root: Path, vae: Any, *, resolution: int, flip: bool, dtype: torch.dtype):
        self.root = Path(root) / "latents"
        self.vae = vae
        self.resolution = resolution
        self.variants = (False, True) if flip else (False,)
        self.dtype = dtype
        self.vae_id = module_fingerprint(vae)

    def key(self, content_hash: str) -> str:
        spec = (f"v{CACHE_VERSION}:{content_hash}:{self.resolution}:center:{len(self.variants)}:{self.vae_id}"
                f":px{PIXELS_VERSION}")
        return hashlib.sha256(spec.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load_all(self, examples: list[Example], device: torch.device, *, write: bool = True,
                 on_progress: Callable[[int, int], None] | None = None) -> LatentTable:
        """The examples' posteriors stacked on `device`, how many were computed, and the examples that
        could not be read or decoded (a header can be sound while the pixel data is not)."""
        out: list[torch.Tensor | None] = [None] * len(examples)
        keys: list[str | None] = [None] * len(examples)
        failed: dict[int, str] = {}
        missing = []
        for i, e in enumerate(examples):
            try:
                keys[i] = self.key(file_hash(e.path))
            except OSError as err:
                failed[i] = f"cannot read: {err.strerror or err}"
                continue
            try:
                out[i] = load(self.path(keys[i]).read_bytes())["params"]
            except Exception:  # noqa: BLE001 - a missing or bad entry is recomputed
                missing.append(i)
        computed = 0
        for start in range(0, len(missing), ENCODE_BATCH):
            raise_if_stop_requested()
            chunk = missing[start:start + ENCODE_BATCH]
            params, errors = self.encode([examples[i] for i in chunk])
            for i, p, err in zip(chunk, params, errors):
                if p is None:
                    failed[i] = err
                    continue
                out[i] = p
                computed += 1
                if write:
                    path = self.path(keys[i])  # type: ignore[arg-type]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic.write_bytes(path, save({"params": p.contiguous()}))
            if on_progress:
                on_progress(min(start + ENCODE_BATCH, len(missing)), len(missing))
        kept = [i for i in range(len(examples)) if i not in failed]
        params = torch.stack([out[i] for i in kept]).to(device) if kept else None  # type: ignore[misc]
        return LatentTable(params, computed, kept, [(examples[i], failed[i]) for i in sorted(failed)])

    @torch.no_grad()
    def encode(self, examples: list[Example]) -> tuple[list[torch.Tensor | None], list[str]]:
        """Per example (variants, 2C, h, w) float32 on the CPU, or None and the reason it failed."""
        device = next(self.vae.parameters()).device
        results: list[torch.Tensor | None] = [None] * len(examples)
        errors = [""] * len(examples)
        pixels: list[list[torch.Tensor]] = []
        good = []
        for i, e in enumerate(examples):
            try:
                pixels.append([load_image(e.path, self.resolution, flip=flip) for flip in self.variants])
                good.append(i)
            except DECODE_ERRORS as err:
                errors[i] = decode_error_reason(err)
        if not good:
            return results, errors
        per_variant = []
        for v in range(len(self.variants)):
            batch = torch.stack([p[v] for p in pixels])
            dist = self.vae.encode(batch.to(device, self.dtype)).latent_dist
            per_variant.append(dist.parameters.float().cpu())
        for i, p in zip(good, torch.stack(per_variant, dim=1)):
            results[i] = p
        return results, errors


@dataclass
class LatentTable:
    """What `LatentCache.load_all` found: `params` (kept examples, variants, 2C, h, w) on the device,
    or None when nothing could be decoded; `kept` indexes the examples it covers, in order."""

    params: torch.Tensor | None
    computed: int
    kept: list[int]
    failed: list[tuple[Example, str]]


class TextCache:
    def __init__(self, root: Path, text_encoder: Any, tokenizer: Any, *, dtype: torch.dtype):
        self.root = Path(root) / "text"
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.identity = module_fingerprint(text_encoder) + ":" + hashlib.sha256(
            repr(sorted(tokenizer.get_vocab().items())[:5000]).encode()).hexdigest()[:16]

    def key(self, caption: str) -> str:
        return hashlib.sha256(f"v{CACHE_VERSION}:{self.identity}:{caption}".encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load_all(self, captions: list[str], device: torch.device, *, write: bool = True) -> tuple[torch.Tensor, int]:
        """(len(captions), 77, D) on `device`, and how many were computed."""
        out: list[torch.Tensor | None] = [None] * len(captions)
        missing = []
        for i, c in enumerate(captions):
            try:
                out[i] = load(self.path(self.key(c)).read_bytes())["embedding"]
            except Exception:  # noqa: BLE001 - missing or bad entries are recomputed
                missing.append(i)
        for start in range(0, len(missing), 64):
            raise_if_stop_requested()
            chunk = missing[start:start + 64]
            embs = self.encode([captions[i] for i in chunk])
            for i, e in zip(chunk, embs):
                out[i] = e
                if write:
                    p = self.path(self.key(captions[i]))
                    p.parent.mkdir(parents=True, exist_ok=True)
                    atomic.write_bytes(p, save({"embedding": e.contiguous()}))
        return torch.stack(out).to(device), len(missing)  # type: ignore[arg-type]

    @torch.no_grad()
    def encode(self, captions: list[str]) -> list[torch.Tensor]:
        device = next(self.text_encoder.parameters()).device
        ids = tokenize(self.tokenizer, captions).to(device)
        return list(self.text_encoder(ids)[0].float().cpu())
