"""The trainer as a process: `python -m engine.train`, SIGTERM, and `accelerate launch` with 2 processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.rundir import EventTail
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.pop("TUNELAB_TRAINER_MODULE", None)
    return env


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cfg = tiny_config(**{"train.epochs": 200})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, goals=False), cfg)
    log = open(tmp_path / "train.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine.train", str(run.path)], cwd=run.path, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        tail, deadline = EventTail(run.events_path), time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(e["kind"] == "progress" for e in tail.read_new()):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = events(run, "stopped")
    assert stopped and stopped[0]["reason"] == "signal"
    assert run.latest_complete_checkpoint().step == stopped[0]["step"]
    assert b"step 1/" in (tmp_path / "train.log").read_bytes()  # the human progress line
    assert b"it/s]" not in (tmp_path / "train.log").read_bytes()  # no tqdm bars


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch_write_from_rank_0_only(tmp_path):
    cfg = tiny_config(**{"train.epochs": 2, "train.batch_size": 1, "launch.num_processes": 2})
    cfg.sample.seeds = [3]
    run = make_run(make_project(tmp_path, n=4), cfg)
    env = _env()
    env["ACCELERATE_USE_CPU"] = "true"
    port = 29500 + os.getpid() % 1000
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "engine.train", str(run.path)]
    result = subprocess.run(cmd, cwd=run.path, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=280)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    start = events(run, "start")
    assert len(start) == 1 and start[0]["processes"] == 2
    # 4 images over 2 processes at batch 1: 2 steps per epoch, each step sees 2 images.
    assert start[0]["steps_per_epoch"] == 2 and start[0]["total_steps"] == 4
    assert [p["step"] for p in events(run, "progress")] == [1, 2, 3, 4]
    assert len(events(run, "finished")) == 1 and len(events(run, "checkpoint")) == 1
    assert len(events(run, "sample")) == 2 * 2  # 2 prompts x 1 seed, epoch 0 and the end, written once
    assert [c.path.name for c in run.checkpoints()] == ["e0002-s00000004"]
