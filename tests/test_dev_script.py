"""`./dev setup`: which torch it installs on which machine, and that a second run installs nothing.

Runs the real script against stub `python`/`pip`/`nvidia-smi` programs that log what they were asked,
so the choices are checked without downloading anything.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

STUB_PYTHON = """#!/usr/bin/env bash
# A stand-in interpreter: `-m venv DIR` makes a venv of stubs; `-c CODE` succeeds (version checks).
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" "$3/lib/python3.11/site-packages"
  cp "$STUB_DIR/pip" "$3/bin/pip"
  printf '#!/usr/bin/env bash\\nexit 0\\n' > "$3/bin/python"; chmod +x "$3/bin/python"
  exit 0
fi
exit "${STUB_PYTHON_RC:-0}"
"""

# Logs every call; fails the calls whose arguments match STUB_PIP_FAIL (a grep -E pattern); an
# install of torch that succeeds leaves a dist-info, as pip would.
STUB_PIP = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ -n "${STUB_PIP_FAIL:-}" ] && echo "$*" | grep -Eq -e "$STUB_PIP_FAIL"; then exit 1; fi
site="$(dirname "$0")/../lib/python3.11/site-packages"
case "$*" in
  *"torch==2.13.0+cpu"*) mkdir -p "$site/torch-2.13.0+cpu.dist-info" ;;
  *"torch===2.13.0"*) rm -rf "$site"/torch-*.dist-info; mkdir -p "$site/torch-2.13.0.dist-info" ;;
esac
exit 0
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(REPO / "dev", root / "dev")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _exe(stubs / "python", STUB_PYTHON)
    _exe(stubs / "pip", STUB_PIP)
    (tmp_path / "bin").mkdir()
    return root


def setup(checkout: Path, gpu: bool = False, fail: str = "", py_rc: int = 0) -> tuple[int, list[str], str]:
    tmp = checkout.parent
    log = tmp / "pip.log"
    log.unlink(missing_ok=True)
    gpu_bin = tmp / "bin"
    for f in gpu_bin.iterdir():
        f.unlink()
    if gpu:
        _exe(gpu_bin / "nvidia-smi", "#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H200'\n")
    env = {"PATH": f"{gpu_bin}:/usr/bin:/bin", "HOME": str(tmp), "PYTHON": str(tmp / "stubs" / "python"),
           "STUB_DIR": str(tmp / "stubs"), "STUB_LOG": str(log), "STUB_PIP_FAIL": fail,
           "STUB_PYTHON_RC": str(py_rc)}
    r = subprocess.run(["bash", str(checkout / "dev"), "setup"], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    calls = log.read_text().splitlines() if log.exists() else []
    return r.returncode, calls, r.stderr


def test_without_a_gpu_the_local_cpu_wheel_comes_first_and_a_second_run_installs_nothing(checkout):
    rc, calls, err = setup(checkout)
    assert rc == 0, err
    assert calls[0] == "install -q --no-deps --no-index torch==2.13.0+cpu"
    assert calls[1] == "install -q -e .[test]" and len(calls) == 2
    rc, calls, err = setup(checkout)
    assert rc == 0 and calls == [], err


def test_without_the_local_wheel_the_cpu_index_then_pypi_is_tried(checkout):
    rc, calls, err = setup(checkout, fail="--no-index")
    assert rc == 0, err
    assert "--index-url https://download.pytorch.org/whl/cpu" in calls[1]
    shutil.rmtree(checkout / ".venv")
    rc, calls, err = setup(checkout, fail="torch==2.13.0\\+cpu")  # no CPU build anywhere: PyPI's build
    assert rc == 0 and "installing PyPI's build" in err
    assert calls[-2:] == ["install -q torch===2.13.0", "install -q -e .[test]"]


def test_with_a_gpu_the_cuda_build_is_asked_for_by_exact_version_and_replaces_a_cpu_build(checkout):
    setup(checkout)  # a CPU venv first, as on a machine that later got a GPU
    rc, calls, err = setup(checkout, gpu=True)
    assert rc == 0, err
    assert calls == ["install -q torch===2.13.0", "install -q -e .[test]"]  # === never matches a +cpu wheel
    rc, calls, _ = setup(checkout, gpu=True)
    assert rc == 0 and calls == []


def test_an_old_python_is_refused_with_what_to_do(checkout):
    rc, calls, err = setup(checkout, py_rc=1)
    assert rc == 2 and "needs Python 3.11 or newer" in err and "PYTHON=" in err
    assert calls == [] and not (checkout / ".venv").exists()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "./dev test" in readme.split("## ", 1)[0]  # in the opening, before the first section
    assert [ln for ln in ci.splitlines() if ln and not ln.startswith(("#", "set ", "cd "))] == ["./dev test"]
    assert os.access(REPO / "dev", os.X_OK) and os.access(REPO / ".ci" / "run", os.X_OK)


def test_a_first_set_up_says_what_it_installs_and_a_second_says_nothing(checkout):
    rc, _, err = setup(checkout)
    assert rc == 0, err
    lines = err.splitlines()  # pip runs -q: without these a first ./dev tui sat silent for minutes
    assert lines[0] == "./dev: creating the virtual environment .venv"
    assert lines[1].startswith("./dev: installing torch 2.13.0 (CPU build")
    assert lines[2].startswith("./dev: installing tunelab and its dependencies")
    assert lines[3].startswith("./dev: set up in ")
    rc, _, err = setup(checkout)
    assert rc == 0 and err == ""
