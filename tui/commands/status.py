"""`tunelab status [PROJECT|RUN] [--json]`: a table of runs, or one run in detail."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "show runs of a project, or one run"

EPILOG = """\
With no argument, lists the runs of every project in ./projects. PROJECT is a project folder or name;
RUN is a run directory or a run id (a unique prefix is enough). A run whose status says it is alive but
whose supervisor is gone is shown as `lost` (settle it with `tunelab stop --force RUN`).
Cost = elapsed hours (all attempts) x budget.gpu_hourly_cost of the run's config.

--json prints {"runs": [ {...}, ... ]}, one object per run, with the fields of engine.runinfo.RunSummary.

exit codes: 0 shown; 2 no such project or run.
"""

COLUMNS = ("RUN", "STATE", "EPOCH", "STEP", "LOSS", "IMG/S", "ETA", "ELAPSED", "COST")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("target", nargs="?", default=None, metavar="PROJECT|RUN",
                        help="a project (folder or name) or a run (directory or id); default: all of ./projects")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from engine.rundir import list_runs
    from engine.runinfo import find_project, find_run, summarize

    projects_dir = Path("projects")
    single = False
    if args.target is None:
        try:
            projects = sorted(p for p in projects_dir.iterdir() if p.is_dir())
        except OSError:
            print(f"error: no {projects_dir}/ here; give a PROJECT or RUN", file=sys.stderr)
            return 2
        runs = [r for p in projects for r in list_runs(p)]
    else:
        target = Path(args.target)
        if (target / "project.toml").is_file() or (target / "runs").is_dir():
            runs = list_runs(target)
        else:
            try:
                runs = [find_run(args.target, projects_dir)]
                single = True
            except LookupError as run_error:
                try:
                    runs = list_runs(find_project(args.target, projects_dir))
                except LookupError:
                    print(f"error: {run_error}", file=sys.stderr)
                    return 2
    summaries = [summarize(r) for r in runs]
    if args.json:
        try:
            sys.stdout.write(json.dumps({"runs": [s.to_json() for s in summaries]}, indent=2) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `tunelab status --json | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not summaries:
        print("no runs")
        return 0
    print_table(summaries, show_project=args.target is None)
    if single:
        print_details(summaries[0])
    return 0


def row(s) -> list[str]:
    from engine.runinfo import fmt_cost, fmt_duration, fmt_progress

    step = "-" if s.step is None else (f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step))
    return [
        s.run_id, s.state, fmt_progress(s), step,
        "-" if s.loss is None else f"{s.loss:.4f}",
        "-" if s.img_s is None else f"{s.img_s:.1f}",
        fmt_duration(s.eta_s), fmt_duration(s.elapsed_s), fmt_cost(s),
    ]


def print_table(summaries, show_project: bool) -> None:
    header = list(COLUMNS)
    rows = [row(s) for s in summaries]
    if show_project:
        header.insert(0, "PROJECT")
        rows = [[s.project] + r for s, r in zip(summaries, rows)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for r in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def print_details(s) -> None:
    from engine.runinfo import fmt_cost, fmt_duration, fmt_started, fmt_time

    print()
    print(f"path:        {s.path}")
    if s.method:
        print(f"method:      {s.method}" + (f" — {s.description}" if s.description else ""))
    ended = fmt_time(s.ended) if s.ended else ""
    print(f"started:     {fmt_started(s)}" + (f"   ended: {ended}" if ended else ""))
    print(f"checkpoints: {s.checkpoints}" + (f" (latest {s.last_checkpoint})" if s.last_checkpoint else "")
          + f"   sample columns: {s.sample_columns}")
    if s.epoch_seconds:
        per = f", {fmt_cost(s, s.cost_per_epoch)}" if s.cost_per_epoch is not None else ""
        print(f"per epoch:   {fmt_duration(s.epoch_seconds)}{per}")
    if s.warnings:
        print(f"warnings:    {s.warnings}")
    if s.state == "stopping":
        from engine.runinfo import fmt_stop_reason

        print(f"stopping:    {fmt_stop_reason(s)}")
    if s.state == "lost":
        print("lost:        the supervisor is gone; `tunelab stop --force RUN` settles it, then `tunelab resume RUN`")
    if s.state == "stopped" and (s.error or s.stop_reason):  # the supervisor's note says how the stop went
        from engine.runinfo import fmt_stop_reason

        print("stopped:     " + "; ".join(x for x in (fmt_stop_reason(s), s.error) if x))
    elif s.error:
        print(f"error:       {s.error}")
