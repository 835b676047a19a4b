"""Resuming a run with changed settings: `tunelab resume RUN --set key=value`.

Only keys that leave the checkpoint's model state exact may change: how long to train
(`train.epochs`, `train.max_steps`), when to stop for time (`budget.*`), what to save (`save.*`) and
what to sample (`sample.*`; prompts may only be appended, since the contact sheet's rows are prompt
indices across all columns). Everything else (the data, the method, the optimiser, the model) would make
the saved state mean something else, so such keys are refused with the list of the allowed ones.

`plan_resume` validates the overrides against the run's frozen config with the same schema as
`tunelab run`, and checks that a changed length still lies beyond the checkpoint the run resumes from.
So a finished run can be trained further ("that looked good at 30, train it to 60") and a run stopped
by `budget.max_hours` can get more time. New sample prompts or seeds are rendered on resume for every
checkpoint the run still has (engine/train/backfill.py), so a finished run can also be resumed with
only `--set sample.prompts=[…, "new"]` or `sample.seeds=[…]`: it renders the new cells and finishes again
without training a step (`ResumePlan.sample_only`). `resume_with_changes` keeps the config the last attempt ran
with as `config.attempt-N.toml` (N: that attempt's number in status.json), writes the new
`config.toml` atomically with a header naming the changes, and starts the supervisor; if that fails,
the old config is put back. All of it happens under `RUN/resume.lock` (`resume_lock`), so two resumes
at the same instant cannot both rewrite config.toml: the second gets `ResumeInProgress`. The trainer names the changes in its `resumed` event (`config_changes`,
from `changes_since_last_attempt`) and what a new length does to the LR schedule (engine/train/prepare.py).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from engine import atomic
from engine.launch import LaunchError, resume_check, start_supervisor
from engine.rundir import Checkpoint, RunDir
from engine.schema import override_key

LENGTH_KEYS = ("train.epochs", "train.max_steps")
RESUME_LOCK = "resume.lock"  # held by one resume from planning to the supervisor's handshake
SECTIONS = ("budget", "save", "sample")
ALLOWED = "train.epochs, train.max_steps, budget.*, save.*, sample.*"


class ResumeInputError(LaunchError):
    """A `--set` that resume does not take (a key that would break exact resume, a target not beyond
    the checkpoint); nothing was changed."""


@dataclass
class ResumePlan:
    """What a resume with changes will do; `changes` are (key, before, after) of the resolved config."""

    run: RunDir
    cfg: Any
    overrides: list[str]
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    total_steps_before: int | None = None
    total_steps: int | None = None  # predicted from the steps per epoch the trainer reported
    new_cells: int = 0              # sample cells (prompt × seed) added: rendered for every kept checkpoint
    sample_only: bool = False       # a finished run resumed only to render new sample cells; it trains nothing


def allowed_key(key: str) -> bool:
    return key in LENGTH_KEYS or (key.split(".", 1)[0] in SECTIONS and "." in key and not key.endswith("."))


def known_keys() -> set[str]:
    """Every run-config key, dotted (`train.epochs`)."""
    from engine.config import RunConfig, to_dict

    return set(flatten(to_dict(RunConfig())))


def unknown_key_message(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known_keys()), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" (did you mean {close[0]}?" + (")" if allowed_key(close[0]) else " It cannot change on resume.)")
    return f"--set {key}: no such run-config key{hint}; resume can change: {ALLOWED}"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 3}} → {"train.epochs": 3}; lists are values."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def config_changes(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(key, before, after) for every resolved value that differs between two `RunConfig`s."""
    from engine.schema import to_dict

    a, b = flatten(to_dict(before)), flatten(to_dict(after))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def show(value: Any) -> str:
    """A value as it is written in TOML, on one line (`60`, `[1, 2]`, `"a dog"`, `{ text = "a dog" }`)."""
    import tomli_w

    if value is None:
        return "(unset)"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }" if value else "{}"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k}: {show(a)} → {show(b)}" for k, a, b in changes)


def resumable_checkpoint(run: RunDir) -> Checkpoint | None:
    """The checkpoint a resume starts from: the newest complete one that has `state/` (what the trainer's
    `engine.train.checkpoint.resumable_checkpoint` picks, without importing torch)."""
    for ck in reversed(run.checkpoints(complete_only=True)):
        if (ck.path / "state").is_dir():
            return ck
    return None


def steps_per_epoch(run: RunDir, ck: Checkpoint, cfg: Any) -> int | None:
    """Optimiser steps per epoch as the trainer counts them (engine.train.data.steps_per_epoch): from the
    checkpoint's state (images per epoch, processes) with the config's batch size and accumulation, else
    from the trainer's last `start` event (a state without progress.json)."""
    import json

    try:
        p = json.loads((ck.path / "state" / "progress.json").read_text(encoding="utf-8"))
        images, world = int(p["images"]), int(p.get("processes", 1))
    except (OSError, ValueError, KeyError, TypeError):
        found = None
        for ev in run.iter_events():
            if ev.get("kind") == "start" and isinstance(ev.get("steps_per_epoch"), int):
                found = ev["steps_per_epoch"]
        return found
    t = cfg.train
    return math.ceil(math.ceil(math.ceil(images / world) / t.batch_size) / t.gradient_accumulation)


def total_steps(cfg: Any, spe: int) -> int:
    """As engine.train.prepare computes it: epochs × steps per epoch, capped by train.max_steps."""
    total = spe * cfg.train.epochs
    return min(total, cfg.train.max_steps) if cfg.train.max_steps else total


def plan_resume(run_dir: RunDir | str | os.PathLike, overrides: Iterable[str]) -> ResumePlan:
    """Check a resume with `--set` overrides. Raises ResumeInputError (a refused key or target),
    `engine.schema.ConfigError` (a value the schema refuses) or LaunchError (the run cannot resume)."""
    from engine.config import load_run_config

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    overrides = list(overrides)
    keys = [override_key(o) for o in overrides]
    unknown = [k for k in keys if k not in known_keys()]
    if unknown:
        raise ResumeInputError("; ".join(unknown_key_message(k) for k in unknown))
    refused = [k for k in keys if not allowed_key(k)]
    if refused:
        raise ResumeInputError(
            f"--set {', '.join(refused)}: cannot change on resume (the checkpoint's model, optimiser and data "
            f"state would no longer match); resume can change: {ALLOWED}. For other changes start a new run "
            f"(tunelab run PROJECT CONFIG --set …)")
    state = run.state()
    if state != "finished":
        why = resume_check(run)
        if why:
            raise LaunchError(why)
    elif not run.config_path.is_file():
        raise LaunchError(f"{run.path} is not a run directory (no config.toml)")
    before = load_run_config(run.config_path)
    after = load_run_config(run.config_path, overrides)
    plan = ResumePlan(run, after, overrides, config_changes(before, after))
    ck = resumable_checkpoint(run)
    if ck is None:
        raise LaunchError(f"run {run.run_id} has no complete checkpoint with state/ (save.state = true keeps "
                          f"it), so there is nothing to resume from; start a new run instead (tunelab run)")
    plan.checkpoint = ck
    spe = steps_per_epoch(run, ck, after)
    if spe:
        plan.total_steps_before, plan.total_steps = total_steps(before, spe), total_steps(after, spe)
    length_changed = any(override_key(o) in LENGTH_KEYS for o in overrides)  # asked for, even if unchanged
    where = f"checkpoint {ck.path.name} (epoch {ck.epoch}, step {ck.step})"
    if length_changed and plan.total_steps is not None and plan.total_steps <= ck.step:
        wanted = []
        if spe * after.train.epochs <= ck.step:
            wanted.append(f"train.epochs above {ck.epoch}")
        if after.train.max_steps and after.train.max_steps <= ck.step:
            wanted.append(f"train.max_steps above {ck.step} (or 0: no limit)")
        raise ResumeInputError(
            f"train.epochs = {after.train.epochs}, train.max_steps = {after.train.max_steps}: that is "
            f"{plan.total_steps} steps in all ({spe} per epoch), not beyond {where}; give "
            + " and ".join(wanted))
    _check_sample_prompts(run, before, after)
    plan.new_cells = len(added_sample_cells(run, before, after))
    if state == "finished" and not (length_changed and (plan.total_steps or 0) > ck.step):
        if plan.new_cells:  # render the new prompts/seeds for the kept checkpoints, train nothing
            plan.sample_only = True
            return plan
        raise LaunchError(
            f"run {run.run_id} already finished at {where}; to train it further, resume it with a later "
            f"target: tunelab resume {run.run_id} --set train.epochs={max(ck.epoch, 1) * 2} (or add sample "
            "prompts or seeds with --set sample.prompts=[…] / sample.seeds=[…] to render them for its checkpoints)")
    return plan


def added_sample_cells(run: RunDir, before: Any, after: Any) -> set[tuple[int, int]]:
    """(prompt index, seed) sample cells `after` has and `before` had not: what a resume renders into the
    columns of the checkpoints it still has (engine/train/backfill.py)."""
    from engine.config import sample_prompts
    from engine.project import load_project_file

    goals = load_project_file(run.project_dir).goals.as_dict()

    def cells(cfg: Any) -> set[tuple[int, int]]:
        return {(i, seed) for i, p in enumerate(sample_prompts(cfg, goals)) for seed in p.seeds}

    return cells(after) - cells(before)


def _check_sample_prompts(run: RunDir, before: Any, after: Any) -> None:
    """Prompts may only be appended: sample files are named by prompt index, and the contact sheet puts
    one prompt per row across every column."""
    from engine.config import sample_prompts
    from engine.project import load_project_file

    if to_list(before.sample.prompts) == to_list(after.sample.prompts):
        return
    goals = load_project_file(run.project_dir).goals.as_dict()
    old = [p.text for p in sample_prompts(before, goals)]
    new = [p.text for p in sample_prompts(after, goals)]
    if new[:len(old)] != old:
        raise ResumeInputError(
            f"--set sample.prompts: the run's prompts may only be extended on resume (samples are named by "
            f"prompt index, so a changed or removed prompt would mix two prompts in one contact-sheet row); "
            f"start the list with the current {len(old)}: {old}")


def to_list(prompts: Any) -> list[Any]:
    from engine.schema import to_dict

    return [to_dict(p) for p in prompts]


def attempt_config_path(run: RunDir, attempt: int) -> Path:
    return run.path / f"config.attempt-{attempt}.toml"


def write_changed_config(plan: ResumePlan) -> Path:
    """Keep the config the last attempt ran with as config.attempt-N.toml, then write the new config.toml
    (atomically; its header names the changes). Returns the kept file."""
    from engine.config import dump_config

    run = plan.run
    attempt = int((run.read_status() or {}).get("attempt") or 1)
    kept = attempt_config_path(run, attempt)
    old_text = run.config_path.read_text(encoding="utf-8")
    atomic.write_text(kept, old_text)
    header = [line for line in _leading_comments(old_text)]
    note = (f"Resumed with changes for attempt {attempt + 1} (attempt {attempt}'s config: {kept.name}): "
            + describe_changes(plan.changes))
    header += ["# " + line for line in note.splitlines()]  # a comment, whatever a value holds
    text = "\n".join(header) + "\n" + dump_config(plan.cfg)
    check_written_config(text, plan.cfg, run.config_path)
    atomic.write_text(run.config_path, text)
    return kept


def check_written_config(text: str, cfg: Any, path: Path) -> None:
    """The new config.toml must read back as exactly the planned config before it replaces the old one:
    the trainer reads it at start, and a file it cannot read would fail the resumed attempt."""
    from engine.config import parse_run_config

    try:
        again = parse_run_config(text, str(path))
    except Exception as e:  # noqa: BLE001 - any failure here is a bug in writing it: refuse, touching nothing
        raise ResumeInputError(f"the changed config would not read back ({e}); nothing was changed") from e
    if again != cfg:
        raise ResumeInputError("the changed config would not read back as planned; nothing was changed")


def _leading_comments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return out


class ResumeInProgress(LaunchError):
    """Another `resume` of the same run holds `resume.lock`: it is planning, rewriting config.toml or
    starting the supervisor right now."""


@contextlib.contextmanager
def resume_lock(run: RunDir) -> Iterator[None]:
    """Hold `RUN/resume.lock` (an exclusive flock) for one resume: from reading the run's state and
    config, through rewriting config.toml, until the new supervisor holds the run's own `lock` and has
    written `starting`. A second resume at the same instant gets ResumeInProgress at once; one that
    comes after finds the run starting or running and is refused as usual (`resume_check`). The
    supervisor's lock cannot serve here: the caller would have to let go of it before the supervisor
    takes it, and another resume could slip in between."""
    if not run.config_path.is_file():  # create no lock file in a folder that is not a run
        raise LaunchError(f"{run.path} is not a run directory (no config.toml)")
    fd = os.open(run.path / RESUME_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ResumeInProgress(f"another resume of {run.run_id} is in progress (it holds "
                                       f"{run.path / RESUME_LOCK}); nothing was changed. See it with "
                                       f"`tunelab status {run.run_id}`") from None
            raise
        yield
    finally:
        os.close(fd)  # closing releases the flock


def resume_with_changes(run_dir: RunDir | str | os.PathLike, overrides: Iterable[str] = ()) -> tuple[int, ResumePlan | None]:
    """Resume, applying `overrides` first; returns (supervisor pid, the plan or None without overrides).
    Raises as `plan_resume`, ResumeInProgress while another resume of the run holds its `resume.lock`,
    and LaunchError when the supervisor refuses (the old config is then back)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    with resume_lock(run):
        return _resume_with_changes(run, list(overrides))


def _resume_with_changes(run: RunDir, overrides: list[str]) -> tuple[int, ResumePlan | None]:
    from engine.launch import resume_run

    if not overrides:
        if run.state() == "finished":
            plan_resume(run, [])  # refuses, saying how to train it further
        return resume_run(run), None
    plan = plan_resume(run, overrides)
    if not plan.changes:  # every value as it was: a plain resume (a finished run was refused above)
        return resume_run(run), plan
    old_text = run.config_path.read_text(encoding="utf-8")
    kept = write_changed_config(plan)
    try:
        return start_supervisor(run, resume=True), plan
    except BaseException:
        atomic.write_text(run.config_path, old_text)
        kept.unlink(missing_ok=True)
        raise


def changes_since_last_attempt(run: RunDir) -> list[tuple[str, Any, Any]]:
    """For the trainer's `resumed` event: what `resume --set` changed before this attempt, from
    config.attempt-(N-1).toml (N: this attempt, in status.json); [] for a plain resume."""
    from engine.config import load_run_config
    from engine.schema import ConfigError

    attempt = (run.read_status() or {}).get("attempt")
    if not isinstance(attempt, int) or attempt < 2:
        return []
    kept = attempt_config_path(run, attempt - 1)
    if not kept.is_file():
        return []
    try:
        return config_changes(load_run_config(kept), load_run_config(run.config_path))
    except (ConfigError, OSError):
        return []
