"""`tunelab stop RUN [--force]`: stop a run gracefully (a checkpoint is saved), or kill it."""
from __future__ import annotations

import argparse
import sys

HELP = "stop a run (gracefully; --force kills it)"

EPILOG = """\
RUN is a run directory or a run id (a unique prefix is enough) under ./projects/*/runs/.

Without --force, the trainer is asked to save a checkpoint and exit, and this command waits for it
(--timeout seconds). With --force, the trainer's processes get SIGTERM, then SIGKILL after
--kill-after seconds; only processes whose recorded start time still matches are signalled.
A `lost` run (its supervisor died) is settled: once its trainer is gone it is marked stopped, so
`tunelab resume RUN` can continue it.

exit codes: 0 the run has ended (or had already); 1 still running after the timeout; 2 no such run.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("run_dir", metavar="RUN", help="run directory or run id")
    parser.add_argument("--force", action="store_true", help="SIGTERM, then SIGKILL, the trainer's processes")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the run to end (default 120)")
    parser.add_argument("--kill-after", type=float, default=10.0,
                        help="with --force: seconds between SIGTERM and SIGKILL (default 10)")


def run(args: argparse.Namespace) -> int:
    from engine import launch
    from engine.rundir import ALIVE_STATES
    from engine.runinfo import find_run

    try:
        run_dir = find_run(args.run_dir)
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    before = run_dir.state()
    if before not in ALIVE_STATES and before != "lost":
        print(f"{run_dir.run_id}: already {before}")
        return 0
    if before == "lost":
        print(f"{run_dir.run_id}: lost (its supervisor is gone); "
              + ("killing its trainer if it still runs…" if args.force else
                 "asking its trainer, if it still runs, to save a checkpoint and stop…"), flush=True)
    elif not args.force:
        print(f"{run_dir.run_id}: asking the trainer to stop (with a checkpoint, once it has trained)…", flush=True)
    try:
        state = launch.stop_run(run_dir, force=args.force, timeout=args.timeout, kill_after=args.kill_after)
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if state in ALIVE_STATES or state == "lost":
        hint = "" if args.force else f"; `tunelab stop --force {run_dir.run_id}` kills it"
        print(f"{run_dir.run_id}: still {state} after {args.timeout:g} s{hint}", file=sys.stderr)
        return 1
    print(f"{run_dir.run_id}: {state}")
    return 0
