"""`tunelab resume RUN [--set key=value]…`: continue a run from its newest complete checkpoint, optionally
training longer, with another time budget, or saving and sampling differently (engine/resume.py)."""
from __future__ import annotations

import argparse
import sys

HELP = "resume a run from its newest complete checkpoint (optionally --set epochs, budget, save, sample)"

EPILOG = """\
RUN is a run directory or a run id (a unique prefix is enough) under ./projects/*/runs/.
A new supervisor continues the same run directory: the same step count, loss curve and sample columns.
Refused while the run is alive or lost (settle a lost run with `tunelab stop --force RUN`) and when it
has no complete checkpoint.

--set changes the run's config before resuming, for the keys that keep the checkpoint exact:
  train.epochs, train.max_steps    train longer (or shorter, but beyond the checkpoint)
  budget.*                         e.g. budget.max_hours=4 for a run stopped by its budget (hours count
                                   over all attempts)
  save.*, sample.*                 what is saved and sampled from now on (sample.prompts: append only)
Other keys are refused (start a new run for them). New sample prompts or seeds are also rendered for
every earlier checkpoint the run still has with its state/ (also where it has no sample column yet: a
run launched with no prompts), and for the base column (epoch 0) unless sample.at_start = false, so
the contact sheet compares them at every checkpoint; existing images are never redrawn. A finished run can be
resumed when the new train.epochs / train.max_steps lie beyond its last checkpoint, or to render new
sample prompts/seeds only:

  tunelab resume RUN --set train.epochs=60            # it finished at 30: train on to 60
  tunelab resume RUN --set 'sample.prompts=["a red circle", "a red car"]'   # add a prompt: no training

The config the last attempt ran with is kept as config.attempt-N.toml; config.toml gets the new values
and a comment naming them. LR schedule: the run goes on as if it had been planned with the new length
from the start. A constant schedule is unchanged; cosine and linear are recomputed for the new total,
so the learning rate at the resumed step moves to the new curve's value (for a finished cosine run it
rises from about 0 back up). The trainer's `resumed` event gives both values and the changes.

A run whose config named no sample prompts samples the project's goals as they were at launch (they
are frozen into its config.toml), so every column shows the same prompts; resume says which goals
were added to project.toml since, and `--set 'sample.prompts=[…]'` adds them to this run.

Two resumes of one run at the same moment cannot both rewrite its config: the second is refused
("another resume of RUN is in progress") and changes nothing.

exit codes: 0 resumed (running detached); 1 refused; 2 no such run, or a --set that resume does not take
(nothing changed). With --wait, as `tunelab run --wait`: 0 finished, 1 failed or lost, 3 stopped,
130 interrupted.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("run_dir", metavar="RUN", help="run directory or run id")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config key before resuming (repeatable; keys: train.epochs, "
                             "train.max_steps, budget.*, save.*, sample.*)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the resumed run until it ends (exit codes as for `tunelab run --wait`)")


def run(args: argparse.Namespace) -> int:
    from engine import launch
    from engine.resume import ResumeInputError, describe_changes, resume_with_changes
    from engine.runinfo import find_run
    from engine.schema import ConfigError

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
        _pid, plan = resume_with_changes(run_dir, args.overrides)
    except ConfigError as e:
        print(f"error: the run's config with these --set values is invalid (nothing changed):\n{e}", file=sys.stderr)
        return 2
    except ResumeInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except launch.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ck = run_dir.latest_complete_checkpoint()
    print(f"{run_dir.path}: resuming from {ck.path.name if ck else '?'}", flush=True)
    note = launch.goals_note(run_dir, args.overrides)
    if note:
        print(f"note: {note}", flush=True)
    if plan is not None and plan.changes:
        line = f"changed: {describe_changes(plan.changes)}"
        if plan.total_steps is not None and plan.total_steps != plan.total_steps_before:
            line += f" ({plan.total_steps_before} → {plan.total_steps} steps)"
        print(line, flush=True)
        if plan.new_cells:
            print(f"{plan.new_cells} new sample cell(s) (prompt × seed): rendered for every checkpoint the run "
                  "still has" + (" and the base column" if plan.cfg.sample.at_start else "")
                  + ("; it trains no further" if plan.sample_only else ""), flush=True)
    if args.wait:
        from tui.commands.run import follow

        return follow(run_dir, offset=offset)
    return 0
