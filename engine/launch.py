"""Starting, stopping and resuming runs: everything a user-facing caller (CLI, TUI) does to a run's processes.

- `create_run` validates a config and only then creates the run directory, with the resolved config frozen
  into `config.toml` and the user's text kept as `config.source.toml`.
- `start_supervisor` spawns `python -m engine.supervisor RUN_DIR` in a new session (stdin /dev/null,
  output appended to `train.log`), so the run outlives its caller, the TUI and SIGHUP. A pipe handshake
  tells the caller whether the supervisor took the run's lock or refused.
- `stop_run` asks for a graceful stop (`control/stop`) or forces one (SIGTERM, then SIGKILL, to the
  trainer's process tree); it never signals a pid whose start time differs from the one recorded, or one
  recorded on another host or before a reboot. A `lost` run (supervisor gone) is settled here. A graceful
  stop that the trainer does not obey is escalated by the supervisor itself, after `launch.stop_timeout_s`
  (see engine/supervisor.py), so nobody has to wait at a terminal; `stop_deadline` says when.
- `resume_run` starts a new supervisor with `--resume` when there is a complete checkpoint to resume from.
- `trainer_command` builds the `accelerate launch … -m engine.train RUN_DIR` command line.

Environment variables (for tests and debugging):
  TUNELAB_TRAINER_MODULE   module run as the trainer instead of `engine.train` (`tests.fake_trainer`)
  TUNELAB_NO_ACCELERATE=1  run the trainer as `python -m MODULE RUN_DIR` without `accelerate launch`

Besides the control requests the trainer polls, a stop writes `control/stop-requested` (JSON: time, who,
force). Nobody consumes it; it tells the supervisor that the trainer's exit was asked for, so a trainer
killed on request ends `stopped`, not `failed`. A new supervisor removes it.
"""
from __future__ import annotations

import copy
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from engine import atomic
from engine.rundir import ALIVE_STATES, RunDir, new_run_id

DEFAULT_TRAINER_MODULE = "engine.train"
DEFAULT_MAIN_PROCESS_PORT = 29500  # engine.config.LaunchConfig's default
STOP_MARKER = "stop-requested"
# Exit status of `python -m engine.supervisor` when another supervisor holds the run's lock.
EXIT_LOCKED = 3
EXIT_REFUSED = 4

# The directory that holds the `engine` package (a source checkout's root).
SOURCE_ROOT = Path(__file__).resolve().parent.parent


class LaunchError(Exception):
    """A run could not be created, started, stopped or resumed; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Processes: identity by (pid, start time), never by pid alone


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on, or None if there is no such process.

    The command name (field 2) may hold spaces and parentheses, so split after the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    end = raw.rfind(")")
    if end < 0:
        return None
    return raw[end + 2:].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: start time in clock ticks since boot (None: no such process)."""
    fields = proc_stat(pid)
    if not fields or len(fields) < 20:
        return None
    return int(fields[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def hostname() -> str:
    return socket.gethostname()


def is_same_process(pid: Any, start: Any, status: dict[str, Any] | None = None) -> bool:
    """True only if `pid` is alive and still the process that was recorded: same start time and, when the
    record says, the same host and boot. A zombie counts as gone."""
    if not isinstance(pid, int) or not isinstance(start, int) or pid <= 1:
        return False
    if status is not None:
        if status.get("host") and status["host"] != hostname():
            return False
        if status.get("boot_id") and status["boot_id"] != boot_id():
            return False
    fields = proc_stat(pid)
    if not fields or len(fields) < 20:
        return False
    if fields[0] == "Z":
        return False
    return int(fields[19]) == start


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int
    pgid: int


def process_tree(root: int, include_root: bool = True) -> list[Proc]:
    """The process `root` and all its descendants (from /proc), parents before children."""
    children: dict[int, list[Proc]] = {}
    me: Proc | None = None
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        fields = proc_stat(int(name))
        if not fields or len(fields) < 20 or fields[0] == "Z":
            continue
        p = Proc(int(name), int(fields[19]), int(fields[2]))
        if p.pid == root:
            me = p
        children.setdefault(int(fields[1]), []).append(p)
    out: list[Proc] = [me] if (me and include_root) else []
    queue = [root]
    seen = {root}
    while queue:
        for child in children.get(queue.pop(0), []):
            if child.pid not in seen:
                seen.add(child.pid)
                out.append(child)
                queue.append(child.pid)
    return out


def signal_procs(procs: Iterable[Proc], sig: int) -> int:
    """Send `sig` to each process (and to the group it leads) that is still the process recorded.
    Returns how many were signalled. A pid whose start time changed is skipped: it was recycled."""
    sent = 0
    for p in procs:
        if not is_same_process(p.pid, p.start):
            continue
        try:
            if p.pgid == p.pid:
                os.killpg(p.pgid, sig)  # also catches children forked since the snapshot
            else:
                os.kill(p.pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
        except PermissionError:
            pass
    return sent


def alive(procs: Iterable[Proc]) -> list[Proc]:
    return [p for p in procs if is_same_process(p.pid, p.start)]


def terminate_procs(procs: list[Proc], grace: float, poll: float = 0.05) -> list[Proc]:
    """SIGTERM the processes, wait up to `grace` seconds, SIGKILL what is left. Returns what survived."""
    if not alive(procs):
        return []
    signal_procs(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(poll)
    if alive(procs):
        signal_procs(procs, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(poll)
    return alive(procs)


def recorded_trainer_tree(status: dict[str, Any]) -> list[Proc]:
    """The trainer's processes, if the status's trainer pid is still the recorded process."""
    pid, start = status.get("trainer_pid"), status.get("trainer_start")
    if not is_same_process(pid, start, status):
        return []
    return process_tree(pid)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode} ({signal_name(-returncode)})"
    return f"exit code {returncode}"


def utc_iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# The trainer command


def _gpu_visible() -> bool:
    """Whether a GPU is visible to this machine, without importing torch (the supervisor is light)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return False
    if Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists():
        return True
    try:
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    except OSError:
        return False


def trainer_module() -> str:
    return os.environ.get("TUNELAB_TRAINER_MODULE") or DEFAULT_TRAINER_MODULE


def launch_args(launch: Any, mixed_precision: str = "no") -> list[str]:
    """`accelerate launch` options from `cfg.launch`, passed through unchanged.

    With an accelerate config file (DeepSpeed/FSDP/…), that file decides the distributed type and only
    the explicit counts are added. Without one, several processes get `--multi_gpu` (accelerate's
    torchrun launcher); on a machine without a GPU that still works: the supervisor sets
    ACCELERATE_USE_CPU so the Accelerator picks MULTI_CPU with gloo (`--cpu` would run one process only).
    """
    args: list[str] = []
    config_file = getattr(launch, "accelerate_config", "")
    if config_file:
        # The file decides everything it sets: only counts that differ from tunelab's defaults (so
        # were asked for in the run config) are added, as accelerate's command-line overrides.
        args += ["--config_file", str(config_file)]
        if launch.num_processes != 1:
            args += ["--num_processes", str(launch.num_processes)]
        if launch.num_machines != 1:
            args += ["--num_machines", str(launch.num_machines), "--machine_rank", str(launch.machine_rank)]
        if launch.main_process_ip:
            args += ["--main_process_ip", str(launch.main_process_ip)]
        if launch.main_process_port != DEFAULT_MAIN_PROCESS_PORT:
            args += ["--main_process_port", str(launch.main_process_port)]
    else:
        if launch.num_processes > 1 or launch.num_machines > 1:
            args += ["--multi_gpu"]
        args += ["--num_processes", str(launch.num_processes), "--num_machines", str(launch.num_machines)]
        if launch.num_machines > 1:
            args += ["--machine_rank", str(launch.machine_rank)]
        if launch.main_process_ip:
            args += ["--main_process_ip", str(launch.main_process_ip)]
        if launch.num_processes > 1 or launch.num_machines > 1:
            args += ["--main_process_port", str(launch.main_process_port)]
    if getattr(launch, "gpu_ids", ""):
        args += ["--gpu_ids", str(launch.gpu_ids)]
    args += ["--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    return args


def trainer_command(run_dir: RunDir, cfg: Any, *, resume: bool = False) -> list[str]:
    """The trainer's argv: `python -m accelerate.commands.launch <launch args> -m MODULE RUN_DIR [--resume]`."""
    tail = ["-m", trainer_module(), str(run_dir.path)] + (["--resume"] if resume else [])
    if os.environ.get("TUNELAB_NO_ACCELERATE") == "1":
        return [sys.executable] + tail
    mp = getattr(getattr(cfg, "train", None), "mixed_precision", "no") or "no"
    if mp == "auto":
        mp = "no"  # the trainer decides on its machine (engine.train.prepare.resolve_mixed_precision)
    launch = cfg.launch
    if getattr(launch, "accelerate_config", ""):
        # Relative to the project, like every path in a run config (the supervisor's cwd is the caller's).
        launch = copy.copy(launch)
        launch.accelerate_config = str(accelerate_config_path(launch.accelerate_config, run_dir.project_dir))
    return [sys.executable, "-m", "accelerate.commands.launch", *launch_args(launch, mp), *tail]


def accelerate_config_path(value: str, project_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(project_dir) / path


def free_port_for(launch: Any) -> int:
    """The rendezvous port to use: the configured one, unless this is a single-machine multi-process run
    and that port is taken here (say, by another run on the same box): then any free port. Multi-node
    runs keep the configured port, since the other machines were told it."""
    port = int(launch.main_process_port)
    if launch.num_machines > 1 or launch.num_processes < 2 or _port_free(port):
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


def trainer_env(run_dir: RunDir, cfg: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["TUNELAB_RUN_DIR"] = str(run_dir.path)
    env["PYTHONUNBUFFERED"] = "1"
    env["TQDM_DISABLE"] = "1"  # no progress bars in train.log
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    # tunelab never downloads: diffusers' single-file loader fetches a missing config from the hub even
    # with local_files_only=True; offline mode makes that an error the trainer explains instead.
    env.setdefault("HF_HUB_OFFLINE", "1")
    launch = getattr(cfg, "launch", None)
    if launch is not None and (launch.num_processes > 1 or launch.num_machines > 1) \
            and not launch.accelerate_config and not _gpu_visible():
        env.setdefault("ACCELERATE_USE_CPU", "true")
    add_source_root(env)
    return env


def add_source_root(env: dict[str, str]) -> None:
    """Let `python -m engine.…` (and `tests.fake_trainer`) import from a source checkout wherever the
    caller's working directory is. Appended, so an installed package still wins."""
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SOURCE_ROOT) not in parts:
        parts.append(str(SOURCE_ROOT))
    env["PYTHONPATH"] = os.pathsep.join(parts)


_add_source_root = add_source_root  # the name the TUI's runs pane first used


# --------------------------------------------------------------------------------------------
# Creating a run


def resolve_config_path(project_dir: Path, config: str | os.PathLike) -> Path:
    """CONFIG is a name in `configs/` (with or without `.toml`) or a path to a TOML file."""
    given = Path(config)
    if given.is_file():
        return given
    name = str(config)
    candidates = [project_dir / "configs" / name]
    if not name.endswith(".toml"):
        candidates.insert(0, project_dir / "configs" / f"{name}.toml")
    for c in candidates:
        if c.is_file():
            return c
    available = sorted(p.stem for p in (project_dir / "configs").glob("*.toml"))
    hint = f"; configs in {project_dir / 'configs'}: {', '.join(available)}" if available else \
        f"; {project_dir / 'configs'} has no .toml files"
    raise LaunchError(f"config {name!r} not found (neither a file nor a name in configs/){hint}")


GOALS_FROZEN_NOTE = "# sample.prompts: the project's goals at launch"


def goals_changed_since_launch(run: RunDir) -> list[str]:
    """For a run that froze its project's goals as its prompts: the goals project.toml has now that the
    run does not sample (added since, and not added to the run by `resume --set sample.prompts`). Empty
    for a run with prompts of its own, and when either file cannot be read (this only feeds a note)."""
    from engine.config import goal_prompts, load_run_config
    from engine.project import load_project_file

    try:
        if GOALS_FROZEN_NOTE not in run.config_path.read_text(encoding="utf-8"):
            return []
        sampled = {p.text for p in load_run_config(run.config_path).sample.prompts}
        goals = goal_prompts(load_project_file(run.project_dir).goals.as_dict())
    except Exception:  # noqa: BLE001 - a note, never a reason to fail a resume
        return []
    return [p.text for p in goals if p.text not in sampled]


def goals_note(run: RunDir, overrides: Iterable[str] = ()) -> str | None:
    """What `tunelab resume` and the TUI say when the project's goals changed since a run froze them,
    unless this resume sets the prompts itself."""
    from engine.schema import override_key

    unsampled = goals_changed_since_launch(run)
    if not unsampled or any(override_key(o) == "sample.prompts" for o in overrides):
        return None
    listed = ", ".join(repr(t) for t in unsampled[:3]) + (" …" if len(unsampled) > 3 else "")
    return (f"project.toml's goals changed since launch; this run keeps the goals it was launched with, so its "
            f"rows stay comparable. Not sampled: {listed} (add with --set 'sample.prompts=[…]', or start a new run)")


def freeze_goal_prompts(cfg, goals: dict[str, list[str]]) -> bool:
    """A config without `sample.prompts` samples the project's goals: write them into the run's config,
    so every attempt of the run (resume, retry) renders the same prompts in the same rows even if the
    goals in project.toml are edited later. Only text and kind are frozen; seeds, steps and guidance
    stay the section's, so `resume --set sample.seeds=…` still applies to every prompt."""
    from engine.config import goal_prompts

    if cfg.sample.prompts:
        return False
    cfg.sample.prompts = goal_prompts(goals)
    return bool(cfg.sample.prompts)


def create_run(project_dir: str | os.PathLike, config_path: str | os.PathLike,
               overrides: Iterable[str] = (), on_warning: Callable[[Any], None] | None = None) -> RunDir:
    """Validate the config (with overrides) and create `runs/<run-id>/` with the frozen config.
    `on_warning` gets each `prelaunch_warnings` problem (what launches but looks like a mistake).

    Raises `engine.schema.ConfigError` (printable problems, in the config or in project.toml) or
    `LaunchError`, before creating anything.
    The directory is built under a hidden temporary name and renamed into place, so no reader ever sees
    a run without its config.
    """
    from engine.config import dump_config, load_run_config  # light, but only needed here

    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise LaunchError(f"project {project_dir} not found (not a directory)")
    from engine.project import load_project_file

    project = load_project_file(project_dir)  # a broken project.toml is a ConfigError now, not later
    path = resolve_config_path(project_dir, config_path)
    cfg = load_run_config(_display_path(path), list(overrides))
    source = path.read_text(encoding="utf-8")
    problems = prelaunch_check(cfg, project_dir, _display_path(path), source, overrides)
    if problems:
        from engine.schema import ConfigError

        raise ConfigError(problems)
    for warning in prelaunch_warnings(cfg, _display_path(path), source, overrides) if on_warning else ():
        on_warning(warning)
    from_goals = freeze_goal_prompts(cfg, project.goals.as_dict())
    frozen = dump_config(cfg)

    runs = project_dir / "runs"
    runs.mkdir(exist_ok=True)
    now = time.time()
    for attempt in range(100):
        run_id = new_run_id(path.stem, now + attempt)  # one run per second and config name
        final = runs / run_id
        if not final.exists():
            break
    else:
        raise LaunchError(f"could not find a free run id in {runs}")
    tmp = runs / f".creating-{run_id}-{os.getpid()}"
    tmp.mkdir()
    try:
        header = (f"# Resolved config of run {run_id}, frozen at launch (every default filled in).\n"
                  f"# Source: {path}" + (f"; overrides: {', '.join(overrides)}" if overrides else "") + "\n"
                  + (f"{GOALS_FROZEN_NOTE} (later edits of project.toml do not change this run's contact "
                     "sheet)\n" if from_goals else ""))
        atomic.write_text(tmp / "config.toml", header + frozen)
        atomic.write_text(tmp / "config.source.toml", source)
        (tmp / "control").mkdir()
        (tmp / "checkpoints").mkdir()
        (tmp / "samples").mkdir()
        os.rename(tmp, final)  # fails if `final` appeared meanwhile: no run is ever overwritten
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.fsync_dir(runs)
    return RunDir(final)


def prelaunch_check(cfg: Any, project_dir: str | os.PathLike, path: str | os.PathLike, source: str,
                    overrides: Iterable[str] = ()) -> list[Any]:
    """Every reason `tunelab run` refuses a config that passed the schema, as `engine.schema.Problem`s
    naming the config file and the key's line (0: given with --set): a `model.base`/`model.config` that
    names nothing loadable, a textual-inversion placeholder or initializer that does not fit the base's
    tokenizer (checked only once the base resolves), a `launch.accelerate_config` that is not a file,
    `lora.target_modules` that can adapt no layer of the UNet (or name a block or norm peft cannot wrap).

    The one check shared by `create_run`, `tunelab check` and the TUI's Configs tab, so all three agree.
    Light (file system and `tokenizers` only); reading a tokenizer takes a moment, so UIs call it in a worker.
    """
    from engine.placeholder import located_problems  # light: tokenizers only

    project_dir = Path(project_dir)
    problems = base_model_problems(cfg, project_dir, path, source, overrides)
    if not problems:
        problems += located_problems(cfg, project_dir, path, source, overrides)
    problems += accelerate_config_problems(cfg, project_dir, path, source, overrides)
    problems += lora_target_problems(cfg, path, source, overrides)[0]
    return problems


def prelaunch_warnings(cfg: Any, path: str | os.PathLike, source: str, overrides: Iterable[str] = ()) -> list[Any]:
    """What launches but is likely a mistake, as `Problem`s to print as warnings (`tunelab check`, `tunelab run`):
    for now a `lora.target_modules` name that matches nothing while the others do (peft ignores it)."""
    return lora_target_problems(cfg, path, source, overrides)[1]


def lora_target_problems(cfg: Any, path: str | os.PathLike, source: str,
                         overrides: Iterable[str]) -> tuple[list[Any], list[Any]]:
    """(errors, warnings) for `lora.target_modules` of a method that trains LoRA (`engine.loratargets`): names
    that can match no layer of an SD 1.x/2.x UNet fail ~8 s into the run, after the base has loaded."""
    from engine.loratargets import KEY, target_problems, uses_lora
    from engine.schema import Problem, key_line

    if not uses_lora(cfg):
        return [], []
    line = key_line(source, KEY, overrides)
    errors, warnings = target_problems(list(cfg.lora.target_modules))
    return ([Problem(str(path), line, KEY, m) for m in errors], [Problem(str(path), line, KEY, m) for m in warnings])


def base_model_problems(cfg: Any, project_dir: Path, path: str | os.PathLike, source: str,
                        overrides: Iterable[str]) -> list[Any]:
    """A `model.base` (or `model.config`) that names nothing loadable, at the key's line, with the accepted forms."""
    from engine.basemodel import check_base
    from engine.schema import Problem, key_line

    overrides = list(overrides)
    return [Problem(str(path), key_line(source, "model.config" if message.startswith("model.config") else "model.base",
                                        overrides), "", message)
            for message in check_base(cfg.model.base, project_dir, cfg.model.config or None)]


def accelerate_config_problems(cfg: Any, project_dir: Path, path: str | os.PathLike, source: str,
                               overrides: Iterable[str]) -> list[Any]:
    """A `launch.accelerate_config` that is not a file (accelerate would fail later, in train.log)."""
    from engine.schema import Problem, key_line

    value = cfg.launch.accelerate_config
    if not value or accelerate_config_path(value, project_dir).is_file():
        return []
    key = "launch.accelerate_config"
    return [Problem(str(path), key_line(source, key, overrides), key, f"= {value!r}: {accelerate_config_path(value, project_dir)} "
                    "is not a file; give an accelerate config file (`accelerate config` writes one; "
                    "relative paths are the project's in a config file, the current folder's with --set)")]


def _display_path(path: Path) -> Path:
    """A path relative to the working directory when it is below it, for shorter error messages."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def load_frozen_config(run_dir: RunDir) -> Any:
    from engine.config import load_run_config

    return load_run_config(run_dir.config_path)


# --------------------------------------------------------------------------------------------
# Starting the supervisor


def start_supervisor(run_dir: RunDir | str | os.PathLike, *, resume: bool = False,
                     ready_timeout: float = 20.0) -> int:
    """Spawn the supervisor detached from the caller; return its pid once it holds the run's lock.

    Raises LaunchError when the supervisor refuses (another one holds the lock, nothing to resume) —
    its message is also in train.log. If the supervisor is merely slow to answer, its pid is returned.
    """
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run_dir.path.resolve()
    env = dict(os.environ)
    add_source_root(env)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "engine.supervisor", str(path), "--detach", "--ready-fd", str(write_fd)]
    if resume:
        cmd.append("--resume")
    try:
        with open(run_dir.log_path, "ab") as log, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(
                cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(write_fd,), env=env, cwd=str(Path.cwd()),
            )
    finally:
        os.close(write_fd)
    try:
        answer = _read_answer(read_fd, ready_timeout)
    finally:
        os.close(read_fd)
        # With --detach this process only forks and exits: reap it, so no zombie or child is left.
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
    if answer.startswith("ok"):
        parts = answer.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else proc.pid
    if answer:
        raise LaunchError(answer.strip())
    if rc not in (None, 0):
        raise LaunchError(f"the supervisor exited at once ({describe_exit(rc)}); see {run_dir.log_path}")
    # No answer in time: it may still be starting (a very slow disk); its status will tell.
    status = run_dir.read_status() or {}
    return int(status.get("supervisor_pid") or proc.pid)


def _read_answer(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        chunks.append(data)
        if b"\n" in data:
            break
    return b"".join(chunks).decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# Stopping

# A forced stop (`tunelab stop --force`, the TUI's K): SIGTERM, then SIGKILL this many seconds later.
# One value for both, so the checkpoint the trainer saves on SIGTERM gets the same chance everywhere.
FORCE_KILL_AFTER_S = 10.0


def _mark_stop_requested(run_dir: RunDir, force: bool, by: str) -> None:
    run_dir.control_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir.control_dir / STOP_MARKER,
                      json.dumps({"t": time.time(), "by": by, "force": force}) + "\n")


def stop_deadline(run_dir: RunDir, wait: float = 5.0, poll: float = 0.1) -> dict[str, Any] | None:
    """What the supervisor will do about a stop it has seen: {"deadline_t": unix time of its SIGTERM,
    "kill_after_s": seconds from there to SIGKILL, "timeout_s": the stop timeout}. Waits up to `wait`
    seconds for the supervisor to notice the request; None if the run ended or no deadline appeared."""
    end = time.monotonic() + wait
    while True:
        status = run_dir.read_status() or {}
        if run_dir.state(status) not in ALIVE_STATES:
            return None
        deadline = status.get("stop_deadline_t")
        if isinstance(deadline, (int, float)):
            requested = status.get("stop_requested_t")
            return {"deadline_t": float(deadline), "kill_after_s": float(status.get("stop_kill_after_s") or 0),
                    "timeout_s": float(deadline) - float(requested) if isinstance(requested, (int, float)) else None}
        if time.monotonic() >= end:
            return None
        time.sleep(poll)


def wait_state(run_dir: RunDir, timeout: float, poll: float = 0.1) -> str:
    """Wait until the shown state is no longer alive (lost counts as not alive); return it."""
    return _wait_state(run_dir, timeout, poll)


def _wait_state(run_dir: RunDir, timeout: float, poll: float = 0.1) -> str:
    """Wait until the shown state is no longer alive (lost counts as not alive); return it."""
    deadline = time.monotonic() + timeout
    while True:
        state = run_dir.state()
        if state not in ALIVE_STATES or time.monotonic() >= deadline:
            return state
        time.sleep(poll)


def stop_run(run_dir: RunDir | str | os.PathLike, force: bool = False, timeout: float = 60.0,
             kill_after: float = FORCE_KILL_AFTER_S) -> str:
    """Stop a run and return the state it ended in (or is still in, when `timeout` ran out).

    Graceful: drop `control/stop` (the trainer saves a checkpoint and exits) and wait for the supervisor
    to record the end. Force: also SIGTERM the trainer's process tree, SIGKILL it after `kill_after`
    seconds. A `lost` run (no supervisor) is settled here: once its trainer is gone, the status becomes
    `stopped` (or `finished`/`failed` as its events say), so it can be resumed.
    """
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    status = run_dir.read_status()
    state = run_dir.state(status)
    if state not in ALIVE_STATES and state != "lost":
        return state
    if status is None and state == "lost" and not run_dir.config_path.exists():
        raise LaunchError(f"{run_dir.path} is not a run directory")
    by = "tunelab stop --force" if force else "tunelab stop"
    _mark_stop_requested(run_dir, force, by)
    run_dir.request("stop")

    if state == "lost":
        return _settle_lost(run_dir, status or {}, force, timeout, kill_after)

    if not force:
        return _wait_state(run_dir, timeout)

    procs = recorded_trainer_tree(status or {})
    terminate_procs(procs, kill_after)
    return _wait_state(run_dir, timeout)


def _settle_lost(run_dir: RunDir, status: dict[str, Any], force: bool, timeout: float,
                 kill_after: float) -> str:
    """The supervisor is gone; make sure the trainer is too, then write the status it never wrote."""
    if status.get("host") and status["host"] != hostname() and not force:
        # The trainer may be alive on the other machine; only the user can know.
        raise LaunchError(f"run {run_dir.run_id} was started on {status['host']}; stop it there, or use "
                          f"--force to mark it stopped from here")
    procs = recorded_trainer_tree(status)
    if procs and not force:
        deadline = time.monotonic() + timeout
        while alive(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(procs):
            return "lost"  # still running without a supervisor: the caller suggests --force
    terminate_procs(procs, kill_after)
    with _exclusive_lock(run_dir) as got:
        if not got:
            return run_dir.state()  # a new supervisor took the run meanwhile
        fresh = run_dir.read_status() or {}
        if fresh.get("state") is not None and fresh.get("state") not in ALIVE_STATES:
            return fresh["state"]
        state, error = _outcome_from_events(run_dir, fresh)
        fresh.update(state=state, ended=utc_iso(), ended_t=time.time(), supervisor_lost=True)
        if error:
            fresh["error"] = error
        run_dir.write_status(fresh)
        return state


def _outcome_from_events(run_dir: RunDir, status: dict[str, Any]) -> tuple[str, str | None]:
    """What a lost run ended as, judged from the trainer's events since its last start."""
    started = status.get("started_t") or 0
    last: dict[str, Any] | None = None
    for ev in run_dir.iter_events():
        if ev.get("t", 0) >= started and ev.get("kind") in ("finished", "stopped", "error"):
            last = ev
    if last is not None and last["kind"] == "finished":
        return "finished", None
    if last is not None and last["kind"] == "error":
        return "failed", f"{last.get('message', 'error')} (and the supervisor died)"
    return "stopped", "the supervisor died; settled by tunelab stop"


class _exclusive_lock:
    """Briefly take the run's lock (non-blocking, a couple of retries); yields whether it was taken."""

    def __init__(self, run_dir: RunDir, wait: float = 2.0):
        self.run_dir, self.wait, self.fd = run_dir, wait, -1

    def __enter__(self) -> bool:
        fd = self.run_dir.take_lock(self.wait)
        self.fd = -1 if fd is None else fd
        return fd is not None

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the flock


# --------------------------------------------------------------------------------------------
# Resuming


def resume_check(run_dir: RunDir) -> str | None:
    """Why this run cannot be resumed now, or None if it can."""
    if not run_dir.config_path.is_file():
        return f"{run_dir.path} is not a run directory (no config.toml)"
    status = run_dir.read_status()
    state = run_dir.state(status)
    if state in ALIVE_STATES:
        return f"run {run_dir.run_id} is {state}; stop it first (tunelab stop {run_dir.run_id})"
    if state == "lost":
        return (f"run {run_dir.run_id} is lost (its supervisor died; the trainer may still be running); "
                f"settle it first with `tunelab stop --force {run_dir.run_id}`")
    if state == "finished":
        return (f"run {run_dir.run_id} already finished; to train it further: tunelab resume {run_dir.run_id} "
                "--set train.epochs=N (N beyond its last checkpoint)")
    if run_dir.latest_complete_checkpoint() is None:
        return (f"run {run_dir.run_id} has no complete checkpoint, so there is nothing to resume from; "
                f"start a new run instead (tunelab run)")
    return None


def resume_run(run_dir: RunDir | str | os.PathLike) -> int:
    """Start a new supervisor with `--resume`; return its pid. Raises LaunchError when refused."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    why = resume_check(run_dir)
    if why:
        raise LaunchError(why)
    return start_supervisor(run_dir, resume=True)
