"""`tunelab new NAME [--from DIR]`: create a project folder with a commented project.toml and configs/lora.toml.

NAME is a project name (created under ./projects) or a path (anything with a `/`). It refuses `..`
and a folder that exists and is not empty. With `--from DIR`, DIR's images, their sidecar captions and
a metadata.csv/jsonl are copied (or, with `--link`, symlinked) into the project's `images/` folder,
keeping DIR's subfolders; `images` is then the project's one concept (list more in project.toml).

A kohya_ss dataset (`DIR/10_sks dog/…`: N repeats, then the concept's name) becomes one concept per
top-level folder, with the repeats from its name, written into project.toml. kohya's `.caption`
sidecars are copied as `.txt` (tunelab's, and kohya's current default) unless a `.txt` is beside them.
What is left out (hidden entries, files of other kinds, folder symlinks, ...) is counted and named by reason.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path, PurePath
from typing import NamedTuple

HELP = "create a project"
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")  # kohya_ss: "<repeats>_<name>"
KOHYA_CAPTION = ".caption"

PROJECT_TEMPLATE = '''# A tunelab project. Reference: docs/project.md. `tunelab check {name}` validates it.
name = {name_toml}
notes = ""

# Goals: what the fine-tuned model should do, as the prompts you will type afterwards. They are the
# default sample prompts, and the contact sheet groups its rows by these three kinds.
[goals]
# The subject as trained, e.g. "a photo of sks dog on a sofa"
accuracy = []
# The subject somewhere new, e.g. "sks dog as an astronaut, oil painting"
flexibility = []
# Unrelated prompts, to see what the fine-tune broke, e.g. "a red sports car on a coast road"
preservation = []

# Concepts: image folders with a repeat count and a caption source. With none listed, every
# top-level folder holding images is a concept with sidecar captions (photo.png + photo.txt), 1 repeat.
#
# [[concepts]]
# folder = "images"
# repeats = 1
# caption = "sidecar"        # sidecar | fixed | template | filename | empty
# text = ""                  # for caption = "fixed"
# template = ""              # for caption = "template": "official art of pokemon {{name}}, {{type1}}"
# metadata = ""              # metadata.csv / .jsonl with a file_name column (default: found in the folder)
# trigger = ""               # a word put in front of every caption, e.g. "sks"
'''

CONFIG_HEADER = """# A run config for `tunelab run {name} lora`. Reference: docs/config.md.
# Every key is optional; these are the defaults (other methods' sections left out: docs/config.md has
# them). Delete what you do not change.
# model.base: SD 1.5 from the local Hugging Face cache by default (tunelab never downloads); or a
# diffusers folder, a single .safetensors checkpoint, another cached hub id, or "tiny" (the built-in
# tiny model: trains on a CPU in minutes, to try tunelab out).

"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="project name (under ./projects) or a path")
    p.add_argument("--from", dest="source", metavar="DIR", help="copy images, captions and metadata from DIR")
    p.add_argument("--link", action="store_true", help="with --from: symlink the images instead of copying them")
    p.add_argument("--projects-dir", default="projects", help="where a bare NAME goes (default ./projects)")


def project_path(name: str, projects_dir: str | os.PathLike = "projects") -> Path:
    """Where `tunelab new NAME` creates the project. Raises ValueError for a name that escapes."""
    if not name.strip():
        raise ValueError("the project name is empty")
    parts = PurePath(name).parts
    if ".." in parts:
        raise ValueError(f"{name!r}: '..' is not allowed in a project name or path")
    if "/" in name or os.sep in name or Path(name).is_absolute():
        return Path(name)
    if name.startswith("."):
        raise ValueError(f"{name!r}: a project name cannot start with '.' (hidden folders are ignored)")
    return Path(projects_dir) / name


# Why an entry of --from was left out, as read after its count; the order they are reported in.
SKIP_HIDDEN = "hidden"
SKIP_OTHER = "not images, captions or metadata"
SKIP_KOHYA_TWIN = ".caption files beside a .txt (the .txt is taken)"
SKIP_PROJECT = "runs/ or configs/ folders of a project"
SKIP_LINKED_DIR = "folder symlinks (not followed)"
SKIP_UNREADABLE = "unreadable folders"
SKIP_ORDER = (SKIP_HIDDEN, SKIP_OTHER, SKIP_KOHYA_TWIN, SKIP_PROJECT, SKIP_LINKED_DIR, SKIP_UNREADABLE)


def _sources(src: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """The files to bring in, and what was left out by reason (paths relative to `src`, folders end in
    `/`), so `tunelab new` can say what it skipped instead of dropping it silently."""
    from engine.captions import CAPTION_EXT
    from engine.metadata import METADATA_NAMES
    from engine.project import IGNORED_TOP, IMAGE_EXTS

    out: list[Path] = []
    skipped: dict[str, list[str]] = {}

    def skip(reason: str, path: str, folder: bool = False) -> None:
        skipped.setdefault(reason, []).append(Path(path).relative_to(src).as_posix() + ("/" if folder else ""))

    def unreadable(e: OSError) -> None:
        if e.filename and Path(e.filename) != src:
            skip(SKIP_UNREADABLE, e.filename, folder=True)

    for dirpath, dirnames, filenames in os.walk(src, onerror=unreadable):
        top = Path(dirpath) == src
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                skip(SKIP_HIDDEN, full, folder=True)
            elif top and d in IGNORED_TOP:  # --from may be another project
                skip(SKIP_PROJECT, full, folder=True)
            elif os.path.islink(full):
                skip(SKIP_LINKED_DIR, full, folder=True)
            else:
                kept.append(d)
        dirnames[:] = kept
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            if fn.startswith("."):
                skip(SKIP_HIDDEN, full)
                continue
            ext = os.path.splitext(fn)[1].lower()
            if ext == KOHYA_CAPTION and os.path.splitext(fn)[0] + CAPTION_EXT in filenames:
                skip(SKIP_KOHYA_TWIN, full)
            elif ext in IMAGE_EXTS or ext in (CAPTION_EXT, KOHYA_CAPTION) or fn in METADATA_NAMES:
                out.append(Path(full))
            else:
                skip(SKIP_OTHER, full)
    return out, skipped


def skipped_summary(skipped: dict[str, list[str]], shown: int = 3) -> list[str]:
    """Lines saying how many entries were left out, one line per reason with its first few names."""
    if not skipped:
        return []
    lines = [f"skipped {sum(map(len, skipped.values()))} file(s)/folder(s):"]
    for reason in sorted(skipped, key=SKIP_ORDER.index):
        names = skipped[reason]
        lines.append(f"  {len(names)} {reason}: {', '.join(names[:shown])}"
                     + (f" and {len(names) - shown} more" if len(names) > shown else ""))
    return lines


def kohya_concepts(src: Path) -> tuple[list[dict], list[str]]:
    """Concepts for DIR's top-level folders when any is named kohya-style (`10_sks dog`), and the images
    lying directly in DIR, which then belong to no concept. ([], []) when DIR is not laid out so."""
    from engine.project import IMAGE_EXTS, _walk

    try:
        entries = sorted((e for e in os.scandir(src) if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return [], []
    dirs = [e for e in entries if e.is_dir() and _walk(e.path, str(src), first_only=True)[0]]
    if not any(KOHYA_FOLDER.match(e.name) for e in dirs):
        return [], []
    concepts = []
    for e in dirs:
        m = KOHYA_FOLDER.match(e.name)
        concepts.append({"folder": f"images/{e.name}", "repeats": max(1, int(m.group(1))) if m else 1,
                         "name": m.group(2).strip() if m else e.name})
    loose = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
    return concepts, loose


class Created(NamedTuple):
    images: int                   # brought in from --from
    other: int                    # captions and metadata files brought in
    skipped: dict[str, list[str]]  # left out, by reason (`_sources`)


def from_summary(created: Created, source: Path, path: Path, link: bool = False) -> list[str]:
    """What `--from` brought in and left out, as lines: `tunelab new` prints them, the TUI's new-project
    dialog shows them in its notice."""
    lines = [f"{'linked' if link else 'copied'} {created.images} image(s) and {created.other} caption/metadata "
             f"file(s) from {source} into {path / 'images'}"]
    lines += skipped_summary(created.skipped)
    concepts, loose = kohya_concepts(source)
    if concepts:
        shown = ", ".join(f"{c['name']} x{c['repeats']}" for c in concepts)
        lines.append(f"kohya-style folders became concepts with their repeats: {shown} (see project.toml)")
    if loose:
        lines.append(f"note: {len(loose)} image(s) directly in {source} are in no concept (as in kohya); "
                     f"list images/ as a concept in project.toml to train on them")
    return lines


def create_project(path: Path, source: Path | None = None, link: bool = False) -> Created:
    """Create the project; returns what was brought in from `source` and what was left out.

    `source` laid out kohya-style gets its concepts (folder, repeats, name) written into project.toml."""
    import tomli_w

    from engine import atomic
    from engine.config import default_config, dump_config
    from engine.project import IMAGE_EXTS

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: already exists and is not empty; pick another name or empty it")
    files, skipped = _sources(source) if source is not None else ([], {})
    path.mkdir(parents=True, exist_ok=True)
    (path / "configs").mkdir(exist_ok=True)
    images_dir = path / "images"
    images_dir.mkdir(exist_ok=True)
    name = path.resolve().name
    project_text = PROJECT_TEMPLATE.format(
        name=name if path.parent == Path("projects") else str(path), name_toml=tomli_w.dumps({"n": name})[4:].strip())
    concepts, _ = kohya_concepts(source) if source is not None else ([], [])
    if concepts:
        project_text += "\n# From the kohya-style folders of --from (<repeats>_<name>):\n" + "".join(
            "\n[[concepts]]\n" + tomli_w.dumps(c) for c in concepts)
    atomic.write_text(path / "project.toml", project_text)
    atomic.write_text(path / "configs" / "lora.toml", CONFIG_HEADER.format(name=name) + dump_config(default_config("lora"), used_sections_only=True))
    n_images = n_other = 0
    for f in files:
        dest = images_dir / f.relative_to(source)
        if dest.suffix.lower() == KOHYA_CAPTION:
            dest = dest.with_suffix(".txt")
        dest.parent.mkdir(parents=True, exist_ok=True)
        is_image = f.suffix.lower() in IMAGE_EXTS
        if link and is_image:
            os.symlink(f.resolve(), dest)
        else:
            shutil.copy2(f, dest)
        n_images += is_image
        n_other += not is_image
    return Created(n_images, n_other, skipped)


def run(args: argparse.Namespace) -> int:
    try:
        path = project_path(args.name, args.projects_dir)
    except ValueError as e:
        print(f"tunelab new: {e}", file=sys.stderr)
        return 2
    source = None
    if args.source:
        source = Path(args.source)
        if not source.is_dir():
            print(f"tunelab new: --from {args.source}: not a folder", file=sys.stderr)
            return 2
        try:
            if path.resolve().is_relative_to(source.resolve()):
                print(f"tunelab new: {path} is inside --from {args.source}; create the project elsewhere", file=sys.stderr)
                return 2
        except OSError:
            pass
    try:
        created = create_project(path, source, link=args.link)
    except FileExistsError as e:
        print(f"tunelab new: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"tunelab new: {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"created {path}")
    if source is not None:
        for line in from_summary(created, source, path, link=args.link):
            print(f"  {line}")
    else:
        print(f"  put images (with photo.txt captions) in {path / 'images'}/")
    print(f"  write your goals in {path / 'project.toml'}, then: tunelab check {path} lora")
    return 0
