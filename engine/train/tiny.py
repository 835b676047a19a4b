"""The tiny offline Stable Diffusion 1.x model: every test and the demo train on it, with no network.

It has SD 1.x's architecture (CLIP text encoder, UNet with cross-attention, KL autoencoder, DDPM
schedule with SD's betas) at a size a laptop CPU trains in seconds, and it is built in code,
deterministically from a seed:

- the tokenizer is a CLIP BPE tokenizer over a small vocabulary written here (the demo's words are
  single tokens; any other word still tokenizes, letter by letter);
- the VAE is constructed analytically (no training): a latent pixel holds the colour of a 4x4 patch
  plus an edge signal, so decoded latents are pictures rather than noise (64x64 px images, 16x16x4
  latents; reconstructions are exact in colour, blocky at edges);
- the UNet is pretrained at build time on the same kind of pictures, with captions that name the shape
  but never the colour. The base therefore draws shapes in arbitrary colours and ignores colour words;
  a fine-tune on the demo ("a red circle ...") has something visible to teach.

`ensure_tiny()` builds once into a cache folder and returns the diffusers folder; `save_tiny()` writes
a diffusers folder and optionally an original-SD single-file checkpoint.
`python -m engine.train.tiny OUT_DIR [--single-file PATH]` does the latter from a shell.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

# Bump when anything that changes the built weights changes: cached builds are keyed by it.
TINY_VERSION = "5"
IMAGE_SIZE = 64
LATENT_SIZE = 16  # the VAE downsamples by 4 (SD's by 8): 64 px pictures, 16x16x4 latents

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.90, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.00, 0.55, 0.75),
    "cyan": (0.10, 0.85, 0.90),
    "white": (1.00, 1.00, 1.00),
    "black": (0.00, 0.00, 0.00),
    "magenta": (0.90, 0.10, 0.85),
}
SHAPES = ("circle", "square", "triangle", "star", "ring")

# Whole-word tokens. The demo's captions and goals use these; the rest are common prompt words.
WORDS = sorted(
    set(COLOURS)
    | set(SHAPES)
    | set("""a an the of photo drawing picture image shape shapes on in with and at background plain
    sks toy dog cat painting style art big small large tiny bright dark light pale colour color
    coloured colored circles squares triangles stars rings centre center left right top bottom
    corner middle two three one it is by for to from over under near next simple flat object
    high quality detailed render sketch cartoon""".split())
)

DEFAULT_CACHE = Path("~/.cache/tunelab") / f"tiny-sd-v{TINY_VERSION}"

# Build-time UNet training budget; chosen so a 2-core CPU builds in about a minute. The VAE is
# constructed, not trained (`_analytic_vae`).
UNET_STEPS = 400
UNET_BATCH = 16
UNET_LR = 2e-3
UNET_MIN_SNR = 5.0
UNET_POOL = 512  # pictures encoded once; UNet batches are drawn from these latents


# ---------------------------------------------------------------------------------------------
# Procedural pictures: coloured shapes on plain backgrounds.


def draw_shapes(
    n: int, generator: torch.Generator, *, size: int = IMAGE_SIZE
) -> tuple[torch.Tensor, list[str], list[str]]:
    """`n` pictures of one coloured shape on a plain background, as (n, 3, size, size) in 0..1.

    Returns the images, the shape names and the colour names of the shapes. Edges are anti-aliased over about a pixel, like PIL drawings resized down.
    """
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[c] for c in names])
    shape_idx = torch.randint(len(SHAPES), (n,), generator=generator)
    fg_idx = torch.randint(len(names), (n,), generator=generator)
    # Backgrounds are light tints (grey, cream, pale blue...), as in the demo project.
    bg = 0.80 + 0.16 * torch.rand(n, 3, generator=generator)
    centre = 0.5 * size + (torch.rand(n, 2, generator=generator) - 0.5) * 0.3 * size
    radius = (0.18 + 0.14 * torch.rand(n, generator=generator)) * size

    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32) + 0.5,
        torch.arange(size, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    dx = xs[None] - centre[:, 0, None, None]
    dy = ys[None] - centre[:, 1, None, None]
    r = radius[:, None, None]
    dist = torch.sqrt(dx * dx + dy * dy)
    # Signed distance-like fields, positive inside.
    circle = r - dist
    square = 0.85 * r - torch.maximum(dx.abs(), dy.abs())
    # Upward triangle: inside all three half planes (edge normals at -90, 30, 150 degrees).
    tri = torch.stack(
        [
            0.5 * r - (dx * math.cos(a) + dy * math.sin(a))
            for a in (math.radians(90), math.radians(-30), math.radians(210))
        ]
    ).amin(0)
    theta = torch.atan2(dy, dx) + math.pi / 2
    phase = torch.remainder(theta * 5 / (2 * math.pi), 1.0)
    star_r = r * (0.45 + 0.55 * (2 * (phase - 0.5)).abs())
    star = star_r - dist
    ring = 0.22 * r - (dist - 0.75 * r).abs()
    fields = torch.stack([circle, square, tri, star, ring], 1)  # n, 5, H, W
    field = fields[torch.arange(n), shape_idx]
    mask = (field + 0.5).clamp(0, 1)[:, None]

    fg = palette[fg_idx][:, :, None, None]
    bg = bg[:, :, None, None]
    images = fg * mask + bg * (1 - mask)
    return images, [SHAPES[i] for i in shape_idx.tolist()], [names[i] for i in fg_idx.tolist()]


# ---------------------------------------------------------------------------------------------
# Tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-unicode table (the same one GPT-2 uses).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    # The BPE rule CLIP uses: repeatedly merge the adjacent pair with the lowest rank.
    while len(symbols) > 1:
        pairs = [(ranks.get(p, math.inf), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def tokenizer_files(words: list[str] = WORDS) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt contents for a CLIP tokenizer where each of `words` is one token.

    The base alphabet is CLIP's: all 256 byte symbols, plain and word-final (`x</w>`), so any text
    tokenizes. Merges are added word by word, always joining the first two symbols left over, at the
    lowest priority so far: a later merge never fires inside an earlier word, which therefore stays
    one token.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    seen = set(vocab_list)
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols := _bpe(symbols, ranks)) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in seen:
                seen.add(pair[0] + pair[1])
                vocab_list.append(pair[0] + pair[1])
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    return vocab, [f"{a} {b}" for a, b in merges]


def build_tokenizer():
    """A `CLIPTokenizer` over `WORDS`, loaded from vocab/merges files written to a temporary folder."""
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_files()
    with tempfile.TemporaryDirectory(prefix="tunelab-tok-") as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        Path(tmp, "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


# ---------------------------------------------------------------------------------------------
# Components


def _unet_config() -> dict:
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Cross-attention at 8x8 and in the middle only: half the cost of attention at 16x16, and
        # colour (what a fine-tune binds to words here) is a global property of these pictures.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def _vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        # 4 groups of >= 4 channels: the analytic construction (`_analytic_vae`) needs them.
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
    )


def _text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _scheduler_config() -> dict:
    # SD 1.5's scheduler_config.json: a PNDM sampler over the DDPM training schedule. Trainers read
    # the schedule with `DDPMScheduler.from_config`, as they do for the real SD 1.5.
    return dict(
        skip_prk_steps=True,
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seeded, deterministic CPU torch for the duration of a build; global settings restored after."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    # One thread: the thread count changes the order of float reductions, so fixing it makes a build
    # reproducible on any machine; and several OpenMP threads on a busy CPU (test workers, a run)
    # spin against each other and can be 20x slower than one.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_rng_state(rng_state)


def build_tiny_pipeline(seed: int = 0, pretrain: bool = True, *, log=None):
    """The tiny SD 1.x pipeline (`StableDiffusionPipeline`, no safety checker), built from `seed`.

    `pretrain=False` skips the build-time training (random weights; for fast structural tests).
    `log`, if given, is called with progress lines.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as dlogging
    from transformers import CLIPTextModel

    log = log or (lambda _msg: None)
    with _deterministic(seed) as gen:
        tokenizer = build_tokenizer()
        text_encoder = CLIPTextModel(_text_config(tokenizer))
        vae = AutoencoderKL(**_vae_config())
        unet = UNet2DConditionModel(**_unet_config())
        scheduler = PNDMScheduler(**_scheduler_config())
        if pretrain:
            t0 = time.monotonic()
            _pretrain_vae(vae, gen, log)
            log(f"vae built in {time.monotonic() - t0:.1f}s")
            t0 = time.monotonic()
            _pretrain_unet(unet, vae, text_encoder, tokenizer, scheduler, gen, log)
            log(f"unet trained in {time.monotonic() - t0:.1f}s")
        for model in (text_encoder, vae, unet):
            model.eval().requires_grad_(False)
        verbosity = dlogging.get_verbosity()
        dlogging.set_verbosity_error()  # "you have disabled the safety checker" is expected here
        try:
            pipe = StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        finally:
            dlogging.set_verbosity(verbosity)
    return pipe


# The VAE is built analytically rather than trained (training one from scratch to a useful quality
# takes minutes on a CPU). Every resnet and attention block starts as the identity (its last layer
# zeroed); conv_in / the downsamplers compute 4x4 patch averages of the colour in an opponent colour
# basis plus one edge channel (left minus right brightness); the decoder inverts the colour basis
# and upsamples. The only non-linear layers left, GroupNorm + SiLU before each conv_out, are made
# transparent: each signal s sits in its own group next to -s, K and -K, so the group mean is 0 and
# the variance ~K^2 does not depend on the picture; a large bias then keeps SiLU in its linear range.
# Reconstructions are therefore 4x4-blocky but exact in colour (mean abs error ~0.014 on shapes),
# and latents are smooth colour maps that a small UNet learns to draw quickly.
_K = 100.0  # constant companions in each norm group
_B = 20.0  # SiLU(x + _B) == x + _B to within 1e-7 for |x| <= 1
_LOGVAR = -9.0  # posterior std ~0.011 in latent units: sampling is nearly the mean
# Orthonormal opponent colour basis (rows): brightness, red-green, yellow-blue.
_COLOUR_BASIS = torch.tensor(
    [[1 / math.sqrt(3)] * 3, [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
     [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]]
)


def _slots(channels: int, groups: int, signal: int) -> tuple[int, int, int, int]:
    """Channel indices (s, -s, K, -K) of `signal` in a layer of `channels` split into `groups`."""
    size = channels // groups
    return signal * size, signal * size + 1, signal * size + 2, signal * size + 3


def _identity_blocks(model) -> None:
    """Zero the last layer of every resnet/attention branch; 1x1 shortcuts carry the slot layout."""
    groups = model.config.norm_num_groups
    for module in model.modules():
        name = type(module).__name__
        if name == "ResnetBlock2D":
            torch.nn.init.zeros_(module.conv2.weight)
            torch.nn.init.zeros_(module.conv2.bias)
            if module.conv_shortcut is not None:
                w = torch.zeros_like(module.conv_shortcut.weight)
                c_out, c_in = w.shape[:2]
                for sig in range(groups):
                    for a, b in zip(_slots(c_in, groups, sig), _slots(c_out, groups, sig)):
                        w[b, a, 0, 0] = 1.0
                module.conv_shortcut.weight.data.copy_(w)
                torch.nn.init.zeros_(module.conv_shortcut.bias)
        elif name == "Attention":
            torch.nn.init.zeros_(module.to_out[0].weight)
            torch.nn.init.zeros_(module.to_out[0].bias)


def _transparent_norm(norm, n_signals: int) -> None:
    """GroupNorm(+SiLU after it) that outputs s + _B for each signal slot and 0 elsewhere."""
    c, groups = norm.num_channels, norm.num_groups
    size = c // groups
    gamma = torch.zeros(c)
    beta = torch.zeros(c)
    for sig in range(n_signals):
        s = _slots(c, groups, sig)[0]
        # normalised s = s / sqrt((2 s^2 + 2 K^2) / size) ~ s * sqrt(size / 2) / K
        gamma[s] = _K * math.sqrt(2 / size)
        beta[s] = _B
    norm.weight.data.copy_(gamma)
    norm.bias.data.copy_(beta)


def _set_slots_from(conv, groups: int, rows: torch.Tensor, src: list[int], tap=(1, 1)) -> None:
    """Make `conv` (centre tap) write signal i = rows[i] . x[src] into slots, with K companions."""
    w = torch.zeros_like(conv.weight)
    b = torch.zeros_like(conv.bias)
    c_out = w.shape[0]
    for sig in range(rows.shape[0]):
        s, neg, k, negk = _slots(c_out, groups, sig)
        for j, ch in enumerate(src):
            w[s, ch, tap[0], tap[1]] = rows[sig, j]
            w[neg, ch, tap[0], tap[1]] = -rows[sig, j]
        b[k], b[negk] = _K, -_K
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(b)


def _read_slots_out(conv, groups: int, n_signals: int) -> None:
    """Output channel k of `conv` (3x3) copies signal k's first slot at the centre tap, nothing else."""
    w = torch.zeros_like(conv.weight)
    for sig in range(n_signals):
        w[sig, _slots(conv.in_channels, groups, sig)[0], 1, 1] = 1.0
    conv.weight.data.copy_(w)


def _analytic_vae(vae) -> None:
    enc, dec = vae.encoder, vae.decoder
    groups = vae.config.norm_num_groups
    if groups < 4 or any(c // groups < 4 for c in vae.config.block_out_channels):
        raise ValueError("the analytic VAE needs >= 4 norm groups of >= 4 channels")
    _identity_blocks(vae)
    # Encoder: RGB -> opponent colours in signal slots 0..2 (slot 3, the edge, starts empty).
    _set_slots_from(enc.conv_in, groups, _COLOUR_BASIS, [0, 1, 2])
    b = enc.conv_in.bias.data
    k3 = _slots(enc.conv_in.out_channels, groups, 3)
    b[k3[2]], b[k3[3]] = _K, -_K
    downs = [blk.downsamplers[0].conv for blk in enc.down_blocks if blk.downsamplers is not None]
    for level, conv in enumerate(downs):
        # Stride-2 conv, padded right/bottom: taps (0..1, 0..1) are the 2x2 input pixels.
        w = torch.zeros_like(conv.weight)
        c = w.shape[0]
        for sig in range(4):
            for ch in _slots(c, groups, sig):
                w[ch, ch, :2, :2] = 0.25
        if level == len(downs) - 1:
            # The edge channel: brightness of the left half minus the right half of the patch.
            s, neg = _slots(c, groups, 3)[:2]
            w[s, :, :, :] = 0
            w[neg, :, :, :] = 0
            bright = _slots(c, groups, 0)[0]  # slot 0 is brightness (already / sqrt 3)
            for ky in range(2):
                for kx, sign in ((0, 1.0), (1, -1.0)):
                    w[s, bright, ky, kx] = 0.5 * sign
                    w[neg, bright, ky, kx] = -0.5 * sign
        conv.weight.data.copy_(w)
        torch.nn.init.zeros_(conv.bias)
    _transparent_norm(enc.conv_norm_out, 4)
    _read_slots_out(enc.conv_out, groups, 4)
    enc.conv_out.bias.data.copy_(torch.tensor([-_B] * 4 + [_LOGVAR] * 4))
    for conv in (vae.quant_conv, vae.post_quant_conv):
        conv.weight.data.copy_(torch.eye(conv.weight.shape[0])[:, :, None, None])
        torch.nn.init.zeros_(conv.bias)
    # Decoder: latent -> RGB in slots 0..2 and the edge channel in slot 3 (for the fine-tune).
    inverse = torch.zeros(4, 4)
    inverse[:3, :3] = _COLOUR_BASIS.T
    inverse[3, 3] = 1.0
    _set_slots_from(dec.conv_in, groups, inverse, [0, 1, 2, 3])
    for blk in dec.up_blocks:
        if blk.upsamplers is not None:
            conv = blk.upsamplers[0].conv  # after nearest x2: identity keeps blocks, no border effects
            w = torch.zeros_like(conv.weight)
            for ch in range(w.shape[0]):
                w[ch, ch, 1, 1] = 1.0
            conv.weight.data.copy_(w)
            torch.nn.init.zeros_(conv.bias)
    _transparent_norm(dec.conv_norm_out, 3)
    _read_slots_out(dec.conv_out, groups, 3)
    dec.conv_out.bias.data.fill_(-_B)


def _pretrain_vae(vae, gen: torch.Generator, log) -> None:
    """Make `vae` the analytic patch-colour autoencoder; set its scaling factor to unit latent std."""
    _analytic_vae(vae)
    images, _, _ = draw_shapes(256, gen)
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    log(f"vae: analytic, latent std {latents.std():.3f}")


def _pretrain_unet(unet, vae, text_encoder, tokenizer, scheduler, gen, log) -> None:
    """Teach the UNet to draw shapes named by the caption, in colours the caption never names.

    Epsilon prediction on the DDPM schedule, like SD's own training, with captions such as
    "a circle" or "a drawing of a star": colour words never occur, so the base ignores them.
    """
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(scheduler.config)
    templates = ("a {}", "a {} shape", "a drawing of a {}", "a picture of a {}", "a {} on a plain background")
    caption_ids = {}
    with torch.no_grad():
        for shape in SHAPES:
            texts = [t.format(shape) for t in templates]
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            caption_ids[shape] = text_encoder(ids)[0]
        empty_ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                              return_tensors="pt").input_ids
        empty = text_encoder(empty_ids)[0]
    scale = vae.config.scaling_factor
    alphas_cumprod = noise_sched.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=UNET_LR, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=UNET_LR, total_steps=UNET_STEPS, pct_start=0.1)
    unet.train()
    with torch.no_grad():
        pool_images, pool_shapes, _ = draw_shapes(UNET_POOL, gen)
        pool = torch.cat([vae.encode(chunk * 2 - 1).latent_dist.mean for chunk in pool_images.split(64)]) * scale
    for step in range(UNET_STEPS):
        idx = torch.randint(UNET_POOL, (UNET_BATCH,), generator=gen)
        latents = pool[idx]
        shapes = [pool_shapes[i] for i in idx.tolist()]
        with torch.no_grad():
            pick = torch.randint(len(templates), (UNET_BATCH,), generator=gen).tolist()
            cond = torch.stack([caption_ids[s][i] for s, i in zip(shapes, pick)])
            # 10% unconditional, so classifier-free guidance has an unconditional branch to push from.
            drop = torch.rand(UNET_BATCH, generator=gen) < 0.1
            cond = torch.where(drop[:, None, None], empty.expand_as(cond), cond)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (UNET_BATCH,), generator=gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        # Min-SNR-5 weighting (Hang et al. 2023): the same quality in a fraction of the steps.
        snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
        weight = snr.clamp(max=UNET_MIN_SNR) / snr
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == UNET_STEPS - 1:
            log(f"unet step {step + 1}/{UNET_STEPS} loss {loss.item():.4f}")
    unet.eval()


# ---------------------------------------------------------------------------------------------
# Saving and the cache


def save_tiny(out_dir: str | os.PathLike, *, single_file: str | os.PathLike | None = None, seed: int = 0,
              pretrain: bool = True, log=None) -> Path:
    """Build the tiny model and write it as a diffusers folder (safetensors) at `out_dir`.

    With `single_file`, also write an original-SD (ldm key names) `.safetensors` checkpoint there,
    loadable with `StableDiffusionPipeline.from_single_file(path, config=out_dir)`.
    """
    out_dir = Path(out_dir)
    pipe = build_tiny_pipeline(seed, pretrain, log=log)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    if single_file is not None:
        from engine.train.models import save_single_file

        save_single_file(pipe.unet, pipe.vae, pipe.text_encoder, Path(single_file))
    return out_dir


def default_cache_dir() -> Path:
    env = os.environ.get("TUNELAB_CACHE")
    if env:
        return Path(env).expanduser() / f"tiny-sd-v{TINY_VERSION}"
    return DEFAULT_CACHE.expanduser()


def ensure_tiny(cache_dir: str | os.PathLike | None = None, *, seed: int = 0, log=None) -> Path:
    """The diffusers folder of the tiny model for `seed`, built into `cache_dir` on first use.

    The build happens in a temporary sibling folder that is renamed into place when complete, so a
    crash or a concurrent build never leaves a half-written model where a reader looks. A second call
    only checks that the folder exists.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"seed-{seed}"
    if (target / "model_index.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".seed-{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder (a test worker, a run) waits for this one
        if (target / "model_index.json").is_file():
            return target
        return _build_into(cache_dir, target, seed, log)


def _build_into(cache_dir: Path, target: Path, seed: int, log) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".seed-{seed}.", suffix=".building", dir=cache_dir))
    try:
        save_tiny(tmp / "model", seed=seed, log=log)
        try:
            os.rename(tmp / "model", target)
        except OSError:
            # Another process finished first; its build is identical (same seed, same code).
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.train.tiny",
        description="Build the tiny offline Stable Diffusion 1.x model as a diffusers folder.",
    )
    parser.add_argument("out_dir", type=Path, help="diffusers folder to write")
    parser.add_argument("--single-file", type=Path, help="also write an original-SD .safetensors here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pretrain", action="store_true",
                        help="skip the build-time training: random weights, for structural tests")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    save_tiny(args.out_dir, single_file=args.single_file, seed=args.seed, pretrain=not args.no_pretrain,
              log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"wrote {args.out_dir} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
