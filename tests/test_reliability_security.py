"""Security properties checked on the source tree and on real processes: no shell, no pickles, no
network listener, and files created with the user's umask (docs/reliability.md)."""
from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("engine", "tui", "tests", "scripts", "bench")
# Loaders that take weights from disk; tokenizers, processors and configs hold no pickles.
NO_WEIGHTS = re.compile(r"(Tokenizer|Processor|Scheduler|Config|FeatureExtractor)")

pytestmark = pytest.mark.timeout(120)


def python_files() -> list[Path]:
    out = []
    for d in SOURCE_DIRS:
        out += sorted(p for p in (REPO / d).rglob("*.py") if ".venv" not in p.parts)
    return out


def calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)[:120]}"


def test_no_subprocess_runs_through_a_shell():
    bad = []
    for path in python_files():
        for call in calls(path):
            name = dotted(call.func)
            shell = keyword(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                bad.append(where(path, call))
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                bad.append(where(path, call))
    assert not bad, "shell use:\n" + "\n".join(bad)


def test_nothing_unpickles_and_every_torch_load_is_weights_only():
    bad = []
    for path in python_files():
        for call in calls(path):
            name = dotted(call.func)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load",
                        "joblib.load", "marshal.load", "marshal.loads", "shelve.open"):
                bad.append(where(path, call))
            if name == "torch.load" or name.endswith(".torch.load"):
                flag = keyword(call, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(where(path, call))
            if name.endswith(("np.load", "numpy.load")):
                flag = keyword(call, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    bad.append(where(path, call))
    assert not bad, "pickle loads:\n" + "\n".join(bad)


def test_model_weights_load_from_safetensors_only():
    """`from_pretrained` falls back to pickled `.bin` weights unless told `use_safetensors=True`."""
    bad = []
    for path in python_files():
        if path.parts[-2] == "tests":
            continue
        for call in calls(path):
            name = dotted(call.func)
            if not name.endswith(".from_pretrained"):
                continue
            receiver = name.rsplit(".", 2)[-2]
            if NO_WEIGHTS.search(receiver):
                continue
            flag = keyword(call, "use_safetensors")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                bad.append(where(path, call))
    assert not bad, "weights loaded without use_safetensors=True:\n" + "\n".join(bad)


SERVER_MODULES = ("http.server", "socketserver", "xmlrpc.server", "aiohttp", "textual_serve", "flask",
                  "fastapi", "uvicorn", "tornado", "websockets")


def test_tunelab_offers_no_network_listener():
    """No `textual serve`, web UI or socket server: the product listens on nothing. (Multi-GPU and
    multi-node rendezvous is accelerate's own, on `launch.main_process_port`.) The one socket tunelab
    opens is the port probe in engine/launch.py, which binds and closes without listening."""
    bad = []
    for path in python_files():
        if path.parts[len(REPO.parts)] not in ("engine", "tui"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == m or n.startswith(m + ".") for n in names for m in SERVER_MODULES):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {names}")
            if isinstance(node, ast.Call) and dotted(node.func).endswith((".listen", ".serve_forever",
                                                                          "start_server", ".run_server")):
                bad.append(where(path, node))
            if isinstance(node, ast.Call) and dotted(node.func).endswith(".bind") \
                    and path.relative_to(REPO) != Path("engine/launch.py"):
                bad.append(where(path, node))
    assert not bad, "network listeners:\n" + "\n".join(bad)
    from tui.cli import COMMANDS

    assert not any("serve" in name for name in COMMANDS)


UMASK_PROBE = """
import os, sys, time
os.umask(0o027)
from engine import launch
from engine.captions import write_caption
from engine.rundir import RunDir
project = sys.argv[1]
write_caption(os.path.join(project, 'images', 'a.txt'), 'a caption written through the library')
rd = launch.create_run(project, 'x')
launch.start_supervisor(rd)
deadline = time.monotonic() + 30
while rd.state() not in ('finished', 'failed', 'stopped') and time.monotonic() < deadline:
    time.sleep(0.05)
print(rd.path, rd.state(), flush=True)
"""


def test_files_are_created_with_the_users_umask(tmp_path):
    from tests.fake_trainer import FAST_ENV, make_project, wait_for

    project = make_project(tmp_path, "[train]\nepochs = 1\n")
    (project / "images").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_")}
    env.update(FAST_ENV, TUNELAB_FAKE_STEPS_PER_EPOCH="2", TUNELAB_FAKE_STEP_S="0.01", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", UMASK_PROBE, str(project)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    run_path, state = r.stdout.split()
    assert state == "finished", (Path(run_path) / "train.log").read_text()
    from engine.rundir import RunDir

    rd = RunDir(run_path)
    wait_for(lambda: not rd.lock_held(), 10, what="the supervisor to exit")

    files = [project / "images" / "a.txt"]
    dirs = []
    for dirpath, dirnames, filenames in os.walk(rd.path):
        dirs += [Path(dirpath) / d for d in dirnames]
        files += [Path(dirpath) / f for f in filenames]
    written = {p.name for p in files}
    # Caption (library), status (supervisor), events (trainer), lock, log, frozen config, checkpoints.
    for name in ("a.txt", "status.json", "events.jsonl", "lock", "train.log", "config.toml", "COMPLETE"):
        assert name in written, name
    wrong = [f"{p}: {oct(stat.S_IMODE(p.stat().st_mode))}" for p in files if stat.S_IMODE(p.stat().st_mode) != 0o640]
    wrong += [f"{p}/: {oct(stat.S_IMODE(p.stat().st_mode))}" for p in dirs + [rd.path]
              if stat.S_IMODE(p.stat().st_mode) != 0o750]
    assert not wrong, "not created with umask 027:\n" + "\n".join(wrong)
