"""The process model, with real processes: supervisor + fake trainer (no accelerate here; see
test_launch_cli.py for runs through real `accelerate launch`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine import launch
from engine.rundir import RunDir
from engine.schema import ConfigError
from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project, wait_for, wait_state

pytestmark = pytest.mark.timeout(180)


class Runs:
    """Starts runs of a tmp project with the fake trainer; kills leftovers at teardown."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path):
        self.mp = monkeypatch
        self.root = root
        self.created: list[RunDir] = []
        for k, v in FAST_ENV.items():
            monkeypatch.setenv(k, v)
        for k in list(os.environ):
            if k.startswith("TUNELAB_FAKE_"):
                monkeypatch.delenv(k)

    def fake(self, **env: object) -> None:
        """Set TUNELAB_FAKE_<NAME> for runs started from now on (None unsets)."""
        for k, v in env.items():
            if v is None:
                self.mp.delenv(f"TUNELAB_FAKE_{k.upper()}", raising=False)
            else:
                self.mp.setenv(f"TUNELAB_FAKE_{k.upper()}", str(v))

    def start(self, config: str = "[train]\nepochs = 2\n", **env: object) -> RunDir:
        self.fake(**env)
        project = make_project(self.root, config)
        rd = launch.create_run(project, "x")
        self.created.append(rd)
        launch.start_supervisor(rd)
        return rd

    def cleanup(self) -> None:
        for rd in self.created:
            kill_run_processes(rd)


@pytest.fixture
def runs(monkeypatch, tmp_path):
    r = Runs(monkeypatch, tmp_path)
    yield r
    r.cleanup()


def events(rd: RunDir, kind: str | None = None) -> list[dict]:
    return [e for e in rd.iter_events() if kind is None or e["kind"] == kind]


def progressed(rd: RunDir, step: int) -> bool:
    return any(e["step"] >= step for e in events(rd, "progress"))


# ---------------------------------------------------------------------------------------------


def test_a_started_run_finishes_with_a_complete_record(runs):
    rd = runs.start()
    assert wait_state(rd, {"finished", "failed"}) == "finished"
    st = rd.read_status()
    assert st["exit_code"] == 0 and st["error"] is None
    assert st["host"] and st["started"] and st["ended"] and st["trainer_pid"] != st["supervisor_pid"]
    assert st["trainer_pgid"] == st["trainer_pid"]  # the trainer leads its own process group
    assert [c.path.name for c in rd.checkpoints(complete_only=True)] == ["e0001-s00000004", "e0002-s00000008"]
    assert [c[0] for c in rd.sample_columns()] == ["e0000-s00000000", "e0001-s00000004", "e0002-s00000008"]
    assert (rd.path / "config.source.toml").read_text() == (rd.project_dir / "configs" / "x.toml").read_text()
    assert 'method = "lora"' in rd.config_path.read_text()  # resolved: defaults filled in
    wait_for(lambda: not rd.lock_held(), 5, what="the supervisor to exit and release the lock")


def test_a_run_outlives_its_callers_exit_and_a_sighup_to_the_callers_process_group(runs, tmp_path):
    project = make_project(tmp_path, "[train]\nepochs = 6\n")  # 24 steps of 0.15 s: still going at the SIGHUP
    caller = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from engine import launch\n"
         f"rd = launch.create_run({str(project)!r}, 'x')\n"
         "launch.start_supervisor(rd)\n"
         "print(rd.path, flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TUNELAB_FAKE_STEP_S": "0.15"},
    )
    with caller.stdout:
        rd = RunDir(caller.stdout.readline().strip())
    runs.created.append(rd)
    wait_for(lambda: progressed(rd, 1), what="the first progress event")
    st = rd.read_status()
    assert os.getsid(st["supervisor_pid"]) != os.getsid(caller.pid)
    os.killpg(caller.pid, signal.SIGHUP)  # what a closing terminal / dropped SSH link does
    assert caller.wait(15) == -signal.SIGHUP
    hung_up_at = time.time()
    assert wait_state(rd, {"finished", "failed", "lost"}, timeout=40) == "finished"
    assert any(e["t"] > hung_up_at for e in events(rd, "progress"))  # it trained on after the SIGHUP


def test_stop_saves_a_checkpoint_and_ends_stopped(runs):
    rd = runs.start("[train]\nepochs = 50\n", step_s=0.05)
    wait_for(lambda: progressed(rd, 2), what="step 2")
    assert launch.stop_run(rd, timeout=10) == "stopped"
    stopped = events(rd, "stopped")
    assert len(stopped) == 1
    ck = rd.latest_complete_checkpoint()
    assert ck is not None and ck.step == stopped[0]["step"]
    st = rd.read_status()
    assert st["exit_code"] == 0 and st["error"] is None and not events(rd, "finished")


def test_force_stop_kills_a_trainer_that_ignores_stop_and_sigterm(runs):
    rd = runs.start("[train]\nepochs = 50\n", ignore_stop=1, ignore_sigterm=1)
    wait_for(lambda: progressed(rd, 1), what="step 1")
    trainer = rd.read_status()["trainer_pid"]
    t0 = time.monotonic()
    assert launch.stop_run(rd, force=True, timeout=10, kill_after=0.5) == "stopped"
    assert time.monotonic() - t0 < 10  # not the stop timeout (600 s): it was killed
    st = rd.read_status()
    assert st["signal"] == signal.SIGKILL and "stopped on request" in st["error"]
    assert not launch.is_same_process(trainer, st["trainer_start"])


def test_a_trainer_killed_by_sigkill_ends_failed_with_the_cause_within_seconds(runs):
    rd = runs.start("[train]\nepochs = 50\n")
    wait_for(lambda: progressed(rd, 1), what="step 1")
    os.killpg(rd.read_status()["trainer_pgid"], signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_state(rd, {"failed", "stopped", "finished"}, timeout=10) == "failed"
    assert time.monotonic() - t0 < 5  # "within a few seconds" (the supervisor polls every 0.2 s)
    st = rd.read_status()
    assert st["error"].startswith("killed by signal 9 (SIGKILL)")
    assert st["exit_code"] == -9


def test_a_crash_ends_failed_with_the_trainers_error_message(runs):
    rd = runs.start(crash_at=3)
    assert wait_state(rd, {"failed", "finished"}) == "failed"
    assert rd.read_status()["error"] == "exit code 1: fake crash at step 3"


def test_a_killed_supervisor_shows_lost_and_force_stop_then_resume_recovers(runs):
    rd = runs.start("[train]\nepochs = 50\n", step_s=0.05)
    wait_for(rd.latest_complete_checkpoint, what="a complete checkpoint")
    st = rd.read_status()
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    assert wait_state(rd, "lost", timeout=30) == "lost"
    assert launch.is_same_process(st["trainer_pid"], st["trainer_start"])  # still training, unsupervised
    with pytest.raises(launch.LaunchError, match="lost"):
        launch.resume_run(rd)
    direct = subprocess.run([sys.executable, "-m", "engine.supervisor", str(rd.path), "--resume"],
                            capture_output=True, text=True, timeout=20)
    assert direct.returncode == launch.EXIT_REFUSED  # never two trainers on one run dir
    assert "is still running without a supervisor" in direct.stderr

    assert launch.stop_run(rd, force=True, timeout=5, kill_after=2) == "stopped"
    assert not launch.is_same_process(st["trainer_pid"], st["trainer_start"])
    assert rd.read_status()["supervisor_lost"] is True

    resume_from = rd.latest_complete_checkpoint().step
    runs.fake(step_s=0.002)
    launch.resume_run(rd)
    assert wait_state(rd, {"finished", "failed"}, timeout=60) == "finished"
    st = rd.read_status()
    assert st["attempt"] == 2 and st["history"][0]["state"] == "stopped" and st["resumed"]
    steps = [e["step"] for e in events(rd, "progress")]
    assert steps[-1] == 200
    resumed_progress = [e["step"] for e in events(rd, "progress") if e["t"] >= st["started_t"]]
    assert resumed_progress[0] == resume_from + 1  # the same step count continues


def test_two_resumes_at_once_start_one_supervisor_and_refuse_the_other(runs):
    rd = runs.start("[train]\nepochs = 50\n", step_s=0.05)
    wait_for(rd.latest_complete_checkpoint, what="a complete checkpoint")
    assert launch.stop_run(rd, timeout=10) == "stopped"

    results: list[object] = []

    def resume() -> None:
        try:
            results.append(launch.start_supervisor(rd, resume=True))
        except launch.LaunchError as e:
            results.append(e)

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, launch.LaunchError)]
    pids = [r for r in results if isinstance(r, int)]
    assert len(errors) == 1 and len(pids) == 1, results
    assert "already has a live supervisor" in str(errors[0])
    assert rd.read_status()["supervisor_pid"] == pids[0]
    assert "refusing to start a second one" in rd.log_path.read_text()
    with pytest.raises(launch.LaunchError, match="stop it first"):
        launch.resume_run(rd)  # refused up front while alive
    launch.stop_run(rd, force=True, timeout=10, kill_after=1)


def test_sigterm_to_the_supervisor_stops_the_run_gracefully(runs):
    rd = runs.start("[train]\nepochs = 50\n")
    wait_for(lambda: progressed(rd, 1), what="step 1")
    os.kill(rd.read_status()["supervisor_pid"], signal.SIGTERM)
    assert wait_state(rd, {"stopped", "failed", "finished"}) == "stopped"
    assert events(rd, "stopped") and rd.read_status()["stop_reason"] == "supervisor got SIGTERM"


def test_a_stop_the_trainer_does_not_obey_is_escalated_by_the_supervisor_and_ends_failed(runs, monkeypatch):
    """Nobody waits at a terminal: the supervisor itself sends SIGTERM once launch.stop_timeout_s has passed,
    SIGKILL after its grace, and says so in status.json and train.log."""
    monkeypatch.setenv("TUNELAB_STOP_TIMEOUT_S", "1")
    monkeypatch.setenv("TUNELAB_STOP_KILL_GRACE_S", "1")
    rd = runs.start("[train]\nepochs = 50\n", ignore_stop=1, ignore_sigterm=1, save_every=1000)
    wait_for(lambda: progressed(rd, 2), what="step 2")
    trainer = rd.read_status()
    launch.stop_run(rd, timeout=0)  # ask, and walk away
    plan = launch.stop_deadline(rd)
    assert plan is not None and plan["timeout_s"] == pytest.approx(1) and plan["kill_after_s"] == 1
    assert wait_state(rd, {"stopped", "failed", "finished"}, timeout=30) == "failed"
    st = rd.read_status()
    assert [e["signal"] for e in st["stop_escalation"]] == ["SIGTERM", "SIGKILL"]
    assert st["exit_code"] == -signal.SIGKILL and st["stop_reason"] == "stop requested"
    assert st["error"].startswith("the trainer did not stop within 1 s of the stop request (launch.stop_timeout_s); "
                                  "the supervisor sent SIGTERM, then SIGKILL (killed by signal 9 (SIGKILL)); "
                                  "no complete checkpoint holds its last steps"), st["error"]
    assert st["error"].endswith("there is no complete checkpoint to resume from")
    assert not launch.is_same_process(trainer["trainer_pid"], trainer["trainer_start"])
    log = rd.log_path.read_text()
    assert "did not stop within 1 s of the stop request" in log and "sending SIGKILL" in log


def test_a_trainer_hung_after_its_stop_checkpoint_is_terminated_and_the_run_ends_stopped(runs, monkeypatch):
    monkeypatch.setenv("TUNELAB_STOP_EXIT_GRACE_S", "0.5")  # the stop timeout stays at its 600 s default
    rd = runs.start("[train]\nepochs = 50\n", hang_after_stop=1, save_every=1000)
    wait_for(lambda: progressed(rd, 2), what="step 2")
    assert launch.stop_run(rd, timeout=20) == "stopped"
    st = rd.read_status()
    (stopped,) = events(rd, "stopped")
    ck = rd.latest_complete_checkpoint()
    assert ck is not None and ck.step == stopped["step"]
    assert [e["signal"] for e in st["stop_escalation"]] == ["SIGTERM"] and st["exit_code"] == -signal.SIGTERM
    assert st["error"] == (f"the trainer wrote its `stopped` event but had not exited 0.5 s later; the supervisor "
                           f"sent SIGTERM (killed by signal 15 (SIGTERM)); its checkpoint "
                           f"checkpoints/{ck.path.name} is complete")
    assert st["stop_deadline_t"] - st["stop_requested_t"] == pytest.approx(600)


def test_tunelab_stop_says_when_the_supervisor_will_terminate_the_trainer_and_waits_for_the_outcome(
        runs, monkeypatch, capsys):
    from tui.cli import main as tunelab

    monkeypatch.setenv("TUNELAB_STOP_TIMEOUT_S", "3")
    monkeypatch.setenv("TUNELAB_STOP_KILL_GRACE_S", "1")
    rd = runs.start("[train]\nepochs = 50\n", ignore_stop=1, save_every=1000)
    wait_for(lambda: progressed(rd, 1), what="step 1")
    assert tunelab(["stop", str(rd.path), "--timeout", "0.2"]) == 1  # the user does not wait
    out = capsys.readouterr()
    assert "the supervisor sends it SIGTERM, and SIGKILL 1 s later" in out.out
    assert "(launch.stop_timeout_s = 3 s)" in out.out
    assert "still stopping after 0.2 s; the supervisor terminates it at " in out.err
    assert "`tunelab stop --force" in out.err
    assert tunelab(["stop", str(rd.path)]) == 0  # a second stop reports the same deadline, and waits
    out = capsys.readouterr()
    assert "the supervisor sends it SIGTERM" in out.out
    assert out.out.splitlines()[-1].startswith(f"{rd.run_id}: failed (the trainer did not stop within 3 s")
    assert rd.read_status()["stop_escalation"][0]["signal"] == "SIGTERM"


def test_the_budget_stops_the_run_with_a_checkpoint(runs):
    rd = runs.start("[train]\nepochs = 50\n[budget]\nmax_hours = 0.0002\n")  # 0.72 s
    assert wait_state(rd, {"stopped", "failed", "finished"}) == "stopped"
    assert rd.read_status()["stop_reason"] == "budget reached"
    assert events(rd, "stopped") and rd.latest_complete_checkpoint() is not None


def test_resume_is_refused_when_there_is_no_complete_checkpoint(runs):
    rd = runs.start(crash_at=1)
    assert wait_state(rd, {"failed", "finished"}) == "failed"
    with pytest.raises(launch.LaunchError, match="no complete checkpoint"):
        launch.resume_run(rd)


def test_a_pid_whose_start_time_does_not_match_is_never_signalled(runs, tmp_path):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        start = launch.proc_start_time(victim.pid)
        assert launch.is_same_process(victim.pid, start)
        assert not launch.is_same_process(victim.pid, start + 1)
        assert not launch.is_same_process(victim.pid, start, {"host": "elsewhere.example"})
        assert not launch.is_same_process(victim.pid, start, {"boot_id": "another-boot"})

        rd = launch.create_run(make_project(tmp_path), "x")
        # A lost run whose recorded trainer pid now belongs to an unrelated process (pid reuse).
        rd.write_status({"state": "running", "trainer_pid": victim.pid, "trainer_pgid": victim.pid,
                         "trainer_start": start + 1, "host": launch.hostname(), "boot_id": launch.boot_id(),
                         "started_t": time.time()})
        assert rd.state() == "lost"
        assert launch.stop_run(rd, force=True, timeout=2, kill_after=0.2) == "stopped"
        time.sleep(0.3)
        assert victim.poll() is None, "a recycled pid was signalled"
    finally:
        victim.kill()
        victim.wait()


def test_create_run_refuses_an_invalid_config_and_creates_nothing(tmp_path):
    project = make_project(tmp_path, "[train]\nlearning_rate = -1\nepochz = 3\n")
    with pytest.raises(ConfigError) as e:
        launch.create_run(project, "x")
    text = str(e.value)
    assert "x.toml:2: train.learning_rate = -1: must be > 0" in text and "epochz" in text
    with pytest.raises(launch.LaunchError, match="not found"):
        launch.create_run(project, "missing")
    (project / "configs" / "x.toml").write_text('[model]\nbase = "tiny"\n')
    (project / "project.toml").write_text("nmae = 3\n")
    with pytest.raises(ConfigError, match=r"project.toml:1: nmae: unknown key; did you mean 'name'"):
        launch.create_run(project, "x")
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())


def test_config_may_be_named_with_or_without_toml_or_given_as_a_path(tmp_path):
    project = make_project(tmp_path)
    assert launch.resolve_config_path(project, "x") == project / "configs" / "x.toml"
    assert launch.resolve_config_path(project, "x.toml") == project / "configs" / "x.toml"
    other = tmp_path / "elsewhere.toml"
    other.write_text("")
    assert launch.resolve_config_path(project, str(other)) == other


def _cfg(**launch_fields):
    fields = dict(num_processes=1, num_machines=1, machine_rank=0, main_process_ip="", main_process_port=29500,
                  accelerate_config="", gpu_ids="")
    fields.update(launch_fields)
    return SimpleNamespace(launch=SimpleNamespace(**fields), train=SimpleNamespace(mixed_precision="bf16"))


def test_launch_options_pass_through_to_accelerate(monkeypatch):
    monkeypatch.delenv("TUNELAB_NO_ACCELERATE", raising=False)
    monkeypatch.delenv("TUNELAB_TRAINER_MODULE", raising=False)
    rd = RunDir("/r/runs/20260101-000000-x")
    cmd = launch.trainer_command(rd, _cfg(), resume=True)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[-4:] == ["-m", "engine.train", "/r/runs/20260101-000000-x", "--resume"]
    assert "--multi_gpu" not in cmd and cmd[cmd.index("--mixed_precision") + 1] == "bf16"

    multi = launch.launch_args(_cfg(num_processes=8, num_machines=2, machine_rank=1,
                                    main_process_ip="10.0.0.1", main_process_port=1234).launch)
    joined = " ".join(multi)
    for part in ("--multi_gpu", "--num_processes 8", "--num_machines 2", "--machine_rank 1",
                 "--main_process_ip 10.0.0.1", "--main_process_port 1234"):
        assert part in joined

    ds = launch.launch_args(_cfg(num_processes=4, accelerate_config="ds.yaml").launch)
    assert ds[:2] == ["--config_file", "ds.yaml"] and "--multi_gpu" not in ds  # the file decides
    assert ds[ds.index("--num_processes") + 1] == "4"
    # What the run config leaves at its defaults is the file's to say: no --num_processes 1 over its 8.
    plain = launch.launch_args(_cfg(accelerate_config="fsdp.yaml").launch)
    assert plain == ["--config_file", "fsdp.yaml", "--mixed_precision", "no", "--dynamo_backend", "no"]
    # A relative config file is the project's, whatever the caller's working directory.
    cmd = launch.trainer_command(rd, _cfg(accelerate_config="ds.yaml"))
    assert cmd[cmd.index("--config_file") + 1] == "/r/ds.yaml"

    monkeypatch.setenv("TUNELAB_TRAINER_MODULE", "tests.fake_trainer")
    monkeypatch.setenv("TUNELAB_NO_ACCELERATE", "1")
    assert launch.trainer_command(rd, _cfg()) == [sys.executable, "-m", "tests.fake_trainer", str(rd.path)]


def test_several_processes_without_a_gpu_run_accelerate_on_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    env = launch.trainer_env(RunDir("/r/runs/x"), _cfg(num_processes=2))
    assert env["ACCELERATE_USE_CPU"] == "true"
    assert env["PYTHONUNBUFFERED"] == "1" and env["TUNELAB_RUN_DIR"] == "/r/runs/x"
    assert "ACCELERATE_USE_CPU" not in launch.trainer_env(RunDir("/r/runs/x"), _cfg(num_processes=1))
