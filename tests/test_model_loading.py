"""model.base: every accepted form loads the same weights; every bad one is refused by name, offline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.basemodel import check_base, describe_base

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    hub = tmp_path / "hf-hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


def _fake_hub_snapshot(hub: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder` out the way huggingface_hub caches a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


@pytest.fixture(scope="module")
def single_file(tiny_base, tmp_path_factory) -> Path:
    import torch
    from engine.train.models import load_components, save_single_file

    c = load_components(str(tiny_base), tiny_base, dtype=torch.float32)
    return save_single_file(c.unet, c.vae, c.text_encoder, tmp_path_factory.mktemp("single") / "tiny.safetensors")


def _unet_state(spec: str, project: Path, **kw):
    import torch
    from engine.train.models import load_components

    return load_components(spec, project, dtype=torch.float32, **kw).unet.state_dict()


def _same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_accepted_form_loads_the_same_unet(tiny_base, single_file, tmp_path, empty_hf_cache):
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copytree(tiny_base, project / "base")
    _fake_hub_snapshot(empty_hf_cache, "acme/tiny-sd", tiny_base)

    reference = _unet_state(str(tiny_base), project)
    assert _same(_unet_state("base", project), reference)  # relative to the project folder
    assert _same(_unet_state("tiny", project), reference)
    assert _same(_unet_state("tiny:0", project), reference)
    assert _same(_unet_state("acme/tiny-sd", project), reference)
    assert _same(_unet_state(str(single_file), project, config="base"), reference)
    assert _same(_unet_state(str(single_file), project, config="acme/tiny-sd"), reference)


def test_components_carry_the_base_schedule_and_its_prediction_type(tiny_base):
    import torch
    from engine.train.models import load_components

    c = load_components("tiny", tiny_base, dtype=torch.float32)
    assert type(c.noise_scheduler).__name__ == "DDPMScheduler"
    assert c.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert c.noise_scheduler.config.num_train_timesteps == 1000
    assert c.prediction_type == "epsilon" == c.noise_scheduler.config.prediction_type
    assert not any(p.requires_grad for p in c.unet.parameters())  # the method decides what trains
    assert c.config_dir == tiny_base

    v = load_components("tiny", tiny_base, dtype=torch.float32, prediction_type="v_prediction")
    assert v.prediction_type == "v_prediction" == v.noise_scheduler.config.prediction_type
    assert load_components("tiny", tiny_base, dtype=torch.float32, prediction_type="auto").prediction_type == "epsilon"


def test_components_load_in_the_asked_dtype(tiny_base):
    import torch
    from engine.train.models import load_components

    c = load_components("tiny", tiny_base, dtype=torch.bfloat16)
    assert {p.dtype for m in (c.unet, c.vae, c.text_encoder) for p in m.parameters()} == {torch.bfloat16}


def test_good_forms_pass_the_light_check(tiny_base, single_file, tmp_path, empty_hf_cache):
    _fake_hub_snapshot(empty_hf_cache, "acme/tiny-sd", tiny_base)
    assert check_base("tiny", tmp_path) == []
    assert check_base("tiny:7", tmp_path) == []
    assert check_base(str(tiny_base), tmp_path) == []
    assert check_base("acme/tiny-sd", tmp_path) == []
    assert check_base(str(single_file), tmp_path, str(tiny_base)) == []
    assert describe_base(str(tiny_base), tmp_path).startswith("diffusers folder")
    assert describe_base("acme/tiny-sd", tmp_path).startswith("hub id acme/tiny-sd")
    assert describe_base(str(single_file), tmp_path).startswith("single-file checkpoint")


@pytest.mark.parametrize(
    "setup, spec, says",
    [
        (None, "models/missing", ["models/missing", "does not exist"]),
        ("empty-dir", "notamodel", ["notamodel", "model_index.json"]),
        ("ckpt", "old.ckpt", ["old.ckpt", "pickle", ".safetensors"]),
        ("text", "weights.safetensors", ["weights.safetensors", "not a .safetensors file"]),
        (None, "someone/uncached-model", ["someone/uncached-model", "never downloads", "huggingface-cli download"]),
        (None, "", ["empty"]),
    ],
)
def test_bad_specs_are_refused_naming_the_spec_and_the_accepted_forms(tmp_path, empty_hf_cache, setup, spec, says):
    if setup == "empty-dir":
        (tmp_path / spec).mkdir()
    elif setup == "ckpt":
        (tmp_path / spec).write_bytes(b"PK\x03\x04 pretend pickle")
    elif setup == "text":
        (tmp_path / spec).write_text("hello")
    problems = check_base(spec, tmp_path)
    assert len(problems) == 1
    for fragment in says:
        assert fragment in problems[0]
    assert "accepted:" in problems[0] or spec == "someone/uncached-model"
    if setup != "text":  # describe_base names the form; only check_base reads the file
        assert "unusable" in describe_base(spec, tmp_path)


def test_a_bad_spec_is_refused_by_the_loader_too(tmp_path, empty_hf_cache):
    from engine.train.models import BaseModelError, load_components

    with pytest.raises(BaseModelError, match="does not exist.*accepted"):
        load_components("nowhere", tmp_path)
    with pytest.raises(BaseModelError, match="model.prediction_type"):
        load_components("tiny", tmp_path, prediction_type="sample")


def test_a_single_file_without_its_configs_asks_for_model_config(single_file, tmp_path, empty_hf_cache):
    from engine.train.models import BaseModelError, load_components

    with pytest.raises(BaseModelError) as err:
        load_components(str(single_file), tmp_path)
    assert str(single_file) in str(err.value) and "model.config" in str(err.value)


def test_a_model_config_that_is_not_a_diffusers_folder_is_refused(single_file, tmp_path, empty_hf_cache):
    problems = check_base(str(single_file), tmp_path, "no/such-config")
    assert len(problems) == 1 and problems[0].startswith("model.config = 'no/such-config'")


def test_checking_a_base_imports_neither_torch_nor_diffusers(tmp_path):
    code = (
        "import sys\n"
        "from engine.basemodel import check_base, describe_base\n"
        f"check_base('tiny', {str(tmp_path)!r}); check_base('acme/x', {str(tmp_path)!r});"
        f" check_base('missing', {str(tmp_path)!r}); describe_base('tiny', {str(tmp_path)!r})\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_run_on_a_single_file_whose_configs_are_not_cached_names_them_and_stays_offline(
        single_file, tmp_path, empty_hf_cache, monkeypatch):
    """diffusers' single-file loader fetches missing configs from the hub even with local_files_only; the
    trainer runs offline, and the error says which configs are missing and what to do (was: 'Got:
    ConnectError: [Errno -2] Name or service not known')."""
    from engine import launch
    from tests.train_fixtures import events, make_project, make_run, tiny_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = tiny_config()
    cfg.model.base = str(single_file)
    run = make_run(make_project(tmp_path / "p"), cfg)
    env = launch.trainer_env(run, cfg)
    assert env["HF_HUB_OFFLINE"] == "1"
    proc = subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], cwd=run.path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (error,) = events(run, "error")
    message = error["message"]
    assert str(single_file) in message and "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "model.config" in message and "never downloads" in message and "ConnectError" not in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a user's own choice is kept
    assert launch.trainer_env(run, cfg)["HF_HUB_OFFLINE"] == "0"
