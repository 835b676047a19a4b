"""`tunelab caption PROJECT OPERATION … [--dry-run]` and `tunelab caption PROJECT --undo`: bulk sidecar captions.

Operations: template (from metadata fields), fixed, empty, prefix, suffix, replace (regex), auto (BLIP).
template/fixed/empty/auto write only images with no caption unless `--overwrite`; prefix/suffix/replace
edit existing captions. `--dry-run` prints the per-file diff and writes nothing. Every applied
operation saves an undo journal in the project's .cache/caption-undo/; `--undo` restores the last one
exactly, or refuses (touching nothing) when a file was edited since.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "bulk caption operations, with --dry-run and --undo"

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="project folder, or a name under ./projects")
    p.add_argument("--undo", action="store_true", help="restore the captions changed by the last operation "
                   "(with --dry-run: show what it would restore)")
    p.add_argument("--dry-run", dest="top_dry_run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--projects-dir", default="projects", help=argparse.SUPPRESS)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true", help="print the changes as a diff; write nothing")
    common.add_argument("--concept", action="append", default=[], metavar="NAME",
                        help="only this concept (name or folder; repeatable; default: all)")
    gate = common.add_mutually_exclusive_group()
    gate.add_argument("--only-missing", dest="mode", action="store_const", const="missing",
                      help="only images with no caption (the default for template/fixed/empty/auto)")
    gate.add_argument("--overwrite", dest="mode", action="store_const", const="overwrite",
                      help="replace existing captions too")

    sub = p.add_subparsers(dest="op", metavar="OPERATION")
    s = sub.add_parser("template", parents=[common], help="captions from metadata fields: 'pokemon {name}, {type1}'")
    s.add_argument("template", nargs="?", help="format template (default: the concept's `template` in project.toml)")
    s.add_argument("--metadata", help="metadata.csv/.jsonl with a file_name column (default: the concept's)")
    s.add_argument("--skip-missing", action="store_true",
                   help="leave images with no metadata row (or lacking a field) as they are, instead of refusing")
    s = sub.add_parser("fixed", parents=[common], help="one caption for every image")
    s.add_argument("text")
    sub.add_parser("empty", parents=[common], help="empty caption files")
    for name, what in (("prefix", "put TEXT (a trigger word) in front of each caption, once"),
                       ("suffix", "append TEXT to each caption, once")):
        s = sub.add_parser(name, parents=[common], help=what)
        s.add_argument("text")
        s.add_argument("--sep", default=", ", help="separator (default ', ')")
    s = sub.add_parser("replace", parents=[common], help="regex find/replace in each caption")
    s.add_argument("pattern", help="Python regex (use --literal for plain text)")
    s.add_argument("replacement", help=r"replacement text; \1 refers to a group")
    s.add_argument("--literal", action="store_true", help="PATTERN and REPLACEMENT are plain text")
    s.add_argument("-i", "--ignore-case", action="store_true")
    s = sub.add_parser("auto", parents=[common], help="captions from a BLIP model (local files only)")
    s.add_argument("--model", default=DEFAULT_BLIP,
                   help=f"a local BLIP folder or a hub id already in the HF cache (default {DEFAULT_BLIP})")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-new-tokens", type=int, default=30)
    s.add_argument("--prompt", default="", help="conditional captioning prefix, e.g. 'a drawing of'")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")


def run(args: argparse.Namespace) -> int:
    from engine import captions as C
    from engine.project import load_project_file, plan_template_captions, resolve_project, scan_project
    from engine.schema import ConfigError

    project_dir = resolve_project(args.project, args.projects_dir)
    if not project_dir.is_dir():
        print(f"{args.project}: no such project", file=sys.stderr)
        return 1
    if args.undo:
        if args.op:
            print("tunelab caption: --undo takes no operation", file=sys.stderr)
            return 2
        try:
            if args.top_dry_run:
                plan = C.undo_plan(project_dir)
                sys.stdout.write(plan.diff())
                print(f"{plan.operation}: {len(plan.changes)} caption file(s) to restore")
                print("dry run: nothing restored")
                return 0
            res = C.undo_last(project_dir)
        except C.CaptionError as e:
            print(str(e), file=sys.stderr)
            return 1
        print(f"undid {res.operation}: restored {len(res.restored)} caption file(s)")
        return 0
    if not args.op:
        print("tunelab caption: give an operation (template, fixed, empty, prefix, suffix, replace, auto) or --undo",
              file=sys.stderr)
        return 2

    try:
        pf = load_project_file(project_dir)
    except ConfigError as e:
        print(f"project.toml has errors:\n{e}", file=sys.stderr)
        return 1
    ds = scan_project(project_dir, project=pf, concepts=args.concept or None,
                      write_cache=not (args.dry_run or args.top_dry_run))
    if args.concept and not ds.concepts:
        names = ", ".join(c.name for c in scan_project(project_dir, project=pf, write_cache=False).concepts)
        print(f"--concept {', '.join(args.concept)}: no such concept (concepts: {names})", file=sys.stderr)
        return 1
    items = [i for i in ds.items if i.usable]
    targets = [C.Target(i.path, i.rel) for i in items]
    mode = args.mode or "missing"
    non_sidecar = sorted({c.name for c in ds.concepts if c.caption != "sidecar"})

    try:
        if args.op == "template":
            plan = plan_template_captions(ds, items, args.template, mode, args.metadata, skip_missing=args.skip_missing)
        elif args.op == "fixed":
            plan = C.plan_fixed(targets, args.text, mode, root=project_dir)
        elif args.op == "empty":
            plan = C.plan_empty(targets, mode, root=project_dir)
        elif args.op == "prefix":
            plan = C.plan_prefix(targets, args.text, args.sep, root=project_dir)
        elif args.op == "suffix":
            plan = C.plan_suffix(targets, args.text, args.sep, root=project_dir)
        elif args.op == "replace":
            plan = C.plan_replace(targets, args.pattern, args.replacement, literal=args.literal,
                                  ignore_case=args.ignore_case, root=project_dir)
        elif args.op == "auto":
            plan = _auto_plan(args, targets, mode, project_dir)
            if plan is None:
                return 1
        else:  # pragma: no cover - argparse restricts op
            return 2
    except C.CaptionError as e:
        print(f"tunelab caption {args.op}: {e}", file=sys.stderr)
        return 1

    if args.dry_run or args.top_dry_run:
        sys.stdout.write(plan.diff())
        print(plan.summary())
        print("dry run: nothing written")
    else:
        C.apply_plan(plan, project_dir)
        print(plan.summary(applied=True))
        if plan.changes:
            print(f"undo with: tunelab caption {args.project} --undo")
    if non_sidecar:
        print(f"note: concept(s) {', '.join(non_sidecar)} take captions from project.toml, not from sidecar files",
              file=sys.stderr)
    return 0


def _auto_plan(args, targets, mode, project_dir: Path):
    from engine import captions as C

    # The model first, whatever there is to caption: a mistyped --model is an error even when every
    # image already has a caption (was: exit 0, the path never looked at). Cheap: no torch yet.
    problem = _model_problem(str(args.model))
    if problem:
        print(f"tunelab caption auto: cannot load BLIP from --model {args.model}: {problem}\n  Pass --model with a "
              "local BLIP folder or a hub id (NAME or OWNER/NAME) in the local Hugging Face cache; download it "
              "where there is network (`huggingface-cli download Salesforce/blip-image-captioning-base`) and copy "
              "the cache over.", file=sys.stderr)
        return None
    todo = [t for t in targets if mode == "overwrite" or C.read_sidecar(t.image) is None]
    if not todo:
        return C.Plan("auto", root=project_dir,
                      skipped=[(t.rel, "already captioned; --overwrite replaces") for t in targets])
    from engine.autocaption import AutoCaptionError, BlipCaptioner

    try:
        print(f"loading {args.model} …", file=sys.stderr)
        cap = BlipCaptioner(args.model, device=args.device, max_new_tokens=args.max_new_tokens, prompt=args.prompt)
    except AutoCaptionError as e:
        print(f"tunelab caption auto: {e}", file=sys.stderr)
        return None

    def progress(done: int, total: int) -> None:
        print(f"captioned {done}/{total}", file=sys.stderr, flush=True)

    return C.plan_generated(targets, lambda batch: cap([t.image for t in batch]), mode,
                            operation=f"auto ({args.model})", root=project_dir, batch_size=args.batch_size,
                            progress=progress)


def _model_problem(model: str) -> str | None:
    """Why `model` cannot be a BLIP model, from its files alone (no torch); None when it may be one.

    A path must be a folder with a BLIP config.json, safetensors weights and a processor config; a hub
    id (NAME or OWNER/NAME that is no folder here) must be in the local Hugging Face cache."""
    from engine.basemodel import hf_hub_cache

    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model
    path = Path(model).expanduser()
    if path.is_file():
        return f"{path} is a file; --model takes a folder"
    if path.is_dir():
        return _folder_problem(path)
    if looks_like_path:
        return f"no such folder ({path} does not exist)"
    repo = hf_hub_cache() / ("models--" + model.replace("/", "--"))
    snapshots = sorted((repo / "snapshots").glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if (repo / "snapshots").is_dir() else []
    if not snapshots:
        return f"not a folder here, and no hub model {model} in the local Hugging Face cache ({hf_hub_cache()})"
    problems = [_folder_problem(snap) for snap in snapshots]
    return None if None in problems else f"the cached hub model {model} ({snapshots[0]}): {problems[0]}"


def _folder_problem(folder: Path) -> str | None:
    """What a folder lacks to be loaded as BLIP (config.json of model_type blip, *.safetensors, a processor)."""
    import json

    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError:
        return f"{folder} has no config.json (a BLIP folder holds config.json, model.safetensors and processor files)"
    except (OSError, ValueError, AttributeError) as e:
        return f"{config} is not a JSON model config ({e})"
    if model_type != "blip":
        return f"{config} is a {model_type or 'untyped'} model's config, not BLIP's (model_type = \"blip\")"
    if not any(folder.glob("*.safetensors")):
        return f"{folder} has no .safetensors weights (tunelab loads safetensors only)"
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        return f"{folder} has no preprocessor_config.json or processor_config.json (BLIP's image processor)"
    return None
