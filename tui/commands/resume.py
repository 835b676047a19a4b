"""`tunelab resume RUN`: continue a stopped or failed run from its newest complete checkpoint."""
from __future__ import annotations

import argparse
import sys

HELP = "resume a run from its newest complete checkpoint"

EPILOG = """\
RUN is a run directory or a run id (a unique prefix is enough) under ./projects/*/runs/.
A new supervisor continues the same run directory: the same step count, loss curve and sample columns.
Refused while the run is alive or lost (settle a lost run with `tunelab stop --force RUN`), when it has
finished, and when it has no complete checkpoint.

exit codes: 0 resumed (running detached); 1 refused; 2 no such run.
With --wait, as `tunelab run --wait`: 0 finished, 1 failed or lost, 3 stopped, 130 interrupted.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("run_dir", metavar="RUN", help="run directory or run id")
    parser.add_argument("--wait", action="store_true",
                        help="follow the resumed run until it ends (exit codes as for `tunelab run --wait`)")


def run(args: argparse.Namespace) -> int:
    from engine import launch
    from engine.runinfo import find_run

    try:
        run_dir = find_run(args.run_dir)
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        offset = run_dir.events_path.stat().st_size
    except FileNotFoundError:
        offset = 0
    try:
        launch.resume_run(run_dir)
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ck = run_dir.latest_complete_checkpoint()
    print(f"{run_dir.path}: resuming from {ck.path.name if ck else '?'}", flush=True)
    if args.wait:
        from tui.commands.run import follow

        return follow(run_dir, offset=offset)
    return 0
