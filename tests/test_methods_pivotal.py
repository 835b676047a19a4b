"""Pivotal tuning on the tiny model: the embedding trains first, then the LoRA, across resumes at and after
the switch; the LoRA and the embedding both load in diffusers and each changes the picture."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from engine.train import checkpoint as ckpt
from engine.train.loop import train
from tests.test_methods_support import base_pipeline, differs, one_prompt, render, sample_image
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)

PROMPT = "a <concept> on a plain background"


def pivotal_config(**changes):
    cfg = tiny_config(**{"method": "pivotal", "train.epochs": 3, "pivotal.ti_fraction": 0.34,
                         "train.learning_rate": 1e-2, "pivotal.embedding_learning_rate": 5e-2,
                         "textual_inversion.initializer_token": "circle", **changes})
    cfg.save.every_n_steps = 1
    return one_prompt(cfg, PROMPT)


def lora_up(ck) -> dict[str, torch.Tensor]:
    up = {k: v for k, v in load_file(ck / "pytorch_lora_weights.safetensors").items() if k.endswith(".lora.up.weight")}
    assert up
    return up


def embedding(ck) -> torch.Tensor:
    return load_file(ck / "learned_embeds.safetensors")["<concept>"]


@pytest.mark.slow
def test_pivotal_trains_the_embedding_then_the_lora_across_resumes_at_and_after_the_switch_and_exports_both(tmp_path):
    cfg = pivotal_config()
    run = make_run(make_project(tmp_path, n=2), cfg)  # 1 step per epoch, 3 steps: step 1 is TI

    assert train(run.path, stop_after_steps=1) == 0  # stops right at the switch
    assert train(run.path, resume=True, stop_after_steps=2) == 0  # switches, stops in the LoRA phase
    assert train(run.path, resume=True) == 0  # resumes in the LoRA phase

    phases = events(run, "phase")
    assert [(p["phase"], p["step"], p.get("resumed_at")) for p in phases] == [
        ("textual_inversion", 0, None), ("lora", 1, None), ("lora", 1, 2)]
    assert phases[1]["embeddings_frozen"] is True and "switching to LoRA" in phases[1]["message"]
    assert "resumed at step 3 in the LoRA phase (since step 2)" in phases[2]["message"]
    assert "frozen" in phases[2]["message"]
    assert all(math.isfinite(p["loss"]) for p in events(run, "progress"))
    cks = [c.path for c in run.checkpoints()]
    assert [c.name for c in cks] == ["e0001-s00000001", "e0002-s00000002", "e0003-s00000003"]
    # Step 1 moved the embedding and left the LoRA at its initial (zero) up-weights; the later steps
    # moved the LoRA and left the frozen embedding exactly as the switch found it.
    base_row = base_pipeline().text_encoder.get_input_embeddings().weight[0].detach()
    assert embedding(cks[0]).shape == (1, base_row.shape[0])
    assert all(not v.any() for v in lora_up(cks[0]).values())
    assert torch.equal(embedding(cks[2]), embedding(cks[0]))
    assert any(v.abs().sum() > 0 for v in lora_up(cks[1]).values())
    # The process resumed after the switch trained the LoRA, not the embedding.
    assert any(not torch.equal(v, lora_up(cks[1])[k]) for k, v in lora_up(cks[2]).items())
    last = cks[2]
    assert sorted(p.name for p in last.iterdir()) == sorted([
        "COMPLETE", "concept.safetensors", "learned_embeds.safetensors", "pytorch_lora_weights.safetensors",
        f"{run.run_id}-{last.name}.safetensors", "state"])
    kohya = load_file(last / f"{run.run_id}-{last.name}.safetensors")
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_up.weight") for k in kohya)
    # Samples before and after the switch are columns of one sheet.
    assert [c[0] for c in run.sample_columns()] == ["e0000-s00000000", "e0001-s00000001", "e0002-s00000002",
                                                    "e0003-s00000003"]

    pipe = base_pipeline()
    pipe.load_textual_inversion(str(last / "learned_embeds.safetensors"), token="<concept>")
    embedding_only = render(pipe, PROMPT, cfg)
    pipe.load_lora_weights(str(last))
    both = render(pipe, PROMPT, cfg)
    assert differs(embedding_only, both) > 1.0
    assert differs(both, sample_image(run.samples_dir / last.name / "p00-s0001.png")) < 0.5
    assert differs(embedding_only, sample_image(run.samples_dir / cks[0].name / "p00-s0001.png")) < 0.5
    # The A1111 pair (the kohya LoRA file and the single-tensor embedding) draws the same in diffusers
    # (which takes the kohya keys once the bundled embedding's are left out: it refuses keys it does not know).
    a1111 = base_pipeline()
    a1111.load_textual_inversion(str(last / "concept.safetensors"), token="<concept>")
    a1111.load_lora_weights({k: v for k, v in kohya.items() if not k.startswith("bundle_emb.")})
    assert differs(render(a1111, PROMPT, cfg), both) < 0.5
    # The bundled embedding is the embedding the LoRA was trained with.
    assert torch.equal(kohya["bundle_emb.concept.string_to_param.*"], embedding(last))

    # The resumed run ends where an uninterrupted one does.
    straight = make_run(make_project(tmp_path / "straight", n=2), cfg)
    assert train(straight.path) == 0
    assert [p["loss"] for p in events(straight, "progress")] == pytest.approx(
        [p["loss"] for p in events(run, "progress")], rel=1e-5)
    a, b = (ckpt.read_state(r.latest_complete_checkpoint().path).trainable for r in (straight, run))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_the_switch_drops_the_gradients_of_what_must_not_move(tmp_path):
    from types import SimpleNamespace

    from engine.train.methods.pivotal import PivotalMethod

    class Events:
        def __init__(self):
            self.kinds = []

        def emit(self, kind, **fields):
            self.kinds.append((kind, fields["phase"], fields["step"]))

        def say(self, line):
            pass

    m = PivotalMethod.__new__(PivotalMethod)
    m.cfg = pivotal_config(**{"pivotal.ti_fraction": 0.5})
    lora_param = torch.nn.Parameter(torch.zeros(2))
    m.lora = SimpleNamespace(parameter_groups=lambda: [{"params": [lora_param], "lr": 1.0}])
    vectors = torch.nn.Parameter(torch.zeros(2))
    m.tokens = SimpleNamespace(vectors=vectors, token="<concept>")
    ev = Events()
    seen = []
    for step in range(4):
        m.begin_step(step, total_steps=4, events=ev)
        lora_param.grad, vectors.grad = torch.ones(2), torch.ones(2)
        m.before_optimizer_step()
        seen.append((m.phase, lora_param.grad is not None, vectors.grad is not None))
    assert seen == [("textual_inversion", False, True)] * 2 + [("lora", True, False)] * 2
    assert ev.kinds == [("phase", "textual_inversion", 0), ("phase", "lora", 2)]
    m.cfg.pivotal.train_embeddings_after_switch = True
    m.begin_step(3, total_steps=4, events=ev)
    lora_param.grad, vectors.grad = torch.ones(2), torch.ones(2)
    m.before_optimizer_step()
    assert lora_param.grad is not None and vectors.grad is not None


class Events:
    def __init__(self):
        self.emitted, self.warnings = [], []

    def emit(self, kind, **fields):
        self.emitted.append((kind, fields))

    def say(self, line):
        pass

    def warning(self, message, **fields):
        self.warnings.append(message)


def bare_pivotal(**changes):
    from types import SimpleNamespace

    from engine.train.methods.pivotal import PivotalMethod

    m = PivotalMethod.__new__(PivotalMethod)
    m.cfg = pivotal_config(**changes)
    m.tokens = SimpleNamespace(token="<concept>")
    return m


@pytest.mark.parametrize("fraction,total,switch", [(0.5, 10, 5), (0.34, 3, 1), (0.99, 3, 2), (0.01, 3, 1), (0.5, 1, 1)])
def test_the_switch_comes_after_the_fraction_of_steps_leaving_each_phase_a_step(fraction, total, switch):
    assert bare_pivotal(**{"pivotal.ti_fraction": fraction}).switch_step(total) == switch


def test_a_run_too_short_for_the_lora_phase_is_warned_about():
    m, ev = bare_pivotal(), Events()
    m.begin_step(0, total_steps=1, events=ev)
    assert len(ev.warnings) == 1 and "the LoRA never trains" in ev.warnings[0]
    m, ev = bare_pivotal(), Events()
    m.begin_step(0, total_steps=2, events=ev)
    assert ev.warnings == []


def test_a_process_resumed_inside_a_phase_says_which_phase_it_is_in():
    m, ev = bare_pivotal(**{"pivotal.ti_fraction": 0.5}), Events()  # 10 steps: TI for 1-5, LoRA from 6
    m.begin_step(2, total_steps=10, events=ev)
    m.begin_step(3, total_steps=10, events=ev)
    assert [(f["phase"], f["step"], f["resumed_at"]) for _, f in ev.emitted] == [("textual_inversion", 0, 2)]
    m, ev = bare_pivotal(**{"pivotal.ti_fraction": 0.5, "pivotal.train_embeddings_after_switch": True}), Events()
    m.begin_step(7, total_steps=10, events=ev)
    (kind, fields), = ev.emitted
    assert (kind, fields["phase"], fields["step"], fields["resumed_at"]) == ("phase", "lora", 5, 7)
    assert "resumed at step 8 in the LoRA phase (since step 6)" in fields["message"]
    assert "still training" in fields["message"] and fields["embeddings_frozen"] is False


def test_ti_fraction_of_one_is_a_config_error_naming_the_key():
    from engine.config import parse_run_config
    from engine.schema import ConfigError

    with pytest.raises(ConfigError, match=r"pivotal.ti_fraction = 1.0: must be below 1"):
        parse_run_config('method = "pivotal"\n[pivotal]\nti_fraction = 1.0\n')
    parse_run_config('method = "textual_inversion"\n[pivotal]\nti_fraction = 1.0\n')  # unused there: fine


def a1111_bundled_embeddings(state: dict[str, torch.Tensor]) -> dict[str, dict]:
    """What AUTOMATIC1111's Lora extension (networks.load_network) makes of `bundle_emb.*` keys: name →
    embedding data for textual_inversion.create_embedding_from_data ({'string_to_param': {'*': vectors}})."""
    out: dict[str, dict] = {}
    for key, weight in state.items():
        prefix, _, part = key.partition(".")
        if prefix != "bundle_emb":
            continue
        name, vec_name = part.split(".", 1)
        if vec_name.split(".")[0] == "string_to_param":
            out.setdefault(name, {})["string_to_param"] = {vec_name.split(".", 1)[1]: weight}
        else:
            out.setdefault(name, {})[vec_name] = weight
    return out


@pytest.mark.slow
@pytest.mark.parametrize("num_vectors", [1, 3])
def test_the_kohya_lora_of_a_pivotal_run_bundles_its_embedding_as_a1111_loads_it(tmp_path, num_vectors):
    cfg = pivotal_config(**{"train.epochs": 2, "textual_inversion.placeholder_token": "<my-cat>",
                            "textual_inversion.num_vectors": num_vectors})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, n=2), cfg)
    assert train(run.path) == 0
    for ck in (c.path for c in run.checkpoints(complete_only=True)):
        kohya_file = ck / f"{run.run_id}-{ck.name}.safetensors"
        kohya = load_file(kohya_file)
        separate = load_file(ck / "learned_embeds.safetensors")["<my-cat>"]
        a1111_file = load_file(ck / "my-cat.safetensors")["emb_params"]  # the separate files stay
        bundled = a1111_bundled_embeddings(kohya)
        assert list(bundled) == ["my-cat"]  # the A1111 file's name: one prompt word for both
        (vectors,) = bundled["my-cat"]["string_to_param"].values()
        assert list(bundled["my-cat"]["string_to_param"]) == ["*"]
        width = base_pipeline().text_encoder.get_input_embeddings().weight.shape[1]
        assert vectors.shape == (num_vectors, width) and vectors.dtype == torch.float32
        assert torch.equal(vectors, separate) and torch.equal(vectors, a1111_file)
        assert any(k.startswith("lora_unet_") for k in kohya)  # and the LoRA is still all there
        from safetensors import safe_open

        with safe_open(str(kohya_file), "pt") as f:
            assert f.metadata()["ss_tunelab_bundled_embedding"] == "my-cat"
    # Training the LoRA moved it away from the step-1 (TI phase) checkpoint's, the embedding did not move.
    first, last = (load_file(c.path / f"{run.run_id}-{c.path.name}.safetensors")
                   for c in run.checkpoints(complete_only=True))
    assert torch.equal(first["bundle_emb.my-cat.string_to_param.*"], last["bundle_emb.my-cat.string_to_param.*"])


def test_bundling_can_be_turned_off(tmp_path):
    cfg = pivotal_config(**{"train.epochs": 2, "pivotal.bundle_embedding": False})
    cfg.sample.at_start = False
    cfg.sample.prompts = []
    run = make_run(make_project(tmp_path, n=2, goals=False), cfg)
    assert train(run.path) == 0
    ck = run.latest_complete_checkpoint().path
    assert not [k for k in load_file(ck / f"{run.run_id}-{ck.name}.safetensors") if k.startswith("bundle_emb.")]
    assert (ck / "learned_embeds.safetensors").is_file() and (ck / "concept.safetensors").is_file()
