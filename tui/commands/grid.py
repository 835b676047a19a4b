"""`tunelab grid RUN [-o sheet.png] [--seed N|all]`: write a run's contact sheet (prompts × base and checkpoints) as a PNG.

RUN is a run directory, or a run id looked up under ./projects/*/runs/. The picture is the one the TUI's
Compare tab exports (`engine.contact_sheet`). A run with no sample images yet writes nothing and exits 1,
saying why (no prompts at launch, or none rendered yet).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a run's contact sheet (prompts x checkpoints) as a PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory, or a run id (or a unique prefix of one) "
                        "under ./projects/*/runs/")
    parser.add_argument("-o", "--output", metavar="PNG",
                        help="where to write the sheet (default: RUN/contact-sheet.png, or -s<SEED> added)")
    parser.add_argument("--seed", type=_seed, default=None,
                        help="which seed's images (default: the first seed); `all`: one sheet per seed, "
                             "named <output>-s<SEED>.png")
    parser.add_argument("--cell", type=int, default=128, help="cell size in pixels (default 128)")


def _seed(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed number or `all`") from None


def find_run(spec: str, projects: Path = Path("projects")) -> Path | None:
    """A run directory from a path, or a run id (or a unique prefix) under PROJECTS/*/runs/."""
    from engine.runinfo import find_run as lookup

    path = Path(spec)
    if path.is_dir() and ((path / "samples").is_dir() or (path / "config.toml").is_file()):
        return path
    try:
        return lookup(spec, projects).path
    except LookupError:
        return None


def run(args: argparse.Namespace) -> int:
    from engine.contact_sheet import SheetLayout, later_legend, load_sheet, write_sheet

    run_path = find_run(args.run)
    if run_path is None:
        print(f"tunelab grid: {args.run}: not a run directory, nor a run id under ./projects/*/runs/",
              file=sys.stderr)
        return 1
    if args.cell < 16:
        print(f"tunelab grid: --cell {args.cell}: must be >= 16", file=sys.stderr)
        return 2
    first = load_sheet(run_path)
    if not first.columns:  # an empty PNG and exit 0 told nothing; say why there is nothing to show
        print(f"tunelab grid: {run_path} has no sample images: {_why_no_samples(run_path)}; nothing written",
              file=sys.stderr)
        return 1
    seeds = first.seeds
    if args.seed == "all":
        base = Path(args.output) if args.output else run_path / "contact-sheet.png"
        jobs = [(seed, base.with_name(f"{base.stem}-s{seed}{base.suffix or '.png'}")) for seed in seeds] \
            or [(None, base)]
    else:
        out = Path(args.output) if args.output else \
            run_path / (f"contact-sheet-s{args.seed}.png" if args.seed is not None else "contact-sheet.png")
        jobs = [(args.seed, out)]
    if args.seed not in (None, "all") and seeds and args.seed not in seeds:
        print(f"tunelab grid: seed {args.seed} has no samples; seeds with samples: "
              f"{', '.join(map(str, seeds))}", file=sys.stderr)
        return 1
    for seed, out in jobs:
        try:
            written, sheet = write_sheet(run_path, out, seed=seed, layout=SheetLayout(cell=args.cell))
        except OSError as e:
            print(f"tunelab grid: cannot write {out}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(written)
        print(f"{sheet.shape()}, seed {sheet.seed}, "
              f"{sheet.filled()} of {len(sheet.rows) * len(sheet.columns)} cells filled", file=sys.stderr)
        if sheet.later_cells():  # marked on the sheet too: a corner mark and this line as its legend
            print(f"  {later_legend(sheet.later_cells())}", file=sys.stderr)
    return 0


def _why_no_samples(run_path: Path) -> str:
    """The likely reason, from the run's config.toml (the prompts it was launched with are frozen there)."""
    import tomllib

    try:
        sample = tomllib.loads((run_path / "config.toml").read_text(encoding="utf-8")).get("sample", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "no sample folder yet"
    if not sample.get("prompts"):
        return ("its config has no sample.prompts and the project had no goals when it was launched; add "
                f"prompts with `tunelab resume {run_path.name} --set 'sample.prompts=[\"...\"]'` (rendered for "
                "every checkpoint it kept), or goals in project.toml for the next run")
    return "none rendered yet (samples are drawn at each save, and before training with sample.at_start)"
