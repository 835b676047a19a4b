"""On an NVIDIA GPU: the trainer's CUDA path (mixed precision, device-resident caches, exports) on the
tiny model. Skipped without CUDA, so CI (which has none) skips them cleanly; a session lent a GPU runs
them with `pytest -m gpu`."""
from __future__ import annotations

import math

import pytest

from tests.train_fixtures import events, make_project, make_run, tiny_config

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)"),
]


@pytest.mark.parametrize("method,precision", [("lora", "bf16"), ("lora", "fp16"), ("full", "bf16")])
def test_a_cuda_run_trains_in_mixed_precision_and_exports(tmp_path, method, precision):
    from engine.train.loop import train

    project = make_project(tmp_path, n=4)
    cfg = tiny_config(method, **{"train.epochs": 2, "train.mixed_precision": precision})
    run = make_run(project, cfg)
    assert train(run.path) == 0
    start = events(run, "start")[0]
    assert start["device"].startswith("cuda")
    losses = [e["loss"] for e in events(run, "progress")]
    assert losses and all(math.isfinite(x) for x in losses)
    checkpoints = [e["path"] for e in events(run, "checkpoint")]
    assert checkpoints and (run.path / checkpoints[-1] / "COMPLETE").exists()
    assert events(run, "sample"), "no samples were rendered on the GPU"


def test_auto_precision_picks_a_half_type_on_the_gpu(tmp_path):
    from engine.train.loop import train

    project = make_project(tmp_path, n=2)
    run = make_run(project, tiny_config("lora", **{"train.epochs": 1}))  # mixed_precision: the default, auto
    assert train(run.path) == 0
    assert events(run, "start")[0]["mixed_precision"] in ("bf16", "fp16")
