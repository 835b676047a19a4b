"""Two `tunelab resume RUN --set …` at the same instant: one rewrites config.toml and starts the run, the
other is refused ("another resume of RUN is in progress") and changes nothing (fake trainer, real processes)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from engine import resume as resume_mod
from engine.config import load_run_config
from engine.launch import LaunchError
from engine.rundir import RunDir
from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project, wait_state

pytestmark = pytest.mark.timeout(120)


def env(**fake: object) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELAB_", "ACCELERATE_"))}
    return {**base, **FAST_ENV, **{f"TUNELAB_FAKE_{k.upper()}": str(v) for k, v in fake.items()}}


def tunelab(root, *args: str, **fake: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tui.cli", *args], cwd=root, env=env(**fake),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def finished(tmp_path):
    """A fake run of 2 epochs that has finished."""
    make_project(tmp_path / "projects")
    out, err = tunelab(tmp_path, "run", "p", "x", "--wait", step_s=0.001).communicate(timeout=60)
    run = RunDir(tmp_path / out.splitlines()[0].strip())
    assert run.read_status()["state"] == "finished", err
    yield run
    kill_run_processes(run)


def test_a_resume_while_another_rewrites_the_config_is_refused_and_changes_nothing(finished, monkeypatch):
    for k, v in env(step_s=0.001).items():
        monkeypatch.setenv(k, v)
    inside, go = threading.Event(), threading.Event()
    real = resume_mod.write_changed_config

    def held_open(plan):  # the first resume stops right after rewriting config.toml, its lock held
        kept = real(plan)
        if not inside.is_set():
            inside.set()
            go.wait(30)
        return kept

    monkeypatch.setattr(resume_mod, "write_changed_config", held_open)
    done: dict[str, object] = {}
    first = threading.Thread(target=lambda: done.update(first=resume_mod.resume_with_changes(finished, ["train.epochs=3"])))
    first.start()
    try:
        assert inside.wait(30)
        with pytest.raises(LaunchError,  # ResumeInProgress: `tunelab resume` exits 1, "refused"
                           match=f"another resume of {finished.run_id} is in progress .*nothing was changed"):
            resume_mod.resume_with_changes(finished, ["train.epochs=5"])
        assert load_run_config(finished.config_path).train.epochs == 3  # the first one's, untouched
    finally:
        go.set()
        first.join(30)
    assert "first" in done
    assert wait_state(finished, "finished") == "finished"
    assert finished.read_status()["attempt"] == 2
    assert load_run_config(finished.path / "config.attempt-1.toml").train.epochs == 2
    assert not (finished.path / "config.attempt-2.toml").exists()


def test_resumes_started_at_once_as_processes_let_exactly_one_through(finished):
    """Four users resume the same run at the same moment with different lengths."""
    wanted = [3, 4, 5, 6]
    procs = [tunelab(finished.path.parent.parent.parent.parent, "resume", str(finished.path), "--set",
                     f"train.epochs={n}", step_s=0.3) for n in wanted]
    results = [(n, p.wait(timeout=60), *p.communicate()) for n, p in zip(wanted, procs)]
    winners = [n for n, rc, _, _ in results if rc == 0]
    assert len(winners) == 1, results
    for n, rc, _, err in results:
        if n != winners[0]:
            assert rc == 1 and ("another resume of" in err or f"run {finished.run_id} is starting" in err
                                or f"run {finished.run_id} is running" in err), (n, err)
    assert load_run_config(finished.config_path).train.epochs == winners[0]
    assert load_run_config(finished.path / "config.attempt-1.toml").train.epochs == 2
    assert not (finished.path / "config.attempt-2.toml").exists()
    assert finished.read_status()["attempt"] == 2
