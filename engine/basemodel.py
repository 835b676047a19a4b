"""What a `model.base` spec names, decided without torch: the light half of base-model loading.

A spec is one of (tried in this order):
- `tiny` or `tiny:SEED`: the tiny offline SD 1.x model, built once into the tunelab cache;
- a path (relative paths resolve against the project folder; `--set` makes a relative path absolute
  from the current folder first, `command_line_spec`) to a diffusers folder (it has `model_index.json`)
  or to a single-file checkpoint `.safetensors`;
- a Hugging Face hub id `owner/name` already in the local HF cache (there is no network: nothing is
  downloaded).

`check_base` (used by `tunelab check` and before `tunelab run` launches anything) and `resolve_base`
only look at the file system; `engine.train.models` loads what they resolve.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

ACCEPTED_FORMS = (
    "accepted: a diffusers folder (has model_index.json), a single-file .safetensors checkpoint, "
    "a hub id owner/name already in the local Hugging Face cache, or tiny / tiny:SEED"
)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_TINY = re.compile(r"^tiny(?::(-?\d+))?$")


class BaseModelError(ValueError):
    """A `model.base` (or `model.config`) that names nothing loadable; the message says what and why."""


@dataclass(frozen=True)
class BaseSpec:
    """A resolved spec. `kind` is "tiny", "diffusers", "single_file" or "hub"; `path` is the diffusers
    folder or checkpoint file (None for "tiny" until it is built: it lives in the cache)."""

    spec: str
    kind: str
    path: Path | None = None
    seed: int = 0

    def describe(self) -> str:
        if self.kind == "tiny":
            return f"tiny offline SD 1.x model (seed {self.seed}), built into the tunelab cache"
        if self.kind == "diffusers":
            return f"diffusers folder {self.path}"
        if self.kind == "single_file":
            return f"single-file checkpoint {self.path}"
        return f"hub id {self.spec} from the local Hugging Face cache ({self.path})"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path("~/.cache").expanduser()) / "huggingface" / "hub"


def cached_hub_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The snapshot folder of a cached hub model repo (with model_index.json), or None."""
    repo_dir = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        snap = snapshots / ref.read_text().strip()
        if (snap / "model_index.json").is_file():
            return snap
    if snapshots.is_dir():
        # No ref (a copied cache): take the newest snapshot that is a complete pipeline.
        candidates = [s for s in snapshots.iterdir() if (s / "model_index.json").is_file()]
        if candidates:
            return max(candidates, key=lambda s: s.stat().st_mtime)
    return None


def resolve_base(spec: str, project_dir: str | os.PathLike) -> BaseSpec:
    """What `spec` names, or `BaseModelError` saying why it names nothing loadable."""
    spec = spec.strip()
    if not spec:
        raise BaseModelError(f"model.base is empty; {ACCEPTED_FORMS}")
    m = _TINY.match(spec)
    if m:
        return BaseSpec(spec, "tiny", None, int(m.group(1) or 0))
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = Path(project_dir) / path
    if path.exists():
        return _resolve_path(spec, path)
    if _HUB_ID.match(spec) and not spec.startswith((".", "~")):
        snap = cached_hub_snapshot(spec)
        if snap is None:
            raise BaseModelError(
                f"model.base = {spec!r}: {path} does not exist, and there is no hub model {spec} in the "
                f"local Hugging Face cache ({hf_hub_cache()}); tunelab never downloads. Fetch it where there is network "
                f"(`huggingface-cli download {spec}`) and copy the cache here, or point model.base at a "
                f"local folder; {ACCEPTED_FORMS}"
            )
        return BaseSpec(spec, "hub", snap)
    raise BaseModelError(f"model.base = {spec!r}: {path} does not exist; {ACCEPTED_FORMS}")


def command_line_spec(spec: str, cwd: str | os.PathLike) -> str:
    """A `model.base`/`model.config` typed with `--set`, as the run should keep it: a relative path is the
    shell's current folder's, so it is made absolute (a config file's stays the project's). `tiny`, an
    absolute path, and an `owner/name` hub id that names nothing under `cwd` are kept as given."""
    text = spec.strip()
    if not text or _TINY.match(text):
        return spec
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    here = Path(cwd) / path
    if not here.exists() and _HUB_ID.match(text) and not text.startswith((".", "~")):
        return spec
    return os.path.abspath(here)


def _resolve_path(spec: str, path: Path) -> BaseSpec:
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return BaseSpec(spec, "diffusers", path.resolve())
        raise BaseModelError(
            f"model.base = {spec!r}: {path} is a folder without model_index.json, not a diffusers model; {ACCEPTED_FORMS}"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return BaseSpec(spec, "single_file", path.resolve())
    if suffix in PICKLE_SUFFIXES:
        raise BaseModelError(
            f"model.base = {spec!r}: {path} is a pickle checkpoint ({suffix}), which can run code when "
            f"loaded; tunelab loads only .safetensors. Convert it once where you trust it, then use the "
            f".safetensors; {ACCEPTED_FORMS}"
        )
    raise BaseModelError(f"model.base = {spec!r}: {path} is not a model file; {ACCEPTED_FORMS}")


def resolve_config(config: str, project_dir: str | os.PathLike) -> Path:
    """The diffusers folder `model.config` names (a folder or a cached hub id) for a single-file base."""
    try:
        resolved = resolve_base(config, project_dir)
    except BaseModelError as e:
        raise BaseModelError(str(e).replace("model.base", "model.config", 1)) from None
    if resolved.kind not in ("diffusers", "hub"):
        raise BaseModelError(
            f"model.config = {config!r}: must be a diffusers folder or a cached hub id that holds the "
            f"component configs of the single-file base (got {resolved.describe()})"
        )
    assert resolved.path is not None
    return resolved.path


def check_base(spec: str, project_dir: str | os.PathLike, config: str | None = None) -> list[str]:
    """Problems with `model.base` (and `model.config`), from the file system only; [] when loadable.

    Light: imports neither torch nor diffusers, so `tunelab check` and `tunelab run` refuse a bad
    base before anything is launched.
    """
    problems = []
    try:
        resolved = resolve_base(spec, project_dir)
    except BaseModelError as e:
        return [str(e)]
    if config:
        try:
            resolve_config(config, project_dir)
        except BaseModelError as e:
            problems.append(str(e))
    if resolved.kind == "single_file":
        assert resolved.path is not None
        problem = _safetensors_problem(resolved.path)
        if problem:
            problems.append(f"model.base = {spec!r}: {resolved.path}: {problem}; {ACCEPTED_FORMS}")
    if resolved.kind == "diffusers" or resolved.kind == "hub":
        assert resolved.path is not None
        missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (resolved.path / sub).is_dir()]
        if missing:
            problems.append(
                f"model.base = {spec!r}: {resolved.path} lacks {', '.join(missing)}; a Stable Diffusion "
                f"diffusers folder has unet, vae, text_encoder, tokenizer and scheduler"
            )
    return problems


def _safetensors_problem(path: Path) -> str | None:
    # A .safetensors file starts with an 8-byte little-endian header length, then a JSON header.
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "not a .safetensors file (too short)"
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100_000_000 or n + 8 > path.stat().st_size:
                return "not a .safetensors file (bad header length)"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    except ValueError:
        return "not a .safetensors file (header is not JSON)"
    if not isinstance(header, dict) or not any(k.startswith("model.diffusion_model.") for k in header):
        return "holds no Stable Diffusion UNet (no model.diffusion_model.* tensors)"
    return None


def tokenizer_folder(spec: str, project_dir: str | os.PathLike, config: str | None = None) -> tuple[Path | None, str]:
    """The base's `tokenizer/` folder for exact caption token counts, or None and why there is none.

    Light, and never builds anything: a `tiny` base that is not built yet, or a single-file base with
    no `model.config`, has no tokenizer on disk to read (the second string says so).
    """
    try:
        resolved = resolve_base(spec, project_dir)
    except BaseModelError:
        return None, "model.base does not resolve"
    folder: Path | None = None
    if resolved.kind == "tiny":
        built = _tiny_build(resolved.seed)
        if built is None:
            return None, "the tiny model is not built yet (the first run builds it)"
        folder = built
    elif resolved.kind == "single_file":
        if not config:
            return None, "a single-file base carries no tokenizer; set model.config to count exactly"
        try:
            folder = resolve_config(config, project_dir)
        except BaseModelError:
            return None, "model.config does not resolve"
    else:
        folder = resolved.path
    assert folder is not None
    tok = folder / "tokenizer"
    if not tok.is_dir():
        return None, f"{folder} has no tokenizer/ folder"
    return tok, f"the tokenizer of {spec}"


def _tiny_build(seed: int) -> Path | None:
    """The newest built tiny model for `seed` in the tunelab cache (engine.train.tiny.ensure_tiny's
    layout: <cache>/tiny-sd-v<VERSION>/seed-<SEED>), found without importing torch."""
    env = os.environ.get("TUNELAB_CACHE")
    root = Path(env).expanduser() if env else Path("~/.cache/tunelab").expanduser()
    best: tuple[int, Path] | None = None
    try:
        entries = list(root.iterdir())
    except OSError:
        return None
    for d in entries:
        m = re.fullmatch(r"tiny-sd-v(\d+)", d.name)
        target = d / f"seed-{seed}"
        if m and (target / "model_index.json").is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), target)
    return best[1] if best else None


def describe_base(spec: str, project_dir: str | os.PathLike) -> str:
    """One line: which form `spec` is and what it resolved to (or why it does not resolve)."""
    try:
        return resolve_base(spec, project_dir).describe()
    except BaseModelError as e:
        return f"unusable: {e}"
