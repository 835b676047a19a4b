"""`tunelab doctor`: what this machine and terminal give tunelab — image mode, colours, GPU, accelerate, disk.

Nothing here may hang or fail on a bare SSH box: the terminal graphics probe is the TUI's own
(`tui.graphics_probe`), run only on a TTY with a deadline and skipped when `TUNELAB_IMAGES` or the
settings file names a mode, so doctor reports the mode the TUI will use; GPU readings go through NVML and say "none" without one; package
versions come from installed metadata, so torch is never imported.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

HELP = "report terminal graphics, colours, GPU, accelerate and disk"
IMAGE_MODES = ("auto", "kitty", "sixel", "halfblock", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--projects-dir", default="projects", help="whose free disk to report (default ./projects)")


def detect_image_mode(timeout: float | None = None) -> tuple[str, str]:
    """(mode, how it was decided), decided as the TUI decides it (tui/commands/open_tui.py):
    `TUNELAB_IMAGES`, else the settings file, else `auto`, which asks the terminal with the TUI's own
    probe (`tui.graphics_probe`: waits for the DA1 reply as long as the link needs, at most 2 s), so
    what doctor says is what the TUI will draw with."""
    from tui import graphics_probe
    from tui.app import load_settings, settings_path
    from tui.widgets.image_preview import requested_mode

    env = os.environ.get("TUNELAB_IMAGES", "").strip().lower()
    if env and env not in IMAGE_MODES:
        return "invalid", f"TUNELAB_IMAGES={env!r} is not one of {', '.join(IMAGE_MODES)}"
    settings, problem = load_settings()
    note = f"; settings file: {problem}" if problem else ""
    mode = requested_mode(None, settings)
    if mode != "auto":
        return mode, ("from TUNELAB_IMAGES" if env else f"from the settings file {settings_path()}") + note
    result = graphics_probe.probe(graphics_probe.DEFAULT_TIMEOUT if timeout is None else timeout)
    if result.answered:
        cell = f", cells {result.cell[0]}x{result.cell[1]} px" if result.cell else ""
        return result.mode, f"asked the terminal: it answered in {result.seconds:.2f} s{cell}" + note
    if result.reason == "not a terminal":
        return "halfblock", "not a terminal, so not asked (the TUI falls back to half blocks)" + note
    return result.mode, result.reason + note


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
