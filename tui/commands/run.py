"""`tunelab run PROJECT CONFIG [--set k=v]… [--wait]`: launch a detached run and print its directory."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

HELP = "launch a training run, detached; print its run directory"

# Exit codes (also in the command's --help).
EXIT_OK = 0        # launched (without --wait) or finished (with --wait)
EXIT_FAILED = 1    # the run failed, or was lost (its supervisor died)
EXIT_INVALID = 2   # bad arguments, project or config: nothing was created
EXIT_STOPPED = 3   # the run was stopped (by `tunelab stop`, the TUI, or its budget)
EXIT_INTERRUPTED = 130  # Ctrl-C while waiting; the run goes on

EPILOG = """\
PROJECT is a project folder or a name in ./projects. CONFIG is a name in the project's configs/ (with
or without .toml) or a path to a TOML file. The run keeps going after this command returns, after the
terminal closes and after SSH drops; follow it with `tunelab status`, `tunelab run … --wait`, or the TUI.

exit codes:
  0    launched (without --wait); the run finished (with --wait)
  1    the run failed or was lost (with --wait), or its supervisor could not start
  2    invalid arguments, project or config; nothing was created
  3    the run was stopped (with --wait)
  130  interrupted while waiting; the run goes on
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("project", help="project folder, or a project name in ./projects")
    parser.add_argument("config", help="config name in the project's configs/, or a path to a TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (TOML value), e.g. --set train.epochs=20; repeatable")
    parser.add_argument("--wait", action="store_true",
                        help="follow the run, one line per event, until it ends; exit code says how it ended")


def run(args: argparse.Namespace) -> int:
    from engine import launch
    from engine.runinfo import find_project
    from engine.schema import ConfigError

    try:
        project = find_project(args.project)
        run_dir = launch.create_run(project, args.config, args.overrides,
                                    on_warning=lambda w: print(f"warning: {w}", file=sys.stderr))
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except (LookupError, launch.LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        launch.start_supervisor(run_dir)
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(run_dir.path)
        return EXIT_FAILED
    print(run_dir.path, flush=True)
    if not args.wait:
        return EXIT_OK
    return follow(run_dir)


def describe_event(ev: dict[str, Any]) -> str | None:
    """One compact line per event worth a line; None for the rest."""
    from engine.runinfo import fmt_duration

    kind = ev.get("kind")
    if kind == "progress":
        parts = [f"step {ev.get('step')}" + (f"/{ev['total_steps']}" if ev.get("total_steps") else "")]
        if ev.get("epoch") is not None:
            parts.append(f"epoch {ev['epoch']}" + (f"/{ev['epochs']}" if ev.get("epochs") else ""))
        if isinstance(ev.get("loss"), (int, float)):
            parts.append(f"loss {ev['loss']:.4f}")
        if isinstance(ev.get("lr"), (int, float)):
            parts.append(f"lr {ev['lr']:.2e}")
        img_s = ev.get("img_s", ev.get("img_per_s", ev.get("img/s")))
        if isinstance(img_s, (int, float)):
            parts.append(f"{img_s:.1f} img/s")
        eta = ev.get("eta_s", ev.get("eta"))
        if isinstance(eta, (int, float)):
            parts.append(f"ETA {fmt_duration(eta)}")
        return "  ".join(parts)
    if kind == "epoch":
        took = f" in {fmt_duration(ev['seconds'])}" if isinstance(ev.get("seconds"), (int, float)) else ""
        return f"epoch {ev.get('epoch')}" + (f"/{ev['epochs']}" if ev.get("epochs") else "") + f" done{took}"
    if kind == "checkpoint":
        return f"checkpoint {Path(str(ev.get('path', ''))).name or ev.get('step')}"
    if kind == "sample_done":  # one line per sample column, not one per image
        took = f" in {fmt_duration(ev['seconds'])}" if isinstance(ev.get("seconds"), (int, float)) else ""
        new = " new" if ev.get("backfill") else ""  # cells added to an earlier column on resume
        return f"samples {ev.get('column')}: {ev.get('images')}{new} image(s){took}"
    if kind == "resumed":
        return f"resumed from {Path(str(ev.get('checkpoint', ''))).name or ev.get('step')}"
    if kind == "val_loss" and isinstance(ev.get("loss"), (int, float)):
        return f"val_loss {ev['loss']:.4f} (epoch {ev.get('epoch')})"
    if kind == "prior":  # DreamBooth class images, drawn (or reused) before training starts
        return f"class images {ev.get('done')}/{ev.get('total')} ({ev.get('reused', 0)} reused)"
    if kind == "phase":  # pivotal tuning: textual inversion, then LoRA
        # the event's step is the steps done before the phase; steps count from 1, as train.log says
        # ("switching to LoRA at step 13", "textual inversion for steps 1-12")
        step = ev.get("step")
        first = step + 1 if isinstance(step, int) else step
        return f"phase {ev.get('phase')} from step {first}"
    if kind == "warning":
        return f"warning: {ev.get('message', '')}"
    if kind == "error":
        return f"error: {ev.get('message', '')}"
    if kind in ("stopped", "finished"):
        return f"{kind} at step {ev.get('step')}"
    return None


def follow(run_dir: Any, poll: float = 0.25, out=None, offset: int = 0) -> int:
    """Print events (from byte `offset` of events.jsonl) as they come until the run is no longer alive;
    map the end state to an exit code."""
    from engine.runinfo import RunWatcher, fmt_cost, fmt_duration

    out = out or sys.stdout
    watcher = RunWatcher(run_dir)
    watcher.tail.offset = offset
    try:
        while True:
            summary = watcher.refresh()
            for ev in watcher.new_events:
                line = describe_event(ev)
                if line:
                    print(line, file=out, flush=True)
            if not summary.alive:
                # The status can land a moment before the trainer's last lines are read: one more pass.
                for ev in watcher.tail.read_new():
                    line = describe_event(ev)
                    if line:
                        print(line, file=out, flush=True)
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        print(f"\nstill running in the background; stop it with `tunelab stop {run_dir.path}`", file=sys.stderr)
        return EXIT_INTERRUPTED
    cost = f", {fmt_cost(summary)}" if summary.cost is not None else ""
    line = f"run {summary.state} after {fmt_duration(summary.elapsed_s)}{cost}"
    if summary.error:
        line += f": {summary.error}"
    print(line, file=out if summary.state == "finished" else sys.stderr, flush=True)
    return {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(summary.state, EXIT_FAILED)
