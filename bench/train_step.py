"""Training throughput: images/s and peak memory per step.

CPU mode (default): the real trainer (`engine.train.loop.train`) on the tiny model, LoRA and full, with
and without latent/text caching, on a generated project; img/s is the trainer's own `progress` figure
(sampling and saving excluded), peak memory is the process's peak RSS.

GPU mode (`--gpu`, only with CUDA): one optimiser step of an SD 1.5-sized UNet (its public config,
random weights, no download) at 512 px (64x64 latents, 77x768 text states) under bf16 autocast, LoRA
(rank 16 on the attention projections, base in bf16) and full (fp32 master weights, AdamW), batch 1/8/32;
img/s over timed steps after warmup and `torch.cuda.max_memory_allocated`.

    python bench/train_step.py [--steps 12] [--gpu] [--out bench/results/train_step-<mode>.json]

Results are written as JSON to bench/results/ and summarised on stdout.
"""
from __future__ import annotations

import argparse
import json
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
    from engine.train.loop import train
    from tests.train_fixtures import events, make_project, make_run, tiny_config

    project = make_project(root / name, n=8, size=resolution + 8, goals=False)
    cfg = tiny_config(method, **{"data.resolution": resolution, "train.batch_size": batch, "train.epochs": 1000,
                                 "train.log_every": steps, "data.cache_latents": cache, "data.cache_text": cache})
    cfg.sample.at_start = False
    cfg.save.last = False
    run = make_run(project, cfg)
    # The trainer's own loop with `train_step` timed: wall and process CPU seconds per step, after a
    # warm-up of `steps` steps. On a shared machine wall time swings with other load; CPU seconds per
    # image hardly move, so both are reported (img/s on idle cores ~ threads / cpu_s_per_image).
    from engine.train import loop

    timings: list[tuple[float, float]] = []
    real = loop.train_step

    def timed(s, micro_batches):
        w, c = time.perf_counter(), time.process_time()
        out = real(s, micro_batches)
        out.item()  # wait for the step (a no-op on CPU, a sync on GPU)
        timings.append((time.perf_counter() - w, time.process_time() - c))
        return out

    loop.train_step = timed
    t0 = time.monotonic()
    try:
        assert train(run.path, stop_after_steps=4 * steps) == 0
    finally:
        loop.train_step = real
    measured = timings[steps:]
    wall = sorted(w for w, _ in measured)
    cpu = sorted(c for _, c in measured)
    med = len(measured) // 2
    return dict(name=name, method=method, cache=cache, resolution=resolution, batch=batch,
                steps_timed=len(measured), wall_s_per_step_median=round(wall[med], 4),
                wall_s_per_step_best=round(wall[0], 4), img_s_median=round(batch / wall[med], 2),
                img_s_best=round(batch / wall[0], 2), cpu_s_per_image=round(cpu[med] / batch, 4),
                peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                wall_s=round(time.monotonic() - t0, 1))


def gpu_case(method: str, batch: int, steps: int, *, size: dict | None = None, device: str = "cuda") -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    config = size or SD15_UNET
    unet = UNet2DConditionModel(**config).to(device)
    dtype = torch.bfloat16
    if method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.to(dtype=dtype)
        unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        for p in unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    else:
        unet.requires_grad_(True)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    latent = config["sample_size"]
    x = torch.randn(batch, 4, latent, latent, device=device)
    cond = torch.randn(batch, 77, config["cross_attention_dim"], device=device)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
            pred = unet(x, t, cond, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    del unet, opt
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return dict(method=method, batch=batch, resolution=latent * 8, dtype="bf16", steps=steps,
                img_s=round(batch * steps / dt, 2), s_per_step=round(dt / steps, 4), peak_gib=round(peak, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per case (CPU: also the warm-up)")
    ap.add_argument("--gpu", action="store_true", help="the SD 1.5-size GPU benchmark (needs CUDA)")
    ap.add_argument("--gpu-smoke", action="store_true", help="run the GPU code path on the CPU with a tiny UNet")
    ap.add_argument("--resolution", type=int, default=64, help="CPU mode: training resolution (tiny: 64)")
    ap.add_argument("--batch", type=int, default=4, help="CPU mode: batch size")
    ap.add_argument("--case", choices=["lora-cached", "lora-uncached", "full-cached", "full-uncached"],
                    help="CPU mode: run one case in this process and print its JSON line")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    results: dict = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "t": time.time()}
    if args.gpu or args.gpu_smoke:
        if args.gpu and not torch.cuda.is_available():
            print("no CUDA device: the GPU benchmark needs one", file=sys.stderr)
            return 2
        results["device"] = torch.cuda.get_device_name() if args.gpu else "cpu (smoke)"
        size = None if args.gpu else dict(SD15_UNET, block_out_channels=(32, 64, 64, 64), attention_head_dim=4,
                                          cross_attention_dim=32, sample_size=8, layers_per_block=1,
                                          norm_num_groups=16)
        batches = (1, 8, 32) if args.gpu else (1, 2)
        cases = [gpu_case(m, b, args.steps, size=size, device="cuda" if args.gpu else "cpu")
                 for m in ("lora", "full") for b in batches]
        mode = "gpu" if args.gpu else "gpu-smoke"
    else:
        results["device"] = f"cpu ({platform.processor() or platform.machine()})"
        root = Path(tempfile.mkdtemp(prefix="tunelab-bench-"))
        names = [args.case] if args.case else [f"{m}-{c}" for m in ("lora", "full") for c in ("cached", "uncached")]
        if args.case:
            method, cache = args.case.split("-")
            print(json.dumps(cpu_case(root, args.case, method=method, cache=cache == "cached", steps=args.steps,
                                      resolution=args.resolution, batch=args.batch)))
            return 0
        # Each case in a fresh process, so its peak RSS is its own.
        cases = []
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--case", name, "--steps", str(args.steps),
                                  "--resolution", str(args.resolution), "--batch", str(args.batch)],
                                 capture_output=True, text=True, check=True).stdout
            cases.append(json.loads(out.strip().splitlines()[-1]))
        mode = "cpu"
    results["cases"] = cases
    out = args.out or ROOT / "bench" / "results" / f"train_step-{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for c in cases:
        print(json.dumps(c))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
