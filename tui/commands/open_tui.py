"""`tunelab [PROJECTS_DIR] [--images {auto,kitty,sixel,halfblock,none}]`: open the TUI.

PROJECTS_DIR defaults to ./projects; it may be missing or empty (the Home screen says so and offers
to create a project). The image mode comes from `--images`, else `TUNELAB_IMAGES`, else the settings
file, else `auto`. Only `auto` asks the terminal what it supports — an escape sequence and a short
wait, which must happen before Textual takes over the terminal, so it happens here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tui.widgets.image_preview import IMAGE_MODES

HELP = "open the TUI"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Open the tunelab TUI on a folder of projects.")
    p.add_argument("projects_dir", nargs="?", default="projects", metavar="PROJECTS_DIR",
                   help="folder holding the projects (default ./projects; need not exist yet)")
    p.add_argument("--images", choices=IMAGE_MODES, default=None,
                   help="how to draw images: auto asks the terminal; kitty, sixel, halfblock or none never ask "
                        "(default: $TUNELAB_IMAGES, else the settings file, else auto)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tui.app import load_settings, make_app
    from tui.widgets.image_preview import requested_mode

    settings, problem = load_settings()
    try:
        mode = requested_mode(args.images, settings)
    except ValueError as e:
        print(f"tunelab: TUNELAB_IMAGES: {e}", file=sys.stderr)
        return 2
    projects_dir = Path(args.projects_dir)
    if projects_dir.exists() and not projects_dir.is_dir():
        print(f"tunelab: {projects_dir}: not a folder", file=sys.stderr)
        return 2
    app = make_app(projects_dir, images=mode, settings=settings)
    if problem:
        app.call_later(app.notify, problem, severity="warning", timeout=10)
    app.run()
    return 0
