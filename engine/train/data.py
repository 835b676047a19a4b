"""Training data: project scan → examples → decode → resize/crop/flip → micro-batches, in a seeded order.

- `load_examples` turns the project scan into training and validation examples (concepts × repeats,
  captions); unusable images are skipped and returned so the trainer can list them.
- `load_image` decodes one image to a (3, res, res) tensor in [-1, 1]: the short side is resized to the
  resolution, the long side cropped (center, or random with a seeded generator), optionally flipped.
- `epoch_plan` is the data order: a permutation seeded by (seed, epoch), each image repeated by its
  concept's repeats, sharded over processes (padded so all get the same count), cut into micro-batches.
  Being a pure function of (seed, epoch), resume needs only the position in it.
- `TrainingData` holds the examples and, when caching, the latent distributions and text embeddings on
  the device; `micro_batch` picks flip / caption dropout / crop per example from a seeded generator, the
  same draws whether or not anything is cached.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.config import RunConfig

# What decoding a file whose header passed the scan can still raise: corrupt or truncated pixel data
# (OSError), bad chunk contents (ValueError, SyntaxError, EOFError), a bomb the header hid.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode_error_reason(err: BaseException) -> str:
    return f"cannot decode the pixel data: {err}" if str(err) else f"cannot decode the pixel data ({type(err).__name__})"


def undecodable(examples: list["Example"], resolution: int) -> list[tuple["Example", str]]:
    """Examples whose pixels cannot be decoded, with the reason: the header-only project scan cannot
    tell. Uncached runs call this once up front, so a bad file is skipped rather than failing a step."""
    bad = []
    for e in examples:
        try:
            load_image(e.path, resolution)
        except DECODE_ERRORS as err:
            bad.append((e, decode_error_reason(err)))
    return bad


@dataclass
class Example:
    path: Path
    rel: str
    caption: str
    concept: str
    repeats: int = 1


@dataclass
class ExampleSet:
    train: list[Example]
    validation: list[Example]
    skipped: list[dict[str, str]]  # {"path", "reason"} of unusable images


def load_examples(project_dir: Path, cfg: RunConfig) -> ExampleSet:
    """Scan the project the way `tunelab check` does and split off the validation images."""
    from engine.project import Concept, load_project_file, scan_project

    data = cfg.data
    pf = load_project_file(project_dir)
    ds = scan_project(project_dir, data.resolution, project=pf, concepts=list(data.concepts) or None)
    items = list(ds.items)
    held_out: list[Any] = []
    folder = data.validation_folder.strip().strip("/")
    if folder:
        prefix = folder.rstrip("/") + "/"
        held_out = [i for i in items if i.rel.startswith(prefix)]
        items = [i for i in items if not i.rel.startswith(prefix)]
        if not held_out:
            vpf = dataclasses.replace(pf, concepts=[Concept(folder=folder)])
            held_out = list(scan_project(project_dir, data.resolution, project=vpf, use_cache=False).items)
    skipped = [{"path": i.rel, "reason": "; ".join(i.flags)} for i in items + held_out if not i.usable]
    examples = [_example(i) for i in items if i.usable]
    validation = [_example(i) for i in held_out if i.usable]
    if not folder and data.validation_split > 0 and len(examples) > 1:
        examples, validation = split_validation(examples, data.validation_split, cfg.train.seed)
    return ExampleSet(examples, validation, skipped)


def _example(item: Any) -> Example:
    return Example(path=Path(item.path), rel=item.rel, caption=item.caption or "", concept=item.concept,
                   repeats=max(1, int(item.repeats)))


def fingerprint(examples: list[Example]) -> str:
    """What the data order depends on (paths, captions, repeats), so a resume can tell it changed."""
    h = hashlib.sha256()
    for e in examples:
        h.update(f"{e.rel}\0{e.caption}\0{e.repeats}\n".encode())
    return h.hexdigest()[:16]


def split_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out `fraction` of the images (at least one, never all), chosen by a seeded hash of their
    path: the same images for the same seed, whatever order the scan returned."""
    def rank(e: Example) -> str:
        return hashlib.sha256(f"{seed}:{e.rel}".encode()).hexdigest()

    n_val = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    chosen = {e.rel for e in sorted(examples, key=rank)[:n_val]}
    return [e for e in examples if e.rel not in chosen], [e for e in examples if e.rel in chosen]


# ---------------------------------------------------------------------------------------------
# Pixels


def load_image(path: Path, resolution: int, *, crop: str = "center", flip: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(3, res, res) float32 in [-1, 1]. Random crop offsets come from `generator`."""
    import numpy as np
    from PIL import Image, ImageOps

    from engine.pixels import to_rgb

    with Image.open(path) as im:
        im = to_rgb(ImageOps.exif_transpose(im))  # 16-bit by its high byte, transparency over white
        w, h = im.size
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        if crop == "random":
            x0 = int(torch.randint(0, nw - resolution + 1, (1,), generator=generator))
            y0 = int(torch.randint(0, nh - resolution + 1, (1,), generator=generator))
        else:
            x0, y0 = (nw - resolution) // 2, (nh - resolution) // 2
        im = im.crop((x0, y0, x0 + resolution, y0 + resolution))
        arr = np.asarray(im, dtype=np.uint8).copy()
    pixels = torch.from_numpy(arr).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    return torch.flip(pixels, dims=[2]) if flip else pixels


# ---------------------------------------------------------------------------------------------
# Order


def epoch_plan(repeats: list[int], epoch: int, seed: int, *, rank: int, world: int, batch_size: int) -> list[list[int]]:
    """Micro-batches (lists of example indices) of one process for one epoch (1-based)."""
    pool = torch.tensor([i for i, r in enumerate(repeats) for _ in range(r)], dtype=torch.long)
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))]
    per_process = math.ceil(len(order) / world)
    if per_process * world > len(order):  # pad by wrapping, like DistributedSampler
        order = torch.cat([order, order[: per_process * world - len(order)]])
    mine = order[rank::world].tolist()
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def steps_per_epoch(n_images: int, *, world: int, batch_size: int, accumulation: int) -> int:
    per_process = math.ceil(n_images / world)
    return math.ceil(math.ceil(per_process / batch_size) / accumulation)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Seed of the generators for one micro-batch: randomness is a function of where training is, so
    resuming at a step draws exactly what an uninterrupted run would have drawn."""
    return (seed * 1_000_003 + step * 4_099 + micro * 131 + rank * 7) % (2 ** 63)


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    size: int
    latent_params: torch.Tensor | None = None   # cached: (B, 2C, h, w) mean and logvar of the VAE posterior
    pixels: torch.Tensor | None = None          # uncached: (B, 3, H, W) in [-1, 1]
    text_embeddings: torch.Tensor | None = None  # cached: (B, 77, D)
    input_ids: torch.Tensor | None = None       # uncached: (B, 77)
    captions: list[str] = dataclasses.field(default_factory=list)
    concepts: list[str] = dataclasses.field(default_factory=list)


class TrainingData:
    """Examples plus whatever is cached for them: on the training device, or in pinned host memory
    when the tables would not fit comfortably (see `prepare.resident`)."""

    def __init__(self, examples: list[Example], cfg: RunConfig, tokenizer: Any, device: torch.device):
        self.examples = examples
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.device = device
        self.latent_params: torch.Tensor | None = None  # (N, variants, 2C, h, w)
        self.text_table: torch.Tensor | None = None     # (captions, 77, D), row 0 is the empty caption
        self.text_index: list[int] = []                 # example → row in text_table
        self.cache_report: dict[str, Any] = {}

    @property
    def repeats(self) -> list[int]:
        return [e.repeats for e in self.examples]

    @property
    def images_per_epoch(self) -> int:
        return sum(self.repeats)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A table kept in host memory: pin the batch so the copy does not wait for the GPU."""
        if x.device == self.device or (x.device.type == self.device.type and self.device.index is None):
            return x
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def micro_batch(self, indices: list[int], generator: torch.Generator) -> Batch:
        data = self.cfg.data
        drop, flip, captions = [], [], []
        pixels = []
        for i in indices:
            u = torch.rand(2, generator=generator)
            drop.append(bool(u[0] < data.caption_dropout))
            flip.append(bool(data.flip and u[1] < 0.5))
            captions.append("" if drop[-1] else self.examples[i].caption)
            if self.latent_params is None:
                pixels.append(load_image(self.examples[i].path, data.resolution, crop=data.crop, flip=flip[-1],
                                         generator=generator))
        batch = Batch(size=len(indices), captions=captions, concepts=[self.examples[i].concept for i in indices])
        # Rows are picked with Python ints (views) and stacked on the device: an index tensor built
        # on the host would be a host-to-device copy, which on CUDA waits for the queued GPU work.
        if self.latent_params is not None:
            last_variant = self.latent_params.shape[1] - 1
            batch.latent_params = torch.stack([self.latent_params[i, min(int(f), last_variant)]
                                               for i, f in zip(indices, flip)])
            batch.latent_params = self._to_device(batch.latent_params)
        else:
            batch.pixels = torch.stack(pixels).to(self.device)
        if self.text_table is not None:
            batch.text_embeddings = torch.stack([self.text_table[0 if d else self.text_index[i]]
                                                 for i, d in zip(indices, drop)])
            batch.text_embeddings = self._to_device(batch.text_embeddings)
        else:
            batch.input_ids = tokenize(self.tokenizer, captions).to(self.device)
        return batch


def overlong_captions(examples: list[Example], tokenizer: Any) -> list[tuple[str, int]]:
    """(file, caption tokens) of each example whose caption `tokenize` cuts off: more content tokens
    than `tokenizer.model_max_length` minus the start and end tokens. Counted with the run's own
    tokenizer, after the method changed the captions (instance prompt, placeholder tokens)."""
    limit = tokenizer.model_max_length - 2
    unique = sorted({e.caption for e in examples if e.caption})
    if not unique:
        return []
    ids = tokenizer(unique, add_special_tokens=False, truncation=False).input_ids
    counts = {c: len(i) for c, i in zip(unique, ids)}
    return [(e.rel, counts[e.caption]) for e in examples if e.caption and counts[e.caption] > limit]


def truncation_warning(over: list[tuple[str, int]], tokenizer: Any, shown: int = 5) -> str:
    """One sentence for the `warning` event: how many, the first few files, what happens to them."""
    names = ", ".join(f"{rel} ({n} tokens)" for rel, n in over[:shown]) + (" …" if len(over) > shown else "")
    return (f"{len(over)} caption(s) are longer than the text encoder reads and are truncated to "
            f"{tokenizer.model_max_length} CLIP tokens ({tokenizer.model_max_length - 2} of caption text; the "
            f"words past that never reach the model): {names}; shorten them (tunelab check lists them all)")


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def sample_latents(params: torch.Tensor, generator: torch.Generator | None, scaling: float,
                   shift: float | None = None) -> torch.Tensor:
    """Draw from the VAE posterior given its (mean, logvar) parameters, scaled for the UNet. With no
    generator, the mean (validation is deterministic)."""
    mean, logvar = params.float().chunk(2, dim=1)
    if generator is None:
        latents = mean
    else:
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        latents = mean + std * noise
    if shift is not None:
        latents = latents - shift
    return latents * scaling
