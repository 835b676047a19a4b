"""`tunelab run / status / stop / resume` as a user types them, with real processes; and runs through
real `accelerate launch` (two CPU processes)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from engine import launch
from engine.rundir import RunDir
from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project, wait_for, wait_state

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cli(tmp_path):
    """Runs `tunelab …` in tmp_path (which holds projects/p) with the fake trainer."""
    make_project(tmp_path / "projects")
    created: list[RunDir] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELAB_", "ACCELERATE_"))}

    def environment(accelerate: bool, fake: dict[str, object]) -> dict[str, str]:
        env = {**base_env, **FAST_ENV, **{f"TUNELAB_FAKE_{k.upper()}": str(v) for k, v in fake.items()}}
        if accelerate:
            del env["TUNELAB_NO_ACCELERATE"]
        return env

    def tunelab(*args: str, timeout: float = 30, accelerate: bool = False,
                **fake: object) -> subprocess.CompletedProcess:
        """`tunelab ARGS`; keyword arguments set TUNELAB_FAKE_<NAME>; accelerate=True launches for real."""
        proc = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=tmp_path,
                              env=environment(accelerate, fake), capture_output=True, text=True, timeout=timeout)
        if args[0] == "run" and proc.stdout.strip():
            created.append(RunDir(tmp_path / proc.stdout.splitlines()[0].strip()))
        return proc

    def spawn(*args: str, **fake: object) -> subprocess.Popen:
        """`tunelab ARGS` in the background (stdout/stderr piped, text)."""
        return subprocess.Popen([sys.executable, "-m", "tui.cli", *args], cwd=tmp_path,
                                env=environment(False, fake), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    tunelab.spawn = spawn
    tunelab.created = created
    tunelab.root = tmp_path
    tunelab.config = lambda text: (tmp_path / "projects" / "p" / "configs" / "x.toml").write_text(
        text if "[model]" in text else text + '\n[model]\nbase = "tiny"\n')
    yield tunelab
    for rd in created:
        kill_run_processes(rd)


def test_run_prints_the_run_dir_and_returns_while_the_run_goes_on(cli):
    proc = cli("run", "p", "x", step_s=0.5)
    assert proc.returncode == 0, proc.stderr
    rd = cli.created[0]
    assert re.fullmatch(r"projects/p/runs/\d{8}-\d{6}-x", proc.stdout.strip())
    assert rd.state() in ("starting", "running")  # the command returned; the run did not end with it
    assert wait_state(rd, {"finished", "failed"}) == "finished"


def test_run_wait_follows_events_and_exits_0_when_finished_1_when_failed(cli):
    ok = cli("run", "p", "x", "--wait")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("projects/p/runs/")
    assert "step 8/8  epoch 2/2  loss " in ok.stdout and "checkpoint e0002-s00000008" in ok.stdout
    assert lines[-1].startswith("run finished after ")

    bad = cli("run", "p", "x", "--wait", crash_at=2)
    assert bad.returncode == 1
    assert "error: fake crash at step 2" in bad.stdout
    assert "run failed after" in bad.stderr and "fake crash at step 2" in bad.stderr


def test_run_with_an_invalid_config_exits_2_names_the_key_and_creates_nothing(cli):
    proc = cli("run", "p", "x", "--set", "train.learning_rate=-1", "--set", "train.epochz=3")
    assert proc.returncode == 2
    assert "train.learning_rate = -1: must be > 0" in proc.stderr and "epochz" in proc.stderr
    assert cli("run", "p", "nope").returncode == 2
    assert cli("run", "nosuchproject", "x").returncode == 2
    runs = cli.root / "projects" / "p" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_run_refuses_a_base_model_that_is_missing_or_not_a_model_before_launching(cli):
    (cli.root / "notamodel").mkdir()
    (cli.root / "notes.txt").write_text("hello")
    for base, why in ((cli.root / "missing", "does not exist"),
                      (cli.root / "notamodel", "is a folder without model_index.json"),
                      (cli.root / "notes.txt", "is not a model file")):
        proc = cli("run", "p", "x", "--set", f"model.base={base}")
        assert proc.returncode == 2, proc.stderr
        assert f"projects/p/configs/x.toml (--set): model.base = '{base}': {base} {why}" in proc.stderr
        assert "accepted: a diffusers folder (has model_index.json), a single-file .safetensors" in proc.stderr
    cli.config('# a base that is not here\n[model]\nbase = "models/sd15"\n')
    proc = cli("run", "p", "x")
    assert proc.returncode == 2
    assert "projects/p/configs/x.toml:3: model.base = 'models/sd15':" in proc.stderr
    assert ": projects/p/models/sd15 does not exist" in proc.stderr  # relative paths are the project's
    cli.config("[launch]\nnum_processes = 2\n")
    proc = cli("run", "p", "x", "--set", "launch.accelerate_config=ds.yaml")
    assert proc.returncode == 2
    ds = cli.root / "ds.yaml"  # typed with --set: the current folder's (a config file's: the project's)
    assert f"launch.accelerate_config = '{ds}': {ds} is not a file" in proc.stderr
    runs = cli.root / "projects" / "p" / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert not cli.created


def test_run_wait_exits_3_when_the_run_is_stopped_and_130_on_ctrl_c_while_the_run_goes_on(cli):
    cli.config("[train]\nepochs = 50\n")
    waiting = cli.spawn("run", "p", "x", "--wait", step_s=0.05)
    rd = RunDir(cli.root / waiting.stdout.readline().strip())
    cli.created.append(rd)
    wait_for(rd.latest_complete_checkpoint, what="a checkpoint")
    assert cli("stop", rd.run_id).returncode == 0
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 3, err
    assert "stopped at step" in out and "run stopped after" in err

    waiting = cli.spawn("run", "p", "x", "--wait", step_s=0.05)
    rd = RunDir(cli.root / waiting.stdout.readline().strip())
    cli.created.append(rd)
    wait_state(rd, "running")
    waiting.send_signal(signal.SIGINT)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130
    assert f"still running in the background; stop it with `tunelab stop projects/p/runs/{rd.run_id}`" in err
    assert rd.state() == "running"  # Ctrl-C stopped the waiting, not the run
    assert cli("stop", rd.run_id).returncode == 0


def test_status_json_reports_progress_elapsed_time_and_cost(cli):
    cli.config("[train]\nepochs = 2\n[budget]\ngpu_hourly_cost = 3600\ncurrency = \"€\"\n")  # 1 €/s
    assert cli("run", "p", "x", "--wait").returncode == 0
    proc = cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["state"] == "finished" and run["project"] == "p" and run["config_name"] == "x"
    assert (run["step"], run["total_steps"], run["epoch"], run["epochs"]) == (8, 8, 2, 2)
    assert isinstance(run["loss"], float) and run["img_s"] > 0 and run["eta_s"] is None
    assert 0 < run["elapsed_s"] < 20 and run["cost"] == pytest.approx(run["elapsed_s"], abs=0.01)
    assert run["checkpoints"] == 2 and run["last_checkpoint"] == "e0002-s00000008"

    table = cli("status", "p").stdout.splitlines()
    assert table[0].split() == ["RUN", "STATE", "EPOCH", "STEP", "LOSS", "IMG/S", "ETA", "ELAPSED", "COST"]
    assert table[1].split()[1:4] == ["finished", "2/2", "8/8"] and "€" in table[1]


def test_status_shows_a_run_whose_supervisor_is_gone_as_lost(cli):
    cli.config("[train]\nepochs = 50\n")
    cli("run", "p", "x")
    rd = cli.created[0]
    wait_state(rd, "running")
    st = rd.read_status()
    os.kill(st["supervisor_pid"], 9)
    wait_state(rd, "lost", timeout=5)
    out = cli("status", rd.run_id).stdout
    assert out.splitlines()[1].split()[1] == "lost" and "tunelab stop --force" in out
    assert cli("stop", "--force", "--kill-after", "1", rd.run_id).returncode == 0
    assert json.loads(cli("status", "--json", str(rd.path)).stdout)["runs"][0]["state"] == "stopped"


def test_stop_and_resume_by_run_id_continue_the_same_run(cli):
    cli.config("[train]\nepochs = 20\n")
    cli("run", "p", "x", step_s=0.05)
    rd = cli.created[0]
    wait_for(rd.latest_complete_checkpoint, what="a checkpoint")
    stop = cli("stop", rd.run_id)
    assert stop.returncode == 0 and stop.stdout.strip().endswith(f"{rd.run_id}: stopped"), stop.stderr
    assert cli("stop", rd.run_id).stdout.strip() == f"{rd.run_id}: already stopped"

    resumed = cli("resume", rd.run_id[:17], "--wait", step_s=0.001)  # a unique prefix is enough
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert "resuming from e00" in lines[0] and lines[1].startswith("resumed from e00")
    assert "step 1/" not in resumed.stdout  # only this attempt's events are followed
    assert lines[-1].startswith("run finished") and rd.read_status()["attempt"] == 2
    again = cli("resume", rd.run_id)
    assert again.returncode == 1 and "already finished" in again.stderr
    assert cli("stop", "20990101-000000-nope").returncode == 2


# --- through real `accelerate launch` (slower: ~4 s per launch) --------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_through_accelerate_launch_finish(cli):
    cli.config(f"[train]\nepochs = 2\n[launch]\nnum_processes = 2\nmain_process_port = {_free_port()}\n")
    proc = cli("run", "p", "x", "--wait", timeout=60, accelerate=True)
    assert proc.returncode == 0, proc.stderr
    log = cli.created[0].log_path.read_text()
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in log
    assert "fake trainer rank 0" in log and "fake trainer rank 1" in log and "world 2" in log


@pytest.mark.slow
def test_force_stop_through_accelerate_leaves_no_worker_behind(cli):
    cli.config(f"[train]\nepochs = 100\n[launch]\nnum_processes = 2\nmain_process_port = {_free_port()}\n")
    cli("run", "p", "x", accelerate=True, ignore_stop=1, ignore_sigterm=1, step_s=0.1)
    rd = cli.created[0]
    log_pids = lambda: [int(p) for p in re.findall(r"fake trainer rank \d pid (\d+)", rd.log_path.read_text())]
    workers = wait_for(lambda: len(log_pids()) == 2 and log_pids(), timeout=30, what="both workers")
    starts = {pid: launch.proc_start_time(pid) for pid in workers}
    # Workers run in sessions of their own (torchrun), so a killpg of the launcher alone would miss them.
    assert all(os.getsid(pid) == pid for pid in workers)
    stop = cli("stop", "--force", "--kill-after", "1", rd.run_id)
    assert stop.returncode == 0, stop.stderr
    assert rd.read_status()["state"] == "stopped"
    assert not any(launch.is_same_process(pid, starts[pid]) for pid in workers)


def test_run_wait_prints_one_line_per_sample_column_not_one_per_image():
    from tui.commands.run import describe_event

    assert describe_event({"kind": "sample", "path": "samples/e0001-s00000006/p00-s0001.png"}) is None
    line = describe_event({"kind": "sample_done", "column": "e0001-s00000006", "images": 30, "seconds": 2.9})
    assert line == "samples e0001-s00000006: 30 image(s) in 3s"


@pytest.mark.slow
def test_sigterm_to_the_trainers_process_group_ends_stopped_with_its_checkpoint(cli):
    """`kill -TERM -PGID` (a scheduler, a user) kills `accelerate launch` at once while the trainer is
    still saving: the supervisor waits for the trainer instead of killing it as a leftover."""
    cli.config("[train]\nepochs = 100\n")
    cli("run", "p", "x", accelerate=True, ignore_sigterm=1, save_s=3, save_every=1000, step_s=0.05)
    rd = cli.created[0]
    wait_for(lambda: any(e["kind"] == "progress" for e in rd.iter_events()), timeout=30, what="a step")
    os.killpg(rd.read_status()["trainer_pgid"], signal.SIGTERM)
    assert wait_state(rd, {"stopped", "failed", "finished"}, timeout=40) == "stopped"
    status = rd.read_status()
    assert status["stop_reason"].startswith("launcher killed by signal 15")
    stopped = [e for e in rd.iter_events() if e["kind"] == "stopped"]
    assert stopped and rd.latest_complete_checkpoint().step == stopped[0]["step"]


def test_a_run_keeps_the_goal_prompts_it_was_launched_with_when_the_goals_are_edited(tmp_path):
    """The contact sheet compares the same prompts at every checkpoint: a config without sample.prompts
    samples the project's goals, and the run freezes them, so editing project.toml between attempts
    (stop, resume) cannot shift which prompt a row shows. Seeds stay the section's, so
    `resume --set sample.seeds=…` still reaches every prompt."""
    from engine.config import load_run_config, sample_prompts

    project = make_project(tmp_path, config="[train]\nepochs = 2\n[sample]\nseeds = [7]\n")
    (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a red circle"]\n'
                                          'preservation = ["a blue square"]\n')
    run = launch.create_run(project, "x")
    text = run.config_path.read_text()
    assert "the project's goals at launch" in text
    (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a green triangle", "a red circle"]\n')
    cfg = load_run_config(run.config_path)
    prompts = sample_prompts(cfg, {"accuracy": ["a green triangle", "a red circle"]})
    assert [(p.text, p.kind, p.seeds) for p in prompts] == [("a red circle", "accuracy", [7]),
                                                            ("a blue square", "preservation", [7])]
    assert all(p.seeds == [] for p in cfg.sample.prompts)  # frozen: text and kind only
    # A config that names its own prompts is frozen as written, with no note.
    (project / "configs" / "own.toml").write_text('[model]\nbase = "tiny"\n[sample]\nprompts = ["a cat"]\n')
    own = launch.create_run(project, "own")
    assert "goals at launch" not in own.config_path.read_text()
    assert launch.goals_changed_since_launch(own) == [] and launch.goals_changed_since_launch(run) == ["a green triangle"]
    assert [p.text for p in load_run_config(own.config_path).sample.prompts] == ["a cat"]


def test_resume_says_when_the_goals_changed_since_launch_and_what_the_run_does_not_sample(cli):
    project = cli.root / "projects" / "p"
    (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a red circle"]\n')
    cli.config("[train]\nepochs = 20\n")
    cli("run", "p", "x", step_s=0.05)
    rd = cli.created[0]
    wait_for(rd.latest_complete_checkpoint, what="a checkpoint")
    assert cli("stop", rd.run_id).returncode == 0
    assert launch.goals_changed_since_launch(rd) == []
    (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a red circle", "a green cone"]\n')
    assert launch.goals_changed_since_launch(rd) == ["a green cone"]
    resumed = cli("resume", rd.run_id, step_s=0.05)
    assert resumed.returncode == 0, resumed.stderr
    assert "goals changed since launch" in resumed.stdout and "'a green cone'" in resumed.stdout
    assert "'a red circle'" not in resumed.stdout.split("Not sampled:")[1]
