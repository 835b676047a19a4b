"""`tunelab doctor`: what this machine and terminal give tunelab — image mode, colours, GPU, accelerate, disk.

Nothing here may hang or fail on a bare SSH box: the terminal graphics probe (textual-image asks the
terminal with an escape sequence) runs only on a TTY, in a thread with a deadline, and is skipped when
`TUNELAB_IMAGES` names a mode; GPU readings go through NVML and say "none" without one; package
versions come from installed metadata, so torch is never imported.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
from importlib import metadata
from pathlib import Path

HELP = "report terminal graphics, colours, GPU, accelerate and disk"
IMAGE_MODES = ("auto", "kitty", "sixel", "halfblock", "none")
PROBE_TIMEOUT_S = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--projects-dir", default="projects", help="whose free disk to report (default ./projects)")


def detect_image_mode(timeout: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    """(mode, how it was decided). `TUNELAB_IMAGES` wins; else textual-image asks the terminal."""
    env = os.environ.get("TUNELAB_IMAGES", "").strip().lower()
    if env:
        if env not in IMAGE_MODES:
            return "invalid", f"TUNELAB_IMAGES={env!r} is not one of {', '.join(IMAGE_MODES)}"
        if env != "auto":
            return env, "from TUNELAB_IMAGES"
    out, inp = sys.__stdout__, sys.__stdin__
    if not (out and inp and out.isatty() and inp.isatty()):
        return "halfblock", "not a terminal, so not asked (the TUI falls back to half blocks)"
    result: dict[str, str] = {}

    def probe() -> None:
        try:
            from textual_image import renderable  # importing it queries the terminal (sixel, then kitty)

            result["mode"] = {renderable.SixelImage: "sixel", renderable.TGPImage: "kitty"}.get(
                renderable.Image, "halfblock")
        except Exception as e:  # noqa: BLE001 - a probe must never take doctor down
            result["error"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True, name="image-probe")
    t.start()
    t.join(timeout)
    if t.is_alive():
        return "halfblock", f"the terminal did not answer within {timeout:g} s; set TUNELAB_IMAGES to choose"
    if "error" in result:
        return "halfblock", f"probe failed ({result['error']})"
    return result["mode"], "asked the terminal (textual-image)"


def colour_system() -> tuple[str, str]:
    """(Rich's colour system, how it was decided). When the output is not a terminal (a pipe, a file),
    the system a terminal with this TERM/COLORTERM would get."""
    from rich.console import Console

    out = sys.__stdout__ or sys.stdout
    found = Console(file=out).color_system
    if found or (out and out.isatty()):
        return found or "none", "this terminal"
    return Console(file=out, force_terminal=True).color_system or "none", \
        "from TERM/COLORTERM; this output is not a terminal"


def gpu_report() -> list[str]:
    try:
        from tui.gpu import GpuProbe
    except ImportError:
        return ["none (GPU probe unavailable)"]
    probe = GpuProbe.open()
    if not probe.available:
        return [probe.reason.replace("no NVIDIA GPU", "none", 1) if probe.reason.startswith("no NVIDIA GPU")
                else probe.reason]
    out = []
    for r in probe.read():
        mem = f", {r.memory_used / 2**30:.1f}/{r.memory_total / 2**30:.1f} GiB" if r.memory_total else ""
        out.append(f"{r.index}: {r.name}{mem}")
    return out or ["none"]


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def accelerate_config_path() -> Path:
    """Where `accelerate config` writes its default (accelerate's own rule: $HF_HOME, else XDG cache)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(hf_home)) / "accelerate" / "default_config.yaml"


def free_disk(path: Path) -> tuple[str, int | None]:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return str(p), shutil.disk_usage(p).free
    except OSError:
        return str(p), None


def report(projects_dir: str = "projects") -> dict:
    mode, how = detect_image_mode()
    acc_cfg = accelerate_config_path()
    where, free = free_disk(Path(projects_dir))
    colours, colours_how = colour_system()
    return {
        "images": mode,
        "images_how": how,
        "colours": colours,
        "colours_how": colours_how,
        "TERM": os.environ.get("TERM", ""),
        "COLORTERM": os.environ.get("COLORTERM", ""),
        "tmux": bool(os.environ.get("TMUX")),
        "gpu": gpu_report(),
        "torch": version("torch"),
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "accelerate": version("accelerate"),
        "accelerate_config": str(acc_cfg) if acc_cfg.is_file() else None,
        "disk_path": where,
        "disk_free_bytes": free,
    }


def run(args: argparse.Namespace) -> int:
    r = report(args.projects_dir)
    if args.json:
        print(json.dumps(r, indent=2))
        return 1 if r["images"] == "invalid" else 0
    lines = [
        ("images", f"{r['images']}  ({r['images_how']})"),
        ("colours", f"{r['colours']}  ({r['colours_how']})"),
        ("terminal", f"TERM={r['TERM'] or '(unset)'} COLORTERM={r['COLORTERM'] or '(unset)'}"
                     + ("  inside tmux (images need `set -g allow-passthrough on`)" if r["tmux"] else "")),
        ("gpu", "; ".join(r["gpu"])),
        ("torch", r["torch"]),
        ("diffusers", r["diffusers"]),
        ("transformers", r["transformers"]),
        ("accelerate", r["accelerate"] + (f"  (default config: {r['accelerate_config']})" if r["accelerate_config"]
                                          else "  (no default config; `accelerate config` writes one, "
                                               "or runs use launch.* keys)")),
        ("disk", f"{_size(r['disk_free_bytes'])} free at {r['disk_path']}"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k.ljust(width)}  {v}")
    return 1 if r["images"] == "invalid" else 0


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)
