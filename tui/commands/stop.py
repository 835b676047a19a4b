"""`tunelab stop RUN [--force]`: stop a run gracefully (a checkpoint is saved), or kill it."""
from __future__ import annotations

import argparse
import sys
import time

HELP = "stop a run (gracefully; --force kills it)"

EPILOG = """\
RUN is a run directory or a run id (a unique prefix is enough) under ./projects/*/runs/.

Without --force, the trainer is asked to save a checkpoint and exit, and this command waits for the
run to end. The supervisor owns the stop: if the trainer has not exited within launch.stop_timeout_s
(default 600 s, room for a big checkpoint) it sends SIGTERM to the trainer's processes, then SIGKILL,
and the run ends `stopped` if a complete checkpoint holds every step trained, else `failed`. So
interrupting this command (or a short --timeout) never leaves a stop half-done; it is printed when
the supervisor will act. With --force, the trainer's processes get SIGTERM now (the trainer saves a
checkpoint, without samples, if it can), then SIGKILL after --kill-after seconds (default {kill:g},
as the TUI's K); only processes whose recorded start time still matches are signalled.
A `lost` run (its supervisor died) is settled: once its trainer is gone it is marked stopped, so
`tunelab resume RUN` can continue it.

exit codes: 0 the run has ended (or had already); 1 still running after the timeout; 2 no such run;
130 interrupted while waiting (the stop goes on).
"""

# Waiting past the supervisor's SIGKILL, for it to see the trainer go and write the final status.
SETTLE_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.launch import FORCE_KILL_AFTER_S

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG.format(kill=FORCE_KILL_AFTER_S)
    parser.add_argument("run_dir", metavar="RUN", help="run directory or run id")
    parser.add_argument("--force", action="store_true", help="SIGTERM, then SIGKILL, the trainer's processes")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the run to end (default: until the supervisor's stop deadline "
                             "and its SIGKILL have passed; 120 with --force or for a lost run)")
    parser.add_argument("--kill-after", type=float, default=FORCE_KILL_AFTER_S,
                        help=f"with --force: seconds between SIGTERM and SIGKILL (default {FORCE_KILL_AFTER_S:g})")


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


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
    graceful = not args.force and before != "lost"
    if before == "lost":
        print(f"{run_dir.run_id}: lost (its supervisor is gone); "
              + ("killing its trainer if it still runs…" if args.force else
                 "asking its trainer, if it still runs, to save a checkpoint and stop…"), flush=True)
    elif graceful:
        print(f"{run_dir.run_id}: asking the trainer to stop (with a checkpoint, once it has trained)…", flush=True)
    timeout = 120.0 if args.timeout is None else args.timeout
    plan = None
    try:
        if graceful:
            state = launch.stop_run(run_dir, force=False, timeout=0.0)
            plan = launch.stop_deadline(run_dir) if state in ALIVE_STATES else None
            if plan is not None:
                print(f"{run_dir.run_id}: if it has not exited by {clock(plan['deadline_t'])} (launch.stop_timeout_s"
                      + (f" = {plan['timeout_s']:g} s" if plan["timeout_s"] is not None else "")
                      + f"), the supervisor sends it SIGTERM, and SIGKILL {plan['kill_after_s']:g} s later",
                      flush=True)
                if args.timeout is None:
                    timeout = max(0.0, plan["deadline_t"] - time.time()) + plan["kill_after_s"] + SETTLE_S
            state = launch.wait_state(run_dir, timeout)
        else:
            state = launch.stop_run(run_dir, force=args.force, timeout=timeout, kill_after=args.kill_after)
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{run_dir.run_id}: still {run_dir.state()}; the stop goes on without this command"
              + (f" (the supervisor terminates the trainer at {clock(plan['deadline_t'])} if it has not exited)"
                 if plan else ""), file=sys.stderr)
        return 130
    if state in ALIVE_STATES or state == "lost":
        if plan is not None and time.time() < plan["deadline_t"]:
            hint = (f"; the supervisor terminates it at {clock(plan['deadline_t'])} if it has not exited; "
                    f"`tunelab stop --force {run_dir.run_id}` kills it now")
        elif not args.force:
            hint = f"; `tunelab stop --force {run_dir.run_id}` kills it"
        else:
            hint = ""
        print(f"{run_dir.run_id}: still {state} after {timeout:g} s{hint}", file=sys.stderr)
        return 1
    status = run_dir.read_status() or {}
    detail = status.get("error") if state in ("stopped", "failed") and status.get("stop_escalation") else None
    print(f"{run_dir.run_id}: {state}" + (f" ({str(detail).splitlines()[0]})" if detail else ""))
    return 0
