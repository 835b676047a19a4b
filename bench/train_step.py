"""Training throughput: images/s, peak memory and MFU per training step; seconds per sample image.

CPU mode (default): the real trainer (`engine.train.loop.train`) on the tiny model, LoRA and full, with
and without latent/text caching, on a generated project (img/s of `train_step`, process CPU seconds
per image, peak RSS), and seconds per sample image through the trainer's renderer (DPM++ 20 steps,
batch 8 and 1). `--techniques`: the step below on the tiny model's shapes, one technique at a time.

GPU mode (`--gpu`, needs CUDA; "run this on a GPU box"): an SD 1.5-sized UNet (its public config,
random weights, no download) at 512 px, LoRA (rank 16, attention projections) and full, batch 1/8/32/64,
each both *tuned* (cached latents/text on the device, bf16 autocast, channels_last, fused AdamW, SDPA)
and *naive* (VAE + text encode every step, fp32, default layout, per-tensor AdamW) in the same run;
img/s, `torch.cuda.max_memory_allocated`, MFU = img/s x FLOPs per image / the device's bf16 peak;
`--compile` adds regional torch.compile cases; then seconds per sample image (SD 1.5 UNet + VAE,
DPM++ 20 steps, batch 1 and 8); then the real trainer (`engine.train.loop.train`, in a fresh process
per case) on an SD 1.5-shaped diffusers folder with random weights written to a temp dir, LoRA and
full at batch 8 and 32, bf16, 512 px: what a user's run gets, caches and all (`--no-trainer` skips it).
`--gpu-smoke` runs the GPU code on the CPU with miniature models.

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


def cpu_case(root: Path, name: str, *, method: str, cache: bool, steps: int, resolution: int, batch: int) -> dict:
    """The real trainer on the tiny model (CPU mode)."""
    return trainer_case(root, name, method=method, cache=cache, steps=steps, resolution=resolution, batch=batch)


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
    UNet2DConditionModel(**unet).save_pretrained(tmp / "unet")
    AutoencoderKL(**vae).save_pretrained(tmp / "vae")
    CLIPTextModel(CLIPTextConfig(**text, **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
                  ).save_pretrained(tmp / "text_encoder")
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
              compile: bool = False, checkpointing: bool = False, rounds: int = 3, peak: float | None = None) -> dict:
    """Time training steps of a randomly initialised SD-shaped UNet.

    Tuned (naive=False) is what the trainer does: cached latents and text embeddings already on the
    device, `dtype` autocast (LoRA: frozen base stored in it, adapters fp32), channels_last and fused
    AdamW on CUDA, SDPA attention (diffusers' default processor). Naive: fp32, no caching (a VAE
    encode of the pixels and a text-encoder pass every step), default memory layout, per-tensor
    (non-foreach, non-fused) AdamW. img/s is the median of `rounds` rounds of `steps` steps, each
    round timed to a device sync; peak memory is `torch.cuda.max_memory_allocated` (CUDA only).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    config = unet_config or SD15_UNET
    autocast_dtype = None if naive or dtype == "fp32" else {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    channels_last = (cuda and not naive) if channels_last is None else channels_last
    fused = (cuda and not naive) if fused is None else fused
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    unet = UNet2DConditionModel(**config).to(device)
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
    processors = sorted({type(p).__name__ for p in unet.attn_processors.values()})
    compile_s = None
    if compile:
        t0 = time.perf_counter()
        unet.compile_repeated_blocks() if hasattr(unet, "compile_repeated_blocks") else unet.compile()
        compile_s = time.perf_counter() - t0  # arming only; the first step compiles (added below)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    if naive:
        opt = torch.optim.AdamW(params, lr=1e-5, foreach=False)
    elif fused:
        opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    else:
        opt = torch.optim.AdamW(params, lr=1e-5)
    latent = config["sample_size"]
    cross = config["cross_attention_dim"]
    vae = text_encoder = pixels = ids = None
    if naive:
        from transformers import CLIPTextConfig, CLIPTextModel

        vcfg = vae_config or SD15_VAE
        vae = AutoencoderKL(**vcfg).to(device).requires_grad_(False).eval()
        tcfg = dict(text_config or SD15_TEXT)
        text_encoder = CLIPTextModel(CLIPTextConfig(**tcfg)).to(device).requires_grad_(False).eval()
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
               optimizer="adamw (per-tensor)" if naive else ("adamw fused" if fused else "adamw foreach"),
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
    return env


def gpu_mode(args, results: dict, *, smoke: bool) -> list[dict]:
    import torch

    device = "cpu" if smoke else "cuda"
    configs = dict(unet_config=SMOKE_UNET, vae_config=SMOKE_VAE, text_config=SMOKE_TEXT) if smoke else {}
    peak = None if smoke else peak_tflops(results["device"])
    results["peak_bf16_tflops"] = peak
    if peak is None and not smoke:
        print(f"note: no peak FLOP/s known for {results['device']!r}; MFU omitted", file=sys.stderr)
    batches = (1, 2) if smoke else tuple(args.batches)
    steps = 2 if smoke else args.steps
    cases = []
    if args.trainer_only:
        results["trainer"] = trainer_cases(args, smoke=smoke, peak=peak)
        return cases
    for method in ("lora", "full"):
        for naive in (False, True):
            for b in batches:
                case = guarded(unet_case, method, b, steps, device=device, naive=naive, peak=peak,
                               rounds=1 if smoke else 3, **configs)
                cases.append(case)
                print(json.dumps(case), flush=True)
        if args.compile or smoke:
            for b in ((1,) if smoke else (8, 32)):
                if smoke and not hasattr(torch, "compile"):
                    continue
                try:
                    case = guarded(unet_case, method, b, steps, device=device, compile=not smoke, peak=peak,
                                   rounds=1 if smoke else 3, **configs)
                except Exception as e:  # noqa: BLE001 - a compile failure is a result, not a crash
                    case = dict(method=method, batch=b, variant="tuned", compile=True, error=f"{type(e).__name__}: {e}")
                cases.append(case)
                print(json.dumps(case), flush=True)
    sampling = []
    for b in ((2,) if smoke else (1, 8)):
        sampling.append(sampling_case(b, 2 if smoke else 16, 2 if smoke else args.sample_steps, device=device,
                                      unet_config=configs.get("unet_config"), vae_config=configs.get("vae_config"),
                                      dtype="fp32" if smoke else "bf16"))
        print(json.dumps(sampling[-1]), flush=True)
    results["sampling"] = sampling
    # The real trainer on the SD 1.5-shaped random base: the number that says what a user gets.
    if not args.no_trainer:
        results["trainer"] = trainer_cases(args, smoke=smoke, peak=peak)
    # Tuned over naive, per method and batch: the honest speed-up of everything the trainer does.
    speedups = []
    for c in cases:
        if c.get("variant") == "tuned" and not c.get("compile") and "img_s" in c:
            base = next((n for n in cases if n.get("variant") == "naive" and n["method"] == c["method"]
                         and n["batch"] == c["batch"] and "img_s" in n), None)
            if base:
                speedups.append(dict(method=c["method"], batch=c["batch"], tuned_img_s=c["img_s"],
                                     naive_img_s=base["img_s"], speedup=round(c["img_s"] / base["img_s"], 2)))
    results["speedup_tuned_over_naive"] = speedups
    return cases


def trainer_cases(args, *, smoke: bool, peak: float | None) -> list[dict]:
    """`trainer_case` on the SD 1.5-shaped random base, LoRA and full, each in a fresh process (its own
    memory), bf16 on CUDA. A case that fails (out of memory, say) is recorded with its error."""
    root = Path(tempfile.mkdtemp(prefix="tunelab-bench-gpu-"))
    t0 = time.perf_counter()
    base = build_sd15_random(root, smoke=smoke)
    print(json.dumps({"built": str(base), "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    out = []
    resolution = 32 if smoke else 512
    for method in ("lora", "full"):
        for batch in ((2,) if smoke else args.trainer_batches):
            cmd = [sys.executable, __file__, "--trainer-case", method, str(batch), "--base", str(base),
                   "--resolution", str(resolution), "--steps", str(2 if smoke else args.steps),
                   "--mixed-precision", "no" if smoke else "bf16"]
            if peak:
                cmd += ["--peak", str(peak)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode == 0 and lines:
                case = json.loads(lines[-1])
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                case = dict(method=method, batch=batch, error=" | ".join(tail))
            out.append(case)
            print(json.dumps(case), flush=True)
    return out


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
    ap.add_argument("--resolution", type=int, default=64, help="CPU mode: training resolution (tiny: 64)")
    ap.add_argument("--batch", type=int, default=4, help="CPU mode: batch size")
    ap.add_argument("--case", choices=["lora-cached", "lora-uncached", "full-cached", "full-uncached", "sampling"],
                    help="CPU mode: run one case in this process and print its JSON line")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-trainer", action="store_true", help="GPU: skip the real-trainer cases")
    ap.add_argument("--trainer-only", action="store_true", help="GPU: only the real-trainer cases (a second, "
                    "shorter command when one device call must stay under a time limit)")
    ap.add_argument("--trainer-batches", type=int, nargs="+", default=[8, 32], help="GPU: real-trainer batch sizes")
    ap.add_argument("--trainer-case", nargs=2, metavar=("METHOD", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--mixed-precision", default="bf16", help=argparse.SUPPRESS)
    ap.add_argument("--peak", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trainer_case:
        method, batch = args.trainer_case[0], int(args.trainer_case[1])
        root = Path(tempfile.mkdtemp(prefix="tunelab-bench-case-"))
        print(json.dumps(trainer_case(root, f"trainer-{method}-{batch}", method=method, cache=True,
                                      steps=args.steps, resolution=args.resolution, batch=batch, base=args.base,
                                      mixed_precision=args.mixed_precision, images=max(8, 4 * batch),
                                      peak=args.peak)))
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
        cases = gpu_mode(args, results, smoke=not args.gpu)
        mode = "gpu" if args.gpu else "gpu-smoke"
    elif args.techniques:
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
            print(json.dumps(cpu_case(root, args.case, method=method, cache=cache == "cached", steps=args.steps,
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
