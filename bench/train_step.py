"""Training throughput: images/s, peak memory and MFU per training step; seconds per sample image.

CPU mode (default): the real trainer (`engine.train.loop.train`) on the tiny model, LoRA and full, with
and without latent/text caching, on a generated project (img/s of `train_step`, process CPU seconds
per image, peak RSS), and seconds per sample image through the trainer's renderer (DPM++ 20 steps,
batch 8 and 1). `--techniques`: the step below on the tiny model's shapes, one technique at a time.

GPU mode (`--gpu`, needs CUDA; "run this on a GPU box"): an SD 1.5-sized UNet (its public config,
random weights, no download) at 512 px, LoRA (rank 16, attention projections) and full, batch 1/8/32/64,
each both *tuned* (cached latents/text on the device, bf16 autocast, channels_last, fused AdamW, SDPA)
and *naive* (VAE + text encode every step, fp32, default layout, per-tensor AdamW) in the same run;
img/s, `torch.cuda.max_memory_allocated`, MFU = img/s x FLOPs per image / the device's bf16 peak; one
technique at a time at the headline batch; seconds per sample image (SD 1.5 UNet + VAE, DPM++ 20
steps, batch 1 and 8); the real trainer (`engine.train.loop.train`, a fresh process per case) on an SD
1.5-shaped diffusers folder with random weights, LoRA and full at batch 32 and 8, bf16, 512 px; a
30-epoch run with default settings and its sampling share; `--compile` adds regional torch.compile.
Most important first, written after every case: `--budget-s` stops starting cases at a deadline (a
lent machine's per-call limit) and `--continue FILE` measures only what an earlier file lacks
(`bench/gpu_session.sh` is the whole GPU session as one command). `--gpu-smoke` runs the GPU code on
the CPU with miniature models; `--report FILE` prints a result file's tables.

    python bench/train_step.py [--steps 12]                 # CPU
    python bench/train_step.py --techniques                  # CPU, one technique at a time
    python bench/train_step.py --gpu [--compile]             # GPU box

Results are written as JSON to bench/results/ (device, driver, torch/diffusers versions, the exact
command, the load) and summarised on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


def trainer_case(root: Path, name: str, *, method: str, cache: bool, steps: int, resolution: int, batch: int,
                 base: str = "tiny", mixed_precision: str = "no", images: int = 8, peak: float | None = None) -> dict:
    """Time `train_step` inside the real trainer (`engine.train.loop.train`): whatever the trainer does
    (its caches, dtypes, memory layout, optimiser, no host syncs) is what is measured, on whatever
    device accelerate picks. Also the loop's wall time per step, which shows a data path that cannot
    keep up (it includes per-epoch work: epoch events, validation if any)."""
    from engine.train.loop import train
    from tests.train_fixtures import make_project, make_run, tiny_config

    project = make_project(root / name, n=images, size=resolution + 8, goals=False)
    cfg = tiny_config(method, **{"data.resolution": resolution, "train.batch_size": batch, "train.epochs": 100000,
                                 "train.log_every": steps, "data.cache_latents": cache, "data.cache_text": cache,
                                 "model.base": base, "train.mixed_precision": mixed_precision})
    if base != "tiny":
        cfg.lora.rank, cfg.lora.alpha = 16, 16.0
    cfg.sample.at_start = False
    cfg.save.last = False
    run = make_run(project, cfg)
    # The trainer's own loop with `train_step` timed: wall and process CPU seconds per step, after a
    # warm-up of `steps` steps. On a shared machine wall time swings with other load; CPU seconds per
    # image hardly move, so both are reported (img/s on idle cores ~ threads / cpu_s_per_image).
    import torch

    from engine.train import loop

    cuda = torch.cuda.is_available()
    timings: list[tuple[float, float]] = []
    starts: list[float] = []
    real = loop.train_step

    def timed(s, micro_batches):
        starts.append(time.perf_counter())
        w, c = starts[-1], time.process_time()
        out = real(s, micro_batches)
        out.item()  # wait for the step (a no-op on CPU, a sync on GPU)
        timings.append((time.perf_counter() - w, time.process_time() - c))
        return out

    loop.train_step = timed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    try:
        assert train(run.path, stop_after_steps=4 * steps) == 0
    finally:
        loop.train_step = real
    measured = timings[steps:]
    wall = sorted(w for w, _ in measured)
    cpu = sorted(c for _, c in measured)
    med = len(measured) // 2
    loop_s = (starts[-1] - starts[steps]) / max(1, len(starts) - 1 - steps)
    out = dict(name=name, method=method, cache=cache, resolution=resolution, batch=batch, base=base,
               mixed_precision=mixed_precision, device="cuda" if cuda else "cpu",
               steps_timed=len(measured), wall_s_per_step_median=round(wall[med], 4),
               wall_s_per_step_best=round(wall[0], 4), img_s_median=round(batch / wall[med], 2),
               img_s_best=round(batch / wall[0], 2), loop_img_s=round(batch / loop_s, 2),
               cpu_s_per_image=round(cpu[med] / batch, 4),
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               wall_s=round(time.monotonic() - t0, 1))
    if cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if peak and resolution == 512:
        out["mfu"] = round(batch / wall[med] * STEP_TFLOP[method] / peak, 4)
    return out


def build_sd15_random(root: Path, *, smoke: bool) -> Path:
    """A diffusers folder shaped like SD 1.5 (UNet, VAE, CLIP-L text encoder from their public configs)
    with random weights: no download. Tokenizer and scheduler come from the tiny model (its ids fit in
    CLIP-L's vocabulary), so the trainer loads it like any user's base model."""
    import shutil

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.train.tiny import ensure_tiny

    out = root / ("sd15-smoke" if smoke else "sd15-random")
    if (out / "model_index.json").exists():
        return out
    tiny = ensure_tiny()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in ("tokenizer", "scheduler"):
        shutil.copytree(tiny / part, tmp / part)
    shutil.copy(tiny / "model_index.json", tmp / "model_index.json")
    ids = json.loads((tiny / "text_encoder" / "config.json").read_text())
    torch.manual_seed(0)
    unet, vae, text = (SMOKE_UNET, SMOKE_VAE, SMOKE_TEXT) if smoke else (SD15_UNET, SD15_VAE, SD15_TEXT)
    # Random init on the GPU when there is one: on the host it takes longer than everything timed after.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        models = {"unet": UNet2DConditionModel(**unet), "vae": AutoencoderKL(**vae),
                  "text_encoder": CLIPTextModel(CLIPTextConfig(**text, **{k: ids[k] for k in
                                                ("bos_token_id", "eos_token_id", "pad_token_id")}))}
    for name, model in models.items():
        model.to("cpu").save_pretrained(tmp / name)
    tmp.rename(out)
    return out


# Per-image FLOPs at 512 px (64x64 latents, 77 tokens) for the SD 1.5 UNet: forward 0.803 TFLOP;
# a LoRA step (forward + activation gradients; no weight gradients for the frozen base) 1.73; a full
# step (forward + backward) 2.41. Gradient checkpointing runs the forward once more.
UNET_FORWARD_TFLOP = 0.803
STEP_TFLOP = {"lora": 1.73, "full": 2.41}
# Dense bf16 tensor-core peaks (TFLOP/s) by device name; first match wins, unknown devices get no MFU.
PEAK_BF16_TFLOPS = [
    ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 756.0),
    ("A100", 312.0), ("L40S", 362.0), ("RTX 4090", 165.2), ("L4", 121.0),
]
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
SMOKE_UNET = dict(SD15_UNET, block_out_channels=(32, 64, 64, 64), attention_head_dim=4, cross_attention_dim=32,
                  sample_size=8, layers_per_block=1, norm_num_groups=16)
SMOKE_VAE = dict(SD15_VAE, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8, sample_size=16)
SMOKE_TEXT = dict(SD15_TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def peak_tflops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def step_tflop(method: str, checkpointing: bool, resolution: int = 512) -> float:
    """Per-image FLOPs of a training step, scaled from 512 px by the latent area."""
    scale = (resolution / 512) ** 2
    return (STEP_TFLOP[method] + (UNET_FORWARD_TFLOP if checkpointing else 0.0)) * scale


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def unet_case(method: str, batch: int, steps: int, *, device: str = "cuda", naive: bool = False,
              unet_config: dict | None = None, vae_config: dict | None = None, text_config: dict | None = None,
              dtype: str = "bf16", channels_last: bool | None = None, fused: bool | None = None,
              optimizer: str | None = None, sdpa: bool = True,
              compile: bool = False, checkpointing: bool = False, rounds: int = 3, peak: float | None = None) -> dict:
    """Time training steps of a randomly initialised SD-shaped UNet.

    Tuned (naive=False) is what the trainer does: cached latents and text embeddings already on the
    device, `dtype` autocast (LoRA: frozen base stored in it, adapters fp32), channels_last and fused
    AdamW on CUDA, SDPA attention (diffusers' default processor). Naive: fp32, no caching (a VAE
    encode of the pixels and a text-encoder pass every step), default memory layout, per-tensor
    (non-foreach, non-fused) AdamW. img/s is the median of `rounds` rounds of `steps` steps, each
    round timed to a device sync; peak memory is `torch.cuda.max_memory_allocated` (CUDA only).
    `optimizer` ("per-tensor", "foreach", "fused") and `sdpa=False` (diffusers' classic attention)
    override single techniques, for the one-at-a-time table. Weights are created on the device itself
    (random init of 860 M parameters on the host takes longer than the timed steps).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    config = unet_config or SD15_UNET
    autocast_dtype = None if naive or dtype == "fp32" else {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    channels_last = (cuda and not naive) if channels_last is None else channels_last
    fused = (cuda and not naive) if fused is None else fused
    optimizer = optimizer or ("per-tensor" if naive else ("fused" if fused else "foreach"))
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    if method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        if autocast_dtype is not None:
            unet.to(dtype=autocast_dtype)
        unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    else:
        unet.requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if not sdpa:
        from diffusers.models.attention_processor import AttnProcessor

        unet.set_attn_processor(AttnProcessor())
    processors = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    compile_s = None
    if compile:
        t0 = time.perf_counter()
        unet.compile_repeated_blocks() if hasattr(unet, "compile_repeated_blocks") else unet.compile()
        compile_s = time.perf_counter() - t0  # arming only; the first step compiles (added below)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, **{"per-tensor": dict(foreach=False), "foreach": dict(foreach=True),
                                                "fused": dict(fused=True)}[optimizer])
    latent = config["sample_size"]
    cross = config["cross_attention_dim"]
    vae = text_encoder = pixels = ids = None
    if naive:
        from transformers import CLIPTextConfig, CLIPTextModel

        vcfg = vae_config or SD15_VAE
        tcfg = dict(text_config or SD15_TEXT)
        with torch.device(device):
            vae = AutoencoderKL(**vcfg).requires_grad_(False).eval()
            text_encoder = CLIPTextModel(CLIPTextConfig(**tcfg)).requires_grad_(False).eval()
        down = 2 ** (len(vcfg["block_out_channels"]) - 1)
        pixels = torch.rand(batch, 3, latent * down, latent * down, device=device) * 2 - 1
        ids = torch.randint(0, tcfg["vocab_size"], (batch, 77), device=device)
        latents = cond = None
    else:
        latents = torch.randn(batch, 4, latent, latent, device=device)
        cond = torch.randn(batch, 77, cross, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    noise = torch.randn(batch, 4, latent, latent, device=device)

    def step():
        x, c = latents, cond
        if naive:
            with torch.no_grad():
                x = vae.encode(pixels).latent_dist.sample() * 0.18215
                c = text_encoder(ids)[0]
        noisy = x + noise  # stands in for scheduler.add_noise: same shapes, negligible cost
        if autocast_dtype is not None:
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
                pred = unet(noisy, t, c, return_dict=False)[0]
        else:
            pred = unet(noisy, t, c, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    _sync(device)
    first_step_s = time.perf_counter() - t0
    if compile_s is not None:
        compile_s += first_step_s
    for _ in range(2):
        step()
    _sync(device)
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        per_round.append((time.perf_counter() - t0) / steps)
    s_per_step = sorted(per_round)[len(per_round) // 2]
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    img_s = batch / s_per_step
    vae_down = 2 ** (len((vae_config or SD15_VAE)["block_out_channels"]) - 1)
    out = dict(method=method, variant="naive" if naive else "tuned", batch=batch, resolution=latent * vae_down,
               dtype="fp32" if autocast_dtype is None else dtype, channels_last=channels_last,
               optimizer=f"adamw {optimizer}",
               cached=not naive, compile=compile, gradient_checkpointing=checkpointing, attention=processors,
               steps=steps * rounds, s_per_step=round(s_per_step, 5), img_s=round(img_s, 3),
               img_s_rounds=[round(batch / r, 3) for r in per_round],
               peak_gib=round(peak_gib, 2) if peak_gib is not None else None,
               first_step_s=round(first_step_s, 2), compile_s=round(compile_s, 2) if compile_s is not None else None)
    if peak:
        tflop = step_tflop(method, checkpointing, latent * vae_down)
        out["tflop_per_image"] = round(tflop, 3)
        out["mfu"] = round(img_s * tflop / peak, 4)
    del unet, opt, vae, text_encoder
    if cuda:
        torch.cuda.empty_cache()
    return out


def guarded(fn, *args, **kwargs) -> dict:
    """A case that runs out of memory is recorded as such (retried with gradient checkpointing
    first), not fatal to the benchmark."""
    import torch

    try:
        return fn(*args, **kwargs)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        if not kwargs.get("checkpointing"):
            try:
                return fn(*args, **dict(kwargs, checkpointing=True))
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
        return dict(method=args[0], batch=args[1], variant="naive" if kwargs.get("naive") else "tuned",
                    error="out of memory (also with gradient checkpointing)")


def sampling_case(batch: int, images: int, steps: int, *, device: str = "cuda", unet_config: dict | None = None,
                  vae_config: dict | None = None, dtype: str = "bf16", guidance: float = 7.5) -> dict:
    """Seconds per sample image the way the trainer renders them: StableDiffusionPipeline from the
    modules (random SD 1.5-sized UNet and VAE), DPM++ (DPMSolverMultistep) at `steps`, classifier-free
    guidance, `batch` images a call, under autocast; prompt embeddings given directly (the text
    encoder's share is ~0.1% of the FLOPs)."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    config = unet_config or SD15_UNET
    vcfg = vae_config or SD15_VAE
    cuda = device.startswith("cuda")
    wdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    unet = UNet2DConditionModel(**config).to(device, wdtype).eval()
    if cuda:
        unet.to(memory_format=torch.channels_last)
    vae = AutoencoderKL(**vcfg).to(device, wdtype).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler(num_train_timesteps=1000),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    down = 2 ** (len(vcfg["block_out_channels"]) - 1)
    size = config["sample_size"] * down
    cond = torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=wdtype)
    uncond = torch.randn(1, 77, config["cross_attention_dim"], device=device, dtype=wdtype).expand(batch, -1, -1)

    def render():
        gens = [torch.Generator(device=device).manual_seed(i) for i in range(batch)]
        with torch.no_grad():
            return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=steps,
                        guidance_scale=guidance, width=size, height=size, generator=gens, output_type="pil").images

    render()  # warm-up
    _sync(device)
    calls = max(1, images // batch)
    t0 = time.perf_counter()
    for _ in range(calls):
        render()
    _sync(device)
    per_image = (time.perf_counter() - t0) / (calls * batch)
    del pipe, unet, vae
    if cuda:
        torch.cuda.empty_cache()
    return dict(batch=batch, images=calls * batch, steps=steps, scheduler="dpm++", guidance=guidance,
                resolution=size, dtype=dtype, seconds_per_image=round(per_image, 4),
                tflop_per_image_unet=round(steps * 2 * UNET_FORWARD_TFLOP * (size / 512) ** 2, 2))


def cpu_sampling_case(root: Path, *, images: int, batch: int, steps: int, resolution: int) -> dict:
    """Seconds per sample image of the tiny model on the CPU, through the trainer's own renderer."""
    import torch

    from engine.config import SamplePrompt
    from engine.train.models import load_components
    from engine.train.sampling import render_samples
    from tests.train_fixtures import tiny_config

    cfg = tiny_config("lora", **{"data.resolution": resolution, "sample.steps": steps, "sample.batch_size": batch,
                                 "sample.scheduler": "dpm++"})
    comps = load_components("tiny", root, dtype=torch.float32)

    class Acc:  # what render_samples asks of an accelerator
        device = torch.device("cpu")

        @staticmethod
        def autocast():
            import contextlib

            return contextlib.nullcontext()

    class Sink:
        def __init__(self):
            self.done = []

        def emit(self, kind, **f):
            if kind == "sample_done":
                self.done.append(f)

    prompts = [SamplePrompt(text=f"a red circle {i}", seeds=[1], guidance=7.5, steps=steps) for i in range(images)]
    sink = Sink()
    render_samples(run_path=root, folder_name="warm", epoch=0, step=0, prompts=prompts[:batch], cfg=cfg,
                   components=comps, unet=comps.unet, text_encoder=comps.text_encoder, accelerator=Acc, events=sink)
    render_samples(run_path=root, folder_name="timed", epoch=0, step=0, prompts=prompts, cfg=cfg,
                   components=comps, unet=comps.unet, text_encoder=comps.text_encoder, accelerator=Acc, events=sink)
    timed = sink.done[-1]
    return dict(name=f"sampling-b{batch}", images=timed["images"], batch=batch, steps=steps, scheduler="dpm++",
                resolution=resolution, seconds=timed["seconds"], seconds_per_image=timed["seconds_per_image"])


def environment(torch) -> dict:
    import diffusers

    env = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
           "command": " ".join(["python", *sys.argv]), "t": time.time(),
           "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        env["load_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
            env["driver"], env["gpu_memory"], env["power_limit"] = [x.strip() for x in out.splitlines()[0].split(",")]
        except (OSError, IndexError, ValueError, subprocess.SubprocessError):
            env["driver"] = None
        env["matmul_bf16_tflops"] = matmul_tflops(torch)
    return env


def matmul_tflops(torch, n: int = 8192, reps: int = 10) -> float:
    """What this GPU's bf16 matrix units reach on one large product (mean of `reps` after warm-ups): the
    ceiling MFU is read against, next to the datasheet's dense peak (an H200 here: ~790 of 989)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / reps
    del a, b
    torch.cuda.empty_cache()
    return round(2 * n**3 / seconds / 1e12, 1)


class Budget:
    """A wall-clock allowance for a whole benchmark (a lent GPU machine's per-call limit): a phase that
    would start with less than its `need_s` left is skipped and named in the JSON, and a subprocess case
    is killed at the deadline, so the command ends inside its limit with everything measured so far."""

    def __init__(self, seconds: float | None):
        self.end = time.monotonic() + seconds if seconds is not None else None

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s


class Results:
    """The results dict, written to its JSON file (atomically) after every case, so a run that is killed
    at its time limit still leaves what it measured. Every case has a label; `--continue FILE` starts
    from an earlier file and measures only what it lacks (a second call on a lent machine)."""

    def __init__(self, data: dict, path: Path, earlier: dict | None = None):
        self.path = path
        if earlier:
            env = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
            data = dict(earlier, continued=[*earlier.get("continued", []), env])
            data.pop("skipped_for_time", None)  # retried now
        self.data = data
        self.done = {c.get("label") for key in SECTIONS for c in data.get(key, [])
                     if "time budget" not in str(c.get("error", ""))}
        for key in SECTIONS:  # a case cut by the budget is measured again
            if key in data:
                data[key] = [c for c in data[key] if "time budget" not in str(c.get("error", ""))]

    def add(self, section: str, label: str, case: dict) -> dict:
        case = dict(case, label=label)
        self.data.setdefault(section, []).append(case)
        self.done.add(label)
        print(json.dumps(case), flush=True)
        self.save()
        return case

    def find(self, label: str) -> dict | None:
        return next((c for key in SECTIONS for c in self.data.get(key, []) if c.get("label") == label), None)

    def skip(self, label: str) -> None:
        self.data.setdefault("skipped_for_time", []).append(label)
        print(json.dumps({"skipped_for_time": label}), flush=True)
        self.save()

    def save(self) -> None:
        # A continued run adds the rows a cut one skipped: keep the one-at-a-time table in its order.
        self.data.get("techniques", []).sort(key=lambda c: (c.get("method") != "lora", c.get("ladder", 0)))
        self.data["speedup_tuned_over_naive"] = speedups(self.data.get("cases", []))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)


SECTIONS = ("cases", "trainer", "sampling", "techniques", "sampling_share")


def speedups(cases: list[dict]) -> list[dict]:
    """Tuned over naive, per method and batch: the honest speed-up of everything the trainer does."""
    out = []
    for c in cases:
        if c.get("variant") == "tuned" and not c.get("compile") and "img_s" in c:
            base = next((n for n in cases if n.get("variant") == "naive" and n["method"] == c["method"]
                         and n["batch"] == c["batch"] and "img_s" in n), None)
            if base:
                out.append(dict(method=c["method"], batch=c["batch"], tuned_img_s=c["img_s"],
                                naive_img_s=base["img_s"], speedup=round(c["img_s"] / base["img_s"], 2)))
    return out


# One technique at a time on the GPU, cumulative from the naive step to the trainer's (at one batch):
# (label, unet_case keyword arguments). The last row takes SDPA away again, to show what it is worth.
GPU_LADDER = [
    ("naive: fp32, VAE + text encode every step, per-tensor AdamW", dict(naive=True)),
    ("+ cached latents and text embeddings", dict(dtype="fp32", channels_last=False, optimizer="per-tensor")),
    ("+ foreach AdamW", dict(dtype="fp32", channels_last=False, optimizer="foreach")),
    ("+ bf16 autocast (LoRA: frozen base in bf16)", dict(dtype="bf16", channels_last=False, optimizer="foreach")),
    ("+ channels_last", dict(dtype="bf16", channels_last=True, optimizer="foreach")),
    ("+ fused AdamW (= the trainer's step)", dict(dtype="bf16", channels_last=True, optimizer="fused")),
    ("the trainer's step without SDPA (classic attention)", dict(dtype="bf16", channels_last=True,
                                                                optimizer="fused", sdpa=False)),
]


def gpu_mode(args, res: Results, *, smoke: bool) -> None:
    """The GPU benchmark, most important numbers first, so a time budget cuts only the tail: the tuned
    step and the real trainer at the headline batch, the naive step there (the honest ratio), the other
    tuned batches, sampling, one technique at a time, the other naive batches, a 30-epoch run with
    default settings (its sampling share), the other trainer batches, regional torch.compile."""
    results = res.data
    budget = Budget(args.budget_s)
    device = "cpu" if smoke else "cuda"
    configs = dict(unet_config=SMOKE_UNET, vae_config=SMOKE_VAE, text_config=SMOKE_TEXT) if smoke else {}
    peak = None if smoke else peak_tflops(results["device"])
    results["peak_bf16_tflops"] = peak
    if peak is None and not smoke:
        print(f"note: no peak FLOP/s known for {results['device']!r}; MFU omitted", file=sys.stderr)
    batches = [1, 2] if smoke else list(args.batches)
    head = 2 if smoke else args.headline_batch
    steps = 2 if smoke else args.steps
    rounds = 1 if smoke else 3
    trainer_batches = [2] if smoke else list(args.trainer_batches)
    step_need, trainer_need = (0, 0) if smoke else (20, 75)
    run_steps, run_trainer = not args.trainer_only, not args.no_trainer
    methods = ("lora", "full")

    def step_label(method: str, batch: int, naive: bool) -> str:
        return f"step {method} b{batch} {'naive' if naive else 'tuned'}"

    def step_case(method: str, batch: int, *, naive: bool = False) -> None:
        label = step_label(method, batch, naive)
        if label in res.done:
            return
        if not budget.allows(step_need):
            return res.skip(label)
        res.add("cases", label, guarded(unet_case, method, batch, steps, device=device, naive=naive, peak=peak,
                                        rounds=rounds, **configs))

    base: list[Path] = []

    def trainer(method: str, batch: int) -> None:
        label = f"trainer {method} b{batch}"
        if label in res.done:
            return
        if not budget.allows(trainer_need):
            return res.skip(label)
        if not base:
            base.append(build_base(res, smoke=smoke))
        res.add("trainer", label, trainer_case_process(base[0], method, batch, smoke=smoke, steps=steps, peak=peak,
                                                       timeout_s=budget.left()))

    def techniques(method: str) -> None:
        """Cumulative from the naive step to the trainer's; both ends are the cases already measured."""
        for i, (name, kw) in enumerate(GPU_LADDER):
            label = f"technique {method}: {name}"
            if label in res.done:
                continue
            end = {0: step_label(method, head, True), len(GPU_LADDER) - 2: step_label(method, head, False)}.get(i)
            known = res.find(end) if end else None
            if known and "img_s" in known:
                case = dict(known)
            elif not budget.allows(step_need):
                res.skip(label)
                continue
            else:
                case = guarded(unet_case, method, head, steps, device=device, peak=peak, rounds=rounds,
                               **configs, **kw)
            case.update(name=name, ladder=i)
            res.add("techniques", label, case)

    if run_steps:
        for method in methods:
            step_case(method, head)
    if run_trainer and head in trainer_batches:
        for method in methods:
            trainer(method, head)
    if run_steps:
        for method in methods:
            step_case(method, head, naive=True)
        for method in methods:
            for b in batches:
                if b != head:
                    step_case(method, b)
        for b in ((2,) if smoke else (8, 1)):
            if f"sampling b{b}" in res.done:
                continue
            if not budget.allows(step_need):
                res.skip(f"sampling b{b}")
                continue
            res.add("sampling", f"sampling b{b}", sampling_case(b, 2 if smoke else 16, 2 if smoke else args.sample_steps,
                                              device=device, unet_config=configs.get("unet_config"),
                                              vae_config=configs.get("vae_config"), dtype="fp32" if smoke else "bf16"))
        for method in methods:
            techniques(method)
        for method in methods:
            for b in batches:
                if b != head:
                    step_case(method, b, naive=True)
    if run_trainer:
        if "sampling share" in res.done:
            pass
        elif not budget.allows(trainer_need):
            res.skip("sampling share")
        else:
            if not base:
                base.append(build_base(res, smoke=smoke))
            res.add("sampling_share", "sampling share", default_run_process(
                base[0], smoke=smoke, epochs=2 if smoke else args.share_epochs,
                images=4 if smoke else args.share_images, timeout_s=budget.left()))
        for method in methods:
            for b in trainer_batches:
                if b != head:
                    trainer(method, b)
    if run_steps and args.compile:
        for method in methods:
            label = f"compile {method} b{head}"
            if label in res.done:
                continue
            if not budget.allows(2 * trainer_need):
                res.skip(label)
                continue
            try:
                case = guarded(unet_case, method, head, steps, device=device, compile=True, peak=peak,
                               rounds=rounds, **configs)
            except Exception as e:  # noqa: BLE001 - a compile failure is a result, not a crash
                case = dict(method=method, batch=head, variant="tuned", compile=True, error=f"{type(e).__name__}: {e}")
            res.add("cases", label, case)
    res.save()


def build_base(res: Results, *, smoke: bool) -> Path:
    root = Path(tempfile.mkdtemp(prefix="tunelab-bench-gpu-"))
    t0 = time.perf_counter()
    base = build_sd15_random(root, smoke=smoke)
    res.data["base_build_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"built": str(base), "seconds": res.data["base_build_s"]}), flush=True)
    return base


def _case_process(cmd: list[str], timeout_s: float, what: dict) -> dict:
    """Run one case in a fresh process (its own memory); its last stdout line is its JSON. A failure
    (out of memory, a crash, the time budget) is recorded with its error."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=None if timeout_s == float("inf")
                              else max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        return dict(what, error="stopped at the time budget")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return dict(what, error=" | ".join(tail))


def trainer_case_process(base: Path, method: str, batch: int, *, smoke: bool, steps: int, peak: float | None,
                         timeout_s: float) -> dict:
    """`trainer_case` on the SD 1.5-shaped random base, in a fresh process, bf16 on CUDA."""
    cmd = [sys.executable, __file__, "--trainer-case", method, str(batch), "--base", str(base),
           "--resolution", str(32 if smoke else 512), "--steps", str(steps),
           "--mixed-precision", "no" if smoke else "bf16"]
    if peak:
        cmd += ["--peak", str(peak)]
    return _case_process(cmd, timeout_s, dict(method=method, batch=batch))


def default_run_process(base: Path, *, smoke: bool, epochs: int, images: int, timeout_s: float) -> dict:
    """A whole run with the default settings (LoRA, batch 1, samples at the start and the end of the
    project's goals, DPM++ 20 steps) for `epochs` epochs over `images` images: the sampling share of
    its wall time, measured from its events as `bench/sampling_share.py` does."""
    cmd = [sys.executable, __file__, "--default-run", str(epochs), str(images), "--base", str(base)]
    if smoke:
        cmd += ["--resolution", "32", "--mixed-precision", "no"]
    return _case_process(cmd, timeout_s, dict(name="default-run", epochs=epochs, train_images=images))


def default_run(base: str, *, epochs: int, images: int, resolution: int | None, mixed_precision: str | None) -> dict:
    from bench.sampling_share import read_events, sampling_share
    from engine.config import RunConfig
    from engine.train.loop import train
    from tests.train_fixtures import make_project, make_run

    root = Path(tempfile.mkdtemp(prefix="tunelab-bench-defaults-"))
    res = resolution or 512
    project = make_project(root, n=images, size=res + 8, goals=False)
    (project / "project.toml").write_text('name = "bench"\n[goals]\naccuracy = ["a red circle", "a blue square"]\n'
                                          'preservation = ["a photo of a city street"]\n')
    cfg = RunConfig(method="lora")
    cfg.model.base = base
    cfg.train.epochs = epochs
    if resolution:
        cfg.data.resolution = resolution
    if mixed_precision:
        cfg.train.mixed_precision = mixed_precision
    run = make_run(project, cfg)
    t0 = time.monotonic()
    assert train(run.path) == 0
    share = sampling_share(read_events(run.events_path))
    share.pop("columns", None)
    share["sample_images"] = share.pop("images")
    return dict(name="default-run", epochs=epochs, train_images=images, batch=cfg.train.batch_size,
                resolution=cfg.data.resolution, sample_steps=cfg.sample.steps, prompts=3,
                run_wall_s=round(time.monotonic() - t0, 1), **share)


def _row(*cells) -> str:
    return "| " + " | ".join("—" if c is None else str(c) for c in cells) + " |"


def summarise(r: dict) -> None:
    """The GPU results as the Markdown tables of docs/performance.md (also `--report FILE`)."""
    print(f"\n{r.get('device')} · driver {r.get('driver')} · CUDA {r.get('cuda')} · torch {r.get('torch')} · "
          f"diffusers {r.get('diffusers')} · Python {r.get('python')} · {r.get('utc')} · `{r.get('command')}`")
    if r.get("matmul_bf16_tflops"):
        print(f"bf16 matmul 8192³: {r['matmul_bf16_tflops']} TFLOP/s measured; MFU uses the dense peak "
              f"{r.get('peak_bf16_tflops')}")
    print()
    if r.get("trainer"):
        print(_row("real trainer", "batch", "img/s (median)", "loop img/s", "MFU", "peak GiB", "error"))
        print(_row(*["---"] * 7))
        for c in r["trainer"]:
            print(_row(c.get("method"), c.get("batch"), c.get("img_s_median"), c.get("loop_img_s"), c.get("mfu"),
                       c.get("peak_gib"), c.get("error")))
        print()
    if r.get("cases"):
        print(_row("step", "variant", "batch", "img/s", "MFU", "peak GiB", "checkpointing", "compile s", "error"))
        print(_row(*["---"] * 9))
        for c in r["cases"]:
            print(_row(c.get("method"), c.get("variant") + (" + compile" if c.get("compile") else ""), c.get("batch"),
                       c.get("img_s"), c.get("mfu"), c.get("peak_gib"), c.get("gradient_checkpointing"),
                       c.get("compile_s"), c.get("error")))
        print()
    for s in r.get("speedup_tuned_over_naive", []):
        print(f"tuned / naive, {s['method']} b{s['batch']}: {s['speedup']}x ({s['naive_img_s']} -> {s['tuned_img_s']} img/s)")
    if r.get("techniques"):
        print()
        print(_row("method", "technique (cumulative)", "img/s", "vs naive", "peak GiB"))
        print(_row(*["---"] * 5))
        first: dict = {}
        for c in r["techniques"]:
            first.setdefault(c.get("method"), c.get("img_s"))
            ratio = round(c["img_s"] / first[c["method"]], 2) if c.get("img_s") and first[c["method"]] else None
            print(_row(c.get("method"), c.get("name"), c.get("img_s"), ratio and f"{ratio}x", c.get("peak_gib")))
    for c in r.get("sampling", []):
        print(f"sampling b{c['batch']}: {c['seconds_per_image']} s/image ({c['steps']} DPM++ steps, {c['resolution']} px)")
    for c in r.get("sampling_share", []):
        if "share" in c:
            print(f"default-settings run, {c['epochs']} epochs x {c['train_images']} images, batch {c['batch']}: "
                  f"sampling {c['sampling_s']} s of {c['wall_s']} s = {round(100 * c['share'], 1)}% "
                  f"({c['sample_images']} sample images, {c['seconds_per_image']} s/image)")
        else:
            print(f"default-settings run: {c.get('error')}")
    if r.get("skipped_for_time"):
        print("skipped for time: " + "; ".join(r["skipped_for_time"]))


def cpu_techniques(results: dict, steps: int) -> list[dict]:
    """One technique at a time on the tiny model's UNet (random weights, its shapes) on the CPU."""
    import json as _json

    from engine.train.tiny import ensure_tiny

    config = _json.loads((ensure_tiny() / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    cases = []
    variants = [("naive (fp32, uncached, per-tensor AdamW)", dict(naive=True, dtype="fp32")),
                ("cached, fp32, foreach AdamW", dict(dtype="fp32")),
                ("cached, fp32, fused AdamW", dict(dtype="fp32", fused=True)),
                ("cached, fp32, channels_last", dict(dtype="fp32", channels_last=True)),
                ("cached, bf16 autocast", dict(dtype="bf16"))]
    from diffusers import AutoencoderKL

    vae_config = {k: v for k, v in AutoencoderKL.load_config(str(ensure_tiny() / "vae")).items() if not k.startswith("_")}
    text_config = _json.loads((ensure_tiny() / "text_encoder" / "config.json").read_text())
    text_config = {k: text_config[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                               "num_attention_heads", "max_position_embeddings") if k in text_config}
    for method in ("lora", "full"):
        for name, kw in variants:
            case = unet_case(method, 8, steps, device="cpu", unet_config=config, vae_config=vae_config,
                             text_config=text_config, rounds=5, **kw)
            case["name"] = name
            cases.append(case)
            print(json.dumps(case), flush=True)
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per case (CPU trainer cases: also the "
                    "warm-up; GPU: steps per round, 3 rounds)")
    ap.add_argument("--gpu", action="store_true", help="the SD 1.5-size GPU benchmark (needs CUDA)")
    ap.add_argument("--gpu-smoke", action="store_true", help="run the GPU code path on the CPU with a tiny UNet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64], help="GPU batch sizes")
    ap.add_argument("--compile", action="store_true", help="GPU: also time regional torch.compile at batch 8 and 32")
    ap.add_argument("--sample-steps", type=int, default=20, help="GPU sampling: DPM++ steps")
    ap.add_argument("--techniques", action="store_true", help="CPU: one technique at a time on the tiny UNet")
    ap.add_argument("--resolution", type=int, default=None, help="CPU mode: training resolution (default 64)")
    ap.add_argument("--batch", type=int, default=4, help="CPU mode: batch size")
    ap.add_argument("--case", choices=["lora-cached", "lora-uncached", "full-cached", "full-uncached", "sampling"],
                    help="CPU mode: run one case in this process and print its JSON line")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--continue", dest="continue_from", type=Path, metavar="JSON", help="GPU: start from an "
                    "earlier result file and measure only the cases it lacks (or that the time budget cut)")
    ap.add_argument("--report", type=Path, metavar="JSON", help="print the Markdown tables of a GPU result file "
                    "(what docs/performance.md takes) and exit")
    ap.add_argument("--no-trainer", action="store_true", help="GPU: skip the real-trainer cases")
    ap.add_argument("--trainer-only", action="store_true", help="GPU: only the real-trainer cases (a second, "
                    "shorter command when one device call must stay under a time limit)")
    ap.add_argument("--trainer-batches", type=int, nargs="+", default=[32, 8], help="GPU: real-trainer batch sizes")
    ap.add_argument("--headline-batch", type=int, default=32, help="GPU: the batch measured first (step model and "
                    "real trainer) and used for the one-technique-at-a-time table")
    ap.add_argument("--budget-s", type=float, default=None, help="GPU: stop starting cases when this many seconds "
                    "have passed (a lent machine's per-call limit); what was skipped is named in the JSON")
    ap.add_argument("--share-epochs", type=int, default=30, help="GPU: epochs of the default-settings run whose "
                    "sampling share is measured")
    ap.add_argument("--share-images", type=int, default=20, help="GPU: images in that run's project")
    ap.add_argument("--default-run", nargs=2, type=int, metavar=("EPOCHS", "IMAGES"), help=argparse.SUPPRESS)
    ap.add_argument("--trainer-case", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--mixed-precision", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peak", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trainer_case:
        method, batch = args.trainer_case[0], int(args.trainer_case[1])
        root = Path(tempfile.mkdtemp(prefix="tunelab-bench-case-"))
        print(json.dumps(trainer_case(root, f"trainer-{method}-{batch}", method=method, cache=True,
                                      steps=args.steps, resolution=args.resolution, batch=batch, base=args.base,
                                      mixed_precision=args.mixed_precision or "bf16", images=max(8, 4 * batch),
                                      peak=args.peak)))
        return 0
    if args.default_run:
        print(json.dumps(default_run(args.base, epochs=args.default_run[0], images=args.default_run[1],
                                     resolution=args.resolution,
                                     mixed_precision=args.mixed_precision)))
        return 0
    import torch

    results: dict = environment(torch)
    if args.gpu or args.gpu_smoke:
        if args.gpu and not torch.cuda.is_available():
            print("skipped: no CUDA device. The GPU benchmark (SD 1.5-size UNet at 512 px, bf16) needs one: "
                  "run `python bench/train_step.py --gpu` on a GPU box. (`--gpu-smoke` runs its code path "
                  "on the CPU with a miniature model.)", file=sys.stderr)
            return 2
        if not args.gpu:
            results["device"] = "cpu (smoke: miniature SD-shaped models)"
        mode = "gpu" if args.gpu else "gpu-smoke"
        if args.budget_s:
            results["budget_s"] = args.budget_s
        earlier = json.loads(args.continue_from.read_text()) if args.continue_from else None
        res = Results(results, args.out or ROOT / "bench" / "results" / f"train_step-{mode}.json", earlier)
        gpu_mode(args, res, smoke=not args.gpu)
        summarise(res.data)
        print(f"wrote {res.path}")
        return 0
    if args.report:
        summarise(json.loads(args.report.read_text()))
        return 0
    args.resolution = args.resolution or 64
    if args.techniques:
        results["device"] = f"cpu ({platform.processor() or platform.machine()})"
        cases = cpu_techniques(results, args.steps)
        mode = "cpu-techniques"
    else:
        results["device"] = f"cpu ({platform.processor() or platform.machine()})"
        root = Path(tempfile.mkdtemp(prefix="tunelab-bench-"))
        if args.case == "sampling":
            out = [cpu_sampling_case(root, images=16, batch=b, steps=20, resolution=args.resolution) for b in (8, 1)]
            print(json.dumps(out))
            return 0
        if args.case:
            method, cache = args.case.split("-")
            print(json.dumps(trainer_case(root, args.case, method=method, cache=cache == "cached", steps=args.steps,
                                      resolution=args.resolution, batch=args.batch)))
            return 0
        # Each case in a fresh process, so its peak RSS is its own.
        cases = []
        for name in ["lora-cached", "lora-uncached", "full-cached", "full-uncached", "sampling"]:
            out = subprocess.run([sys.executable, __file__, "--case", name, "--steps", str(args.steps),
                                  "--resolution", str(args.resolution), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            if name == "sampling":
                results["sampling"] = got
            else:
                cases.append(got)
        mode = "cpu"
    results["cases"] = cases
    out = args.out or ROOT / "bench" / "results" / f"train_step-{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for c in cases:
        print(json.dumps(c))
    for c in results.get("sampling", []):
        print(json.dumps(c))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
