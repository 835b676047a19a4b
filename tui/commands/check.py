"""`tunelab check PROJECT [CONFIG]`: validate a project (and a run config) and print what training would see.

Prints the concepts with repeats and counts, the effective images and steps per epoch, every problem
with its path and reason, and with CONFIG the fully resolved config and its validation errors.
Exit status: 1 when the project cannot be trained as it is (invalid project.toml or config, a missing
concept folder, unreadable metadata, no usable image, anything `tunelab run` refuses beyond the schema —
`engine.launch.prelaunch_check`: a bad base model, a textual-inversion placeholder already in the
tokenizer, a missing accelerate config file; with --strict also any unreadable image or orphan caption), else 0. Bad images alone are not errors: a run skips them.
Caption flags and token counts are of what the config's method trains (`engine.captionuse`): DreamBooth's
instance prompt replaces the captions; textual inversion and pivotal tuning need none (an image without
one trains on the placeholder alone) and count the caption with the placeholder put in.
It never writes the user's files; only the disposable header cache `.cache/scan.json` (--no-cache: not even that).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

HELP = "validate a project (and a config); print the resolved dataset and config"
SHOWN_PER_FLAG = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="project folder, or a name under ./projects")
    p.add_argument("config", nargs="?", help="run config: a name in the project's configs/ (lora or lora.toml) or a path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, as `tunelab run` would (repeatable)")
    p.add_argument("--resolution", type=int, default=None,
                   help="flag images smaller than this (default: the config's data.resolution; none without a config)")
    p.add_argument("--all", action="store_true", help="list every flagged image, not the first %d per kind" % SHOWN_PER_FLAG)
    p.add_argument("--strict", action="store_true", help="exit 1 also for unreadable images and orphan captions")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the header cache .cache/scan.json")
    p.add_argument("--projects-dir", default="projects", help=argparse.SUPPRESS)


def resolve_config_path(arg: str, project_dir: Path) -> Path:
    """A config argument: a name in the project's configs/ (`lora` or `lora.toml`), else a path."""
    for c in (project_dir / "configs" / arg, project_dir / "configs" / f"{arg}.toml", Path(arg)):
        if c.is_file():
            return c
    if "/" in arg or Path(arg).is_absolute():
        return Path(arg)
    return project_dir / "configs" / (arg if arg.endswith(".toml") else f"{arg}.toml")


def run(args: argparse.Namespace) -> int:
    from engine.config import dump_config, load_run_config
    from engine.project import FLAG_UNREADABLE, load_project_file, resolve_project, scan_project
    from engine.schema import ConfigError

    out = sys.stdout
    errors: list[str] = []
    project_dir = resolve_project(args.project, args.projects_dir)
    if not project_dir.is_dir():
        print(f"{args.project}: no such project (not a folder, and not a name under {args.projects_dir}/)", file=sys.stderr)
        return 1

    try:
        pf = load_project_file(project_dir)
    except ConfigError as e:
        print(f"project.toml has errors:\n{_indent(str(e))}", file=sys.stderr)
        return 1

    cfg = None
    if args.config:
        cpath = resolve_config_path(args.config, project_dir)
        try:
            cfg = load_run_config(cpath, args.overrides)
        except ConfigError as e:
            errors.append(f"config has errors:\n{_indent(str(e))}")

    resolution = args.resolution or (cfg.data.resolution if cfg else None)
    ds = scan_project(project_dir, resolution=resolution, use_cache=not args.no_cache, project=pf,
                      concepts=(cfg.data.concepts if cfg else None) or None)

    # What the method trains each caption as (engine.captionuse, the trainer's rules): DreamBooth's
    # instance prompt replaces the captions, textual inversion needs none; flags that do not apply go.
    use = None
    if cfg is not None:
        from engine.captionuse import caption_use

        use = caption_use(cfg, ds.usable_items, pf.goals.as_dict())
        for i in ds.items:
            i.flags = [f for f in i.flags if use.applies(f)]
    instance_prompt = _instance_prompt(cfg)
    if instance_prompt:
        tokens_note = _count_prompt_tokens(instance_prompt, cfg, project_dir)
    else:
        tokens_note = _count_tokens(ds, cfg, project_dir, use) if cfg is not None else (
            "estimated without a tokenizer (give a CONFIG to count with its model's tokenizer)")

    if cfg is not None and cfg.data.concepts:
        found = {c.name for c in ds.concepts} | {c.folder for c in ds.concepts}
        unknown = [c for c in cfg.data.concepts if c not in found and c.strip("/") not in found]
        if unknown:
            errors.append(f"{cpath}: data.concepts: no concept {', '.join(map(repr, unknown))} in this project")
    print(f"project {pf.name}  ({project_dir})", file=out)
    if ds.implicit_concepts:
        print("concepts: none listed in project.toml; each top-level image folder is one (sidecar captions, 1 repeat)", file=out)
    rows = [("concept", "repeats", "caption", "images", "usable", "captioned", "effective")]
    for c in ds.concepts:
        rows.append((c.name, str(c.repeats), c.caption, str(c.images), str(c.usable), str(c.captioned), str(c.effective)))
    usable = len(ds.usable_items)
    rows.append(("total", "", "", str(len(ds.items)), str(usable), str(sum(c.captioned for c in ds.concepts)),
                 str(ds.effective_count)))
    _table(rows, out)
    if cfg:
        t, launch = cfg.train, cfg.launch
        procs = launch.num_processes * launch.num_machines
        spe = ds.steps_per_epoch(t.batch_size, t.gradient_accumulation, procs)
        print(f"steps per epoch: {spe}  (effective images {ds.effective_count} / batch {t.batch_size} x "
              f"accumulation {t.gradient_accumulation} x processes {procs});  {t.epochs} epochs = {spe * t.epochs} steps",
              file=out)
    else:
        print(f"steps per epoch at batch 1: {ds.steps_per_epoch(1)}  (give a CONFIG for its batch size)", file=out)

    goals = pf.goals.as_dict()
    n_goals = sum(len(v) for v in goals.values())
    print(f"goals: {', '.join(f'{len(v)} {k}' for k, v in goals.items())}"
          + ("  (none yet: add prompts to [goals] in project.toml; they are the default sample prompts)" if not n_goals else ""),
          file=out)

    if cfg is not None:
        from engine.basemodel import describe_base

        shown = describe_base(cfg.model.base, project_dir)
        print(f"base model: {'unusable (see errors below)' if shown.startswith('unusable') else shown}", file=out)
    for line in use.lines if use else ():
        print(line, file=out)
    if instance_prompt:
        print(f"instance prompt tokens: {tokens_note}", file=out)
    else:
        print(f"caption tokens: {tokens_note}", file=out)

    if cfg is not None:
        print(f"\nresolved config ({cpath}; every default filled in, sections of other methods left out):",
              file=out)
        out.write(_indent(dump_config(cfg, used_sections_only=True)) + "\n")

    # Problems: things that are not items, then unreadable items (all listed), then warnings (grouped).
    unreadable = [i for i in ds.items if not i.usable]
    if ds.problems or unreadable:
        print(f"\nproblems ({len(ds.problems) + len(unreadable)}):", file=out)
        for p in ds.problems:
            print(f"  {'error: ' if p.error else ''}{p.path}: {p.reason}", file=out)
        for i in unreadable:
            reason = next(f for f in i.flags if f.startswith(FLAG_UNREADABLE))
            print(f"  {i.rel}: {reason} (skipped)", file=out)
    warnings: dict[str, list[str]] = defaultdict(list)
    for i in ds.items:
        if not i.usable:
            continue
        for f in i.flags:
            kind = f.split(" (", 1)[0]
            warnings[kind].append(f"{i.rel}: {f}")
    method_warnings = use.warnings if use else []
    if cfg is not None:  # what `tunelab run` launches but warns about: the same function
        from engine.launch import prelaunch_warnings

        method_warnings = method_warnings + [str(p) for p in prelaunch_warnings(
            cfg, cpath, cpath.read_text(encoding="utf-8"), args.overrides)]
    if warnings or method_warnings:
        print("\nwarnings:", file=out)
        for w in method_warnings:
            print(f"  {w}", file=out)
        for kind, lines in warnings.items():
            note = use.flag_notes.get(kind) if use else None
            print(f"  {kind}: {len(lines)} image(s)" + (f" — {note}" if note else ""), file=out)
            shown = lines if args.all else lines[:SHOWN_PER_FLAG]
            for line in shown:
                print(f"    {line}", file=out)
            if len(lines) > len(shown):
                print(f"    ... and {len(lines) - len(shown)} more (--all lists every one)", file=out)

    errors.extend(ds.errors)
    if cfg is not None:  # what `tunelab run` refuses beyond the schema: the same function
        from engine.launch import prelaunch_check

        errors.extend(str(p) for p in prelaunch_check(cfg, project_dir, cpath, cpath.read_text(encoding="utf-8"),
                                                      args.overrides))
    if args.strict and (ds.problems or unreadable):
        errors.append(f"--strict: {len(ds.problems) + len(unreadable)} problem(s) listed above")

    if errors:
        print("\nerrors:", file=sys.stderr)
        for e in errors:
            print(_indent(e), file=sys.stderr)
        return 1
    print(f"\nok: {usable} usable image(s)" + (f", {len(ds.problems) + len(unreadable)} problem(s) skipped"
                                              if ds.problems or unreadable else ""), file=out)
    return 0


def _count_tokens(ds, cfg, project_dir: Path, use=None) -> str:
    """Exact token counts with the base model's tokenizer where it is on disk; says which way it counted.
    `use` (engine.captionuse): count the text the method trains (a placeholder put in, counted as the
    tokens the trainer adds)."""
    from engine.basemodel import tokenizer_folder
    from engine.project import count_tokens_exactly
    from engine.tokencount import CLIP_CONTENT_TOKENS, TokenizerError, load_counter

    folder, why = tokenizer_folder(cfg.model.base, project_dir, cfg.model.config or None)
    if folder is None:
        return f"estimated ({why})"
    try:
        counter = load_counter(folder)
    except TokenizerError as e:
        return f"estimated (cannot read the tokenizer: {e})"
    how = ""
    if use is not None and use.placeholder_tokens:
        counter.add_tokens(use.placeholder_tokens)
        how = f", as trained (placeholder put in: {len(use.placeholder_tokens)} token(s))"
    over = count_tokens_exactly(ds, (lambda captions: counter([use.trained(c) for c in captions])) if use else counter)
    return (f"counted with {why} ({folder}){how}; {over} caption(s) over {CLIP_CONTENT_TOKENS}"
            + (" are cut off in training" if over else ""))


def _instance_prompt(cfg) -> str:
    """The text DreamBooth trains every instance image with in place of its caption ("": the captions)."""
    if cfg is None or cfg.method != "dreambooth":
        return ""
    return cfg.dreambooth.instance_prompt  # the trainer's test: any non-empty text replaces the captions


def _count_prompt_tokens(prompt: str, cfg, project_dir: Path) -> str:
    """The instance prompt's tokens, exact with the base's tokenizer where it is on disk, else estimated."""
    from engine.basemodel import tokenizer_folder
    from engine.captions import estimate_tokens
    from engine.tokencount import CLIP_CONTENT_TOKENS, TokenizerError, load_counter

    folder, why = tokenizer_folder(cfg.model.base, project_dir, cfg.model.config or None)
    shown = f"~{estimate_tokens(prompt)} (estimated: {why})"
    n = estimate_tokens(prompt)
    if folder is not None:
        try:
            n = load_counter(folder)([prompt])[0]
            shown = f"{n} (counted with {why})"
        except TokenizerError as e:
            shown = f"~{n} (estimated: cannot read the tokenizer: {e})"
    over = f"; over {CLIP_CONTENT_TOKENS}: the rest is cut off in training" if n > CLIP_CONTENT_TOKENS else ""
    return shown + over


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.rstrip("\n").split("\n"))


def _table(rows: list[tuple[str, ...]], out) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) if c.isdigit() or not c else c.ljust(w)
                                            for c, w in zip(r[1:], widths[1:])]
        print("  " + "  ".join(cells).rstrip(), file=out)
        if n == 0 or n == len(rows) - 2:
            print("  " + "  ".join("-" * w for w in widths), file=out)
