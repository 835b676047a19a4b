"""Textual inversion on the tiny model: only the placeholder's vectors train, resume restores them
exactly, and both embedding files load in diffusers and draw what the run's samples show."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from engine.train.data import Example, ExampleSet
from engine.train.loop import train
from engine.train.methods import textual_inversion as ti
from engine.train.tiny import build_tokenizer
from tests.test_methods_support import base_pipeline, differs, one_prompt, render, sample_image
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def ti_config(**changes):
    cfg = tiny_config(**{"method": "textual_inversion", "textual_inversion.num_vectors": 2,
                         "textual_inversion.initializer_token": "circle", "train.learning_rate": 5e-2, **changes})
    return one_prompt(cfg, "a <concept> on a plain background")


class Recorder:
    def __init__(self):
        self.messages = []

    def warning(self, message, **fields):
        self.messages.append(message)


def test_placeholder_captions_are_expanded_to_every_vector_and_added_where_missing():
    tokens = ti.PlaceholderTokens(ti_config(**{"textual_inversion.num_vectors": 3}), build_tokenizer())
    ex = ExampleSet(train=[Example(path=None, rel="a.png", caption="a <concept> dog", concept="c"),
                           Example(path=None, rel="b.png", caption="a dog", concept="c"),
                           Example(path=None, rel="c.png", caption="", concept="c")],
                    validation=[Example(path=None, rel="v.png", caption="<concept>", concept="c")], skipped=[])
    rec = Recorder()
    tokens.prepare_examples(ex, rec)
    full = "<concept> <concept>_1 <concept>_2"
    assert [e.caption for e in ex.train] == [f"a {full} dog", f"{full}, a dog", full]
    assert ex.validation[0].caption == full
    # Only the caption that says something else is warned about; no caption is normal for TI.
    assert len(rec.messages) == 1 and "1 of 3 training image(s) have a caption" in rec.messages[0]
    assert "'<concept>, a dog'" in rec.messages[0]


def test_sample_prompts_that_never_say_the_placeholder_are_warned_about(tmp_path):
    project = make_project(tmp_path, n=1)  # goals: "a red circle", "a blue square"
    cfg = ti_config()
    tokens = ti.PlaceholderTokens(cfg, build_tokenizer())
    rec = Recorder()
    tokens.check_sample_prompts(cfg, project, rec)
    assert rec.messages == []
    cfg.sample.prompts = []
    tokens.check_sample_prompts(cfg, project, rec)
    assert len(rec.messages) == 1 and "no sample prompt contains" in rec.messages[0]


def test_a_placeholder_with_capitals_is_a_config_error_naming_the_lower_case_form():
    from engine.config import parse_run_config
    from engine.schema import ConfigError

    with pytest.raises(ConfigError, match="must be lower case, e.g. '<mycat>'"):
        parse_run_config('method = "textual_inversion"\n[textual_inversion]\nplaceholder_token = "<MyCat>"\n')


@pytest.mark.parametrize("key,value,needle", [("textual_inversion.placeholder_token", "circle", "already a token"),
                                              ("textual_inversion.initializer_token", "xqzv", "single token")])
def test_a_bad_placeholder_or_initializer_names_the_setting(key, value, needle):
    with pytest.raises(ValueError, match=needle) as e:
        ti.PlaceholderTokens(ti_config(**{key: value}), build_tokenizer())
    assert key in str(e.value)


def test_the_placeholder_layer_swaps_in_the_vectors_and_passes_gradients_only_to_them():
    base = torch.nn.Embedding(10, 4)
    layer = ti.PlaceholderEmbedding(base, [8, 9], torch.ones(2, 4))
    ids = torch.tensor([[1, 8, 9, 2]])
    out = layer(ids)
    assert torch.equal(out[0, 1], torch.ones(4)) and torch.equal(out[0, 0], base.weight[1].detach())
    out.sum().backward()
    assert not layer.weight.requires_grad and layer.vectors.grad is not None
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["vectors"]


@pytest.mark.slow
def test_textual_inversion_trains_the_embedding_resumes_it_exactly_and_exports_load_in_diffusers(tmp_path,
                                                                                               monkeypatch):
    cfg = ti_config()
    cfg.save.every_n_steps = 1
    run = make_run(make_project(tmp_path, n=2), cfg)  # 1 step per epoch, 2 epochs

    assert train(run.path, stop_after_steps=1) == 0
    first = run.latest_complete_checkpoint().path
    restored = []
    real_load = ti.TextualInversionMethod.load_trainable_state

    def spy(self, tensors):
        real_load(self, tensors)
        restored.append(self.tokens.vectors.detach().clone())

    monkeypatch.setattr(ti.TextualInversionMethod, "load_trainable_state", spy)
    assert train(run.path, resume=True) == 0

    assert "does not contain textual_inversion.placeholder_token" in events(run, "warning")[0]["message"]
    assert all(math.isfinite(p["loss"]) for p in events(run, "progress"))
    assert [p["step"] for p in events(run, "progress")] == [1, 2]
    # Resume put back exactly the vectors the stop saved.
    saved = load_file(first / ti.DIFFUSERS_EMBEDDING_FILE)["<concept>"]
    assert torch.equal(restored[0].cpu(), saved)

    last = run.latest_complete_checkpoint().path
    assert sorted(p.name for p in last.iterdir()) == ["COMPLETE", "concept.safetensors",
                                                      "learned_embeds.safetensors", "state"]
    learned = load_file(last / "learned_embeds.safetensors")
    a1111 = load_file(last / "concept.safetensors")
    assert list(learned) == ["<concept>"] and list(a1111) == ["emb_params"]
    assert learned["<concept>"].shape == (2, 32) and torch.equal(learned["<concept>"], a1111["emb_params"])
    # Only the vectors are trainable state; they moved away from the initializer and between steps.
    assert list(load_file(last / "state" / "trainable.safetensors")) == [
        "text_encoder.embeddings.token_embedding.vectors"]
    assert not torch.equal(learned["<concept>"], saved)

    pipe = base_pipeline()
    init = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("circle")].detach()
    assert not torch.allclose(learned["<concept>"][0], init)
    prompt = "a <concept> on a plain background"
    without = render(pipe, prompt, cfg)
    pipe.load_textual_inversion(str(last / "learned_embeds.safetensors"), token="<concept>")
    assert "<concept>_1" in pipe.tokenizer.get_vocab()
    with_embedding = render(pipe, prompt, cfg)
    assert differs(without, with_embedding) > 1.0
    # The exported embedding draws exactly what the trainer's sampler drew at that checkpoint.
    assert differs(with_embedding, sample_image(run.samples_dir / last.name / "p00-s0001.png")) < 0.5

    other = base_pipeline()
    other.load_textual_inversion(str(last / "concept.safetensors"), token="<concept>")
    ids = other.tokenizer.convert_tokens_to_ids(["<concept>", "<concept>_1"])
    assert torch.equal(other.text_encoder.get_input_embeddings().weight[ids].detach(), learned["<concept>"])
    assert [c[0] for c in run.sample_columns()] == ["e0000-s00000000", "e0001-s00000001", "e0002-s00000002"]


def test_trainable_state_holds_only_the_vectors_and_reloads_them():
    cfg = ti_config()
    tok = build_tokenizer()
    from engine.train.tiny import _text_config
    from transformers import CLIPTextModel

    te = CLIPTextModel(_text_config(tok))
    comps = SimpleNamespace(unet=torch.nn.Linear(1, 1), text_encoder=te, vae=torch.nn.Linear(1, 1), tokenizer=tok)
    acc = SimpleNamespace(device=torch.device("cpu"))
    m = ti.TextualInversionMethod(cfg, comps, acc, torch.float32)
    m.setup()
    state = {k: v.clone() for k, v in m.trainable_state().items()}
    assert list(state) == ["text_encoder.embeddings.token_embedding.vectors"]
    with torch.no_grad():
        m.tokens.vectors.add_(1.0)
    m.load_trainable_state(state)
    assert torch.equal(m.tokens.vectors.detach(), next(iter(state.values())))
    assert [len(g["params"]) for g in m.parameter_groups()] == [1]


BAD_TI = """method = "textual_inversion"
[model]
base = "tiny"
[textual_inversion]
placeholder_token = "circle"
initializer_token = "red circle"
num_vectors = 2
"""


def test_run_and_check_refuse_a_placeholder_in_the_vocabulary_or_a_multi_token_initializer_before_launch(
        tmp_path, tiny_base, capsys):
    from tui.cli import main

    project = make_project(tmp_path, n=1)
    (project / "configs").mkdir()
    (project / "configs" / "ti.toml").write_text(BAD_TI)

    assert main(["run", str(project), "ti"]) == 2
    err = capsys.readouterr().err
    assert "configs/ti.toml:5: textual_inversion.placeholder_token = 'circle': 'circle' is already a token" in err
    assert ("configs/ti.toml:6: textual_inversion.initializer_token = 'red circle' is 2 tokens for the base "
            "model's tokenizer; it must be a single token") in err
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())

    assert main(["check", str(project), "ti", "--set", "method=pivotal"]) == 1
    err = capsys.readouterr().err
    assert "placeholder_token = 'circle'" in err and "initializer_token = 'red circle' is 2 tokens" in err

    # A good placeholder passes; a bad one given with --set is named as such.
    assert main(["check", str(project), "ti", "--set", "textual_inversion.placeholder_token=<x>",
                 "--set", "textual_inversion.initializer_token=circle"]) == 0
    capsys.readouterr()
    assert main(["run", str(project), "ti", "--set", "textual_inversion.placeholder_token=square",
                 "--set", "textual_inversion.initializer_token=circle"]) == 2
    assert "ti.toml (--set): textual_inversion.placeholder_token = 'square'" in capsys.readouterr().err


def test_a_taken_vector_token_of_a_multi_vector_placeholder_is_named():
    from engine.placeholder import tokenizer_problems

    ti = ti_config(**{"textual_inversion.placeholder_token": "<x>", "textual_inversion.num_vectors": 3}).textual_inversion
    problems = tokenizer_problems(ti, {"<x>_2", "circle"}, lambda text: 1)
    assert problems == [("textual_inversion.placeholder_token", "= '<x>': its vector token '<x>_2' (num_vectors = 3) "
                         "is already a token of the base model's tokenizer; pick a new word, e.g. \"<my-subject>\"")]
    assert tokenizer_problems(ti, {"circle"}, lambda text: 1) == []


@pytest.mark.slow
def test_textual_inversion_trains_under_two_cpu_processes(tmp_path):
    """Its UNet has nothing to train, which DDP refuses to wrap; the trainer gives it mixed precision only."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cfg = ti_config(**{"train.epochs": 1, "train.batch_size": 1, "launch.num_processes": 2})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, n=2), cfg)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(root), ACCELERATE_USE_CPU="true")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(29500 + (os.getpid() + 500) % 1000),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "engine.train", str(run.path)]
    result = subprocess.run(cmd, cwd=run.path, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=280)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    assert events(run, "start")[0]["processes"] == 2 and len(events(run, "finished")) == 1
    learned = load_file(run.latest_complete_checkpoint().path / "learned_embeds.safetensors")["<concept>"]
    pipe = base_pipeline()
    init = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("circle")].detach()
    assert not torch.allclose(learned[0], init)
