"""The `tunelab` command line: a thin router to one module per subcommand in `tui.commands`.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int` and is imported only
when its command runs, so `tunelab --help` and `tunelab check` never import torch (or textual).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

# name -> module under tui.commands. Order is the order shown in --help.
COMMANDS = {
    "new": "new",
    "check": "check",
    "run": "run",
    "status": "status",
    "stop": "stop",
    "resume": "resume",
    "grid": "grid",
    "caption": "caption",
    "doctor": "doctor",
}

HELPS = {
    "new": "create a project",
    "check": "validate a project (and a config); print the resolved dataset and config",
    "run": "launch a training run, detached; print its run directory",
    "status": "show runs of a project, or one run",
    "stop": "stop a run (gracefully; --force kills it)",
    "resume": "resume a run from its newest complete checkpoint",
    "grid": "write a run's contact sheet (prompts x checkpoints) as a PNG",
    "caption": "bulk caption operations, with --dry-run and --undo",
    "doctor": "report terminal graphics, colours, GPU, accelerate and disk",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        usage="tunelab [PROJECTS_DIR] [--images MODE]   (the TUI; PROJECTS_DIR defaults to ./projects)\n"
              "       tunelab COMMAND [ARGS ...]",
        description="Fine-tune Stable Diffusion from a terminal. With no command, opens the TUI on PROJECTS_DIR.",
    )
    parser.add_argument("--version", action="version", version=f"tunelab {_version()}")
    # prog="tunelab": argparse would otherwise build each command's prog from the custom usage above, and
    # `tunelab run --help` (and every argument error) began with both lines of the TUI's usage.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="tunelab")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=HELPS[name], description=HELPS[name])
        if name == wanted:  # only the command that runs pays for importing its module
            mod = importlib.import_module(f"tui.commands.{module}")
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tunelab")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        args = build_parser(argv).parse_args(argv)
        try:
            return int(args._module.run(args) or 0)
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `tunelab check … | head`: the reader left; that is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if argv and argv[0] in ("-h", "--help"):
        build_parser(argv).print_help()
        return 0
    if argv and argv[0] == "--version":
        print(f"tunelab {_version()}")
        return 0
    if argv and not argv[0].startswith("-") and not os.path.exists(argv[0]):
        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1, cutoff=0.75)
        if close:  # `tunelab chek demo`: a typo, not a projects folder to create
            print(f"tunelab: {argv[0]!r} is neither a command nor a folder; did you mean `tunelab {close[0]}`? "
                  f"(commands: {', '.join(COMMANDS)})", file=sys.stderr)
            return 2
    # No command: open the TUI.
    from tui.commands import open_tui

    return open_tui.main(argv)


if __name__ == "__main__":
    sys.exit(main())
