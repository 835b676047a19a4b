"""The GPU benchmark harness (bench/train_step.py --gpu, bench/gpu_session.sh) on a machine without a
GPU: its code path on miniature models (`--gpu-smoke`), its time budget, and its result file. A lent GPU
machine gets one call of a few minutes, so a harness that crashes, overruns or loses its numbers there
costs the only GPU time a session may get."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "train_step.py"


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def test_gpu_mode_without_cuda_says_so_and_exits_2():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run("--gpu")
    assert proc.returncode == 2
    assert "skipped: no CUDA device" in proc.stderr


@pytest.mark.slow
def test_a_budget_cut_run_keeps_its_numbers_and_a_second_call_completes_it(tmp_path):
    """A lent GPU machine gives a few minutes a call: the first call stops starting cases at its budget
    (the headline cases first, the skipped ones named), and `--continue` measures only what is missing,
    so two calls make one complete result: step cases tuned and naive with their ratio, the real trainer
    on an SD-shaped diffusers folder, sampling, one technique at a time, and a default-settings run's
    sampling share read from its own events."""
    first = tmp_path / "first.json"
    proc = _run("--gpu-smoke", "--budget-s", "4", "--out", str(first))
    assert proc.returncode == 0, proc.stderr[-2000:]
    cut = json.loads(first.read_text())
    skipped = cut["skipped_for_time"]
    assert "sampling share" in skipped, skipped
    head = cut["cases"][0]
    assert (head["method"], head["variant"]) == ("lora", "tuned") and head["img_s"] > 0
    assert head["label"] not in skipped and not (tmp_path / "first.json.tmp").exists()
    report = _run("--report", str(first))
    assert report.returncode == 0
    assert "| lora | tuned |" in report.stdout and "skipped for time:" in report.stdout

    full = tmp_path / "full.json"
    proc = _run("--gpu-smoke", "--continue", str(first), "--out", str(full))
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(full.read_text())
    assert "skipped_for_time" not in r and len(r["continued"]) == 1
    labels = [c["label"] for key in ("cases", "trainer", "sampling", "techniques", "sampling_share") for c in r[key]]
    assert len(labels) == len(set(labels)), "a case was measured twice"
    assert r["cases"][0] == head, "the first call's numbers were not kept as measured"
    assert {(c["method"], c["variant"]) for c in r["cases"]} == {(m, v) for m in ("lora", "full")
                                                                 for v in ("tuned", "naive")}
    assert all(c["img_s"] > 0 for c in r["cases"])
    assert {s["method"] for s in r["speedup_tuned_over_naive"]} == {"lora", "full"}
    assert sorted(c["method"] for c in r["trainer"]) == ["full", "lora"]
    assert all(c["img_s_median"] > 0 for c in r["trainer"])
    assert r["sampling"][0]["seconds_per_image"] > 0
    names = [c["name"] for c in r["techniques"] if c["method"] == "lora"]
    assert names[0].startswith("naive") and "without SDPA" in names[-1] and len(names) == 7
    assert all(c["attention"] == ["AttnProcessor"] for c in r["techniques"] if "without SDPA" in c["name"])
    share = r["sampling_share"][0]
    # 2 columns (start and end) x 3 goals x 1 seed, the defaults, as the run's events recorded them.
    assert share["sample_images"] == 6 and 0 < share["share"] < 1 and not share["estimated"]


@pytest.mark.slow
def test_the_gpu_session_script_records_the_machine_and_leaves_its_files_in_out(tmp_path):
    """bench/gpu_session.sh is the one command a lent GPU machine runs: without a GPU (SMOKE=1) it still
    installs nothing it was not given, checks every import first, runs the GPU tests (skipped here), and
    leaves its log, the environment and the benchmark's JSON in $OUT within its budget."""
    import shutil

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), SMOKE="1", BUDGET_S="45", PYTHON=sys.executable,
               WHEELS=str(tmp_path / "no-wheels"))
    proc = subprocess.run([bash, str(REPO / "bench" / "gpu_session.sh")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "gpu-tests.log", "session.log", "train_step-gpu.json"]
    env_txt = (out / "env.txt").read_text()
    assert "diffusers=" in env_txt and "torch=" in env_txt and "cuda " in env_txt
    assert "skipped" in (out / "gpu-tests.log").read_text()
    r = json.loads((out / "train_step-gpu.json").read_text())
    assert r["cases"] and r["budget_s"] <= 45
    log = (out / "session.log").read_text()
    assert "no wheels in" in log and "GPU tests: exit 0" in log and "benchmark: exit 0" in log
