"""DreamBooth on the tiny model: class images drawn once and reused, instance and class examples in
every batch, the prior-weighted loss, and LoRA / full exports that load in diffusers and change the
picture."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from engine.train import loop
from engine.train.events import EventWriter
from engine.train.loop import train
from engine.train.methods.dreambooth import PRIOR_CONCEPT, DreamBoothFull, DreamBoothLora, DreamBoothMethod
from tests.test_methods_support import (base_pipeline, differs, fake_accelerator, fake_components, one_prompt,
                                        render, sample_image)
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)

PROMPT = "a sks circle"


def db_config(**changes):
    cfg = tiny_config(**{"method": "dreambooth", "dreambooth.instance_prompt": PROMPT,
                         "dreambooth.class_prompt": "a circle", "dreambooth.num_class_images": 3,
                         "dreambooth.prior_loss_weight": 0.5, "dreambooth.class_steps": 3, "train.epochs": 1,
                         "train.batch_size": 1, **changes})
    return one_prompt(cfg, PROMPT)


def test_the_weights_setting_picks_lora_or_full_training():
    assert isinstance(DreamBoothMethod(db_config(), fake_components(), fake_accelerator(), torch.float32),
                      DreamBoothLora)
    full = DreamBoothMethod(db_config(**{"dreambooth.weights": "full"}), fake_components(), fake_accelerator(),
                            torch.float32)
    assert isinstance(full, DreamBoothFull) and full.name == "dreambooth" and full.ema is None


def test_each_instance_example_brings_a_class_example_chosen_by_the_position_in_training():
    cfg = db_config(**{"train.batch_size": 2, "train.gradient_accumulation": 2})
    m = DreamBoothMethod(cfg, fake_components(), fake_accelerator(processes=2, index=1), torch.float32)
    m.class_indices = [10, 11, 12]
    # step 1, micro 1, rank 1 of 2: class examples number ((1*2+1)*2+1)*2 = 14 and 15 (mod 3: 2, 0)
    assert m.batch_indices([4, 5], step=1, micro=1) == [4, 5, 12, 10]
    m.class_indices = []
    assert m.batch_indices([4, 5], step=1, micro=1) == [4, 5]


def test_the_loss_is_instance_mse_plus_weighted_class_mse():
    m = DreamBoothMethod(db_config(), fake_components(), fake_accelerator(), torch.float32)
    target = torch.zeros(4, 1, 2, 2)
    pred = torch.stack([torch.full((1, 2, 2), v) for v in (1.0, 3.0, 2.0, 4.0)])  # squared: 1, 9, 4, 16
    batch = SimpleNamespace(concepts=["dogs", "dogs", PRIOR_CONCEPT, PRIOR_CONCEPT])
    assert m.loss(pred, target, None, batch).item() == pytest.approx((1 + 9) / 2 + 0.5 * (4 + 16) / 2)
    weights = torch.tensor([1.0, 0.0, 1.0, 0.5])
    assert m.loss(pred, target, weights, batch).item() == pytest.approx(1 / 2 + 0.5 * (4 + 8) / 2)
    plain = SimpleNamespace(concepts=["dogs"] * 4)
    assert m.loss(pred, target, None, plain).item() == pytest.approx((1 + 9 + 4 + 16) / 4)


@pytest.mark.slow
def test_dreambooth_lora_draws_class_images_once_trains_on_pairs_and_its_lora_changes_the_picture(tmp_path,
                                                                                                   monkeypatch):
    from accelerate import Accelerator

    from engine.train import prior
    from engine.train.models import load_components

    project = make_project(tmp_path, n=2)
    cfg = db_config(**{"train.learning_rate": 1e-2})
    cfg.sample.at_start = False
    run = make_run(project, cfg)
    seen = []
    real = loop.compute_loss
    monkeypatch.setattr(loop, "compute_loss", lambda s, b: (seen.append((b.captions, b.concepts)), real(s, b))[1])

    assert train(run.path) == 0

    priors = events(run, "prior")
    assert [(p["done"], p["total"], p["generated"]) for p in priors] == [(0, 3, 0), (3, 3, 3)]
    folder = project / priors[0]["cache"]
    assert priors[0]["cache"].startswith(".cache/prior/")
    assert sorted(p.name for p in folder.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    assert [len(c) for c, _ in seen] == [2, 2]  # batch_size 1: one instance and one class example each
    for captions, concepts in seen:
        assert captions == [PROMPT, "a circle"] and concepts[1] == PRIOR_CONCEPT
    assert all(math.isfinite(p["loss"]) for p in events(run, "progress"))
    assert len(list((run.samples_dir / "e0001-s00000002").glob("*.png"))) == 1

    # A later run with the same base and class prompt reuses the pictures and asks for one more; its
    # contact-sheet settings differ, which does not matter to the class images.
    more = db_config(**{"dreambooth.num_class_images": 4, "sample.steps": 5, "sample.guidance": 3.0,
                        "sample.scheduler": "euler", "sample.negative_prompt": "blurry"})
    again_events = tmp_path / "again.jsonl"
    paths = prior.class_images(more, load_components("tiny", project), cache_root=project / ".cache",
                               accelerator=Accelerator(), events=EventWriter(again_events, True))
    again = [json.loads(line) for line in again_events.read_text().splitlines()]
    assert [(e["done"], e["reused"], e["generated"]) for e in again] == [(3, 3, 0), (4, 3, 1)]
    assert [p.parent for p in paths] == [folder] * 4
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png") if p.name != "00003.png"} == stamps

    ck = run.latest_complete_checkpoint().path
    kohya = ck / f"{run.run_id}-{ck.name}.safetensors"
    assert (ck / "pytorch_lora_weights.safetensors").is_file() and kohya.is_file()
    from safetensors import safe_open

    with safe_open(str(kohya), "pt") as f:
        meta = f.metadata()
    assert meta["ss_class_prompt"] == "a circle" and meta["ss_reg_images_count"] == "3"
    pipe = base_pipeline()
    before = render(pipe, PROMPT, cfg)
    pipe.load_lora_weights(str(ck))
    after = render(pipe, PROMPT, cfg)
    assert differs(before, after) > 1.0
    assert differs(after, sample_image(run.samples_dir / ck.name / "p00-s0001.png")) < 0.5


@pytest.mark.slow
def test_dreambooth_full_exports_a_pipeline_that_draws_differently(tmp_path):
    from diffusers import StableDiffusionPipeline

    cfg = db_config(**{"dreambooth.weights": "full", "dreambooth.prior_preservation": False,
                       "train.learning_rate": 1e-3})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, n=2), cfg)
    assert train(run.path) == 0
    assert not events(run, "prior")
    assert all(math.isfinite(p["loss"]) for p in events(run, "progress"))
    ck = run.latest_complete_checkpoint().path
    assert (ck / f"{run.run_id}-{ck.name}.safetensors").is_file()
    tuned = StableDiffusionPipeline.from_pretrained(ck / "diffusers", safety_checker=None,
                                                    requires_safety_checker=False, local_files_only=True)
    assert differs(render(base_pipeline(), PROMPT, cfg), render(tuned, PROMPT, cfg)) > 1.0
    assert len(list((run.samples_dir / ck.name).glob("*.png"))) == 1


def test_the_class_image_cache_key_is_the_base_class_prompt_resolution_and_class_sampler_only():
    from engine.train import prior

    def key(**changes):
        return prior.cache_key("base-fingerprint", prior.settings(db_config(**changes)))

    same = key()
    assert key(**{"sample.steps": 50, "sample.guidance": 12.0, "sample.scheduler": "euler_a",
                  "sample.negative_prompt": "ugly", "dreambooth.num_class_images": 50,
                  "dreambooth.instance_prompt": "a zwx circle", "train.learning_rate": 1.0}) == same
    for changed in ({"dreambooth.class_prompt": "a square"}, {"data.resolution": 64},
                    {"dreambooth.class_steps": 4}, {"dreambooth.class_guidance": 5.0}):
        assert key(**changed) != same, changed
    assert prior.cache_key("another-base", prior.settings(db_config())) != same


class Warnings:
    def __init__(self):
        self.messages = []

    def warning(self, message, **fields):
        self.messages.append(message)


def test_instance_prompts_replace_captions_and_prompts_that_teach_nothing_are_warned_about(tmp_path, monkeypatch):
    from engine.train.data import Example, ExampleSet

    def examples():
        return ExampleSet(train=[Example(path=None, rel="a.png", caption="a red circle", concept="c"),
                                 Example(path=None, rel="b.png", caption="", concept="c")],
                          validation=[Example(path=None, rel="v.png", caption="x", concept="c")], skipped=[])

    off = {"dreambooth.prior_preservation": False}
    ex, ev = examples(), Warnings()
    DreamBoothMethod(db_config(**off), fake_components(), fake_accelerator(), torch.float32).prepare_data(
        ex, project_dir=tmp_path, events=ev)
    assert [e.caption for e in ex.train + ex.validation] == [PROMPT] * 3 and ev.messages == []

    ex, ev = examples(), Warnings()
    DreamBoothMethod(db_config(**{**off, "dreambooth.instance_prompt": ""}), fake_components(), fake_accelerator(),
                     torch.float32).prepare_data(ex, project_dir=tmp_path, events=ev)
    assert [e.caption for e in ex.train] == ["a red circle", ""]
    assert len(ev.messages) == 1 and "1 of 2 training image(s) have no caption" in ev.messages[0]

    ev = Warnings()
    same = db_config(**{"dreambooth.instance_prompt": "A circle", "dreambooth.num_class_images": 1})
    m = DreamBoothMethod(same, fake_components(), fake_accelerator(), torch.float32)
    from engine.train import prior

    monkeypatch.setattr(prior, "class_images", lambda *a, **k: [])  # no drawing: only the warning matters here
    m.prepare_data(examples(), project_dir=tmp_path, events=ev)
    assert len(ev.messages) == 1 and "instance_prompt is the class prompt" in ev.messages[0]


@pytest.mark.slow
def test_an_undecodable_instance_image_does_not_shift_the_class_examples(tmp_path, monkeypatch):
    from tests.test_reliability_data import corrupt_pixels_png

    project = make_project(tmp_path, n=3)  # 3 steps: the 3rd class example would be past the end if shifted
    (project / "images" / "aaa.png").write_bytes(corrupt_pixels_png())  # first in the file order
    cfg = db_config()
    cfg.sample.at_start = False
    cfg.sample.prompts = []
    run = make_run(project, cfg)
    seen = []
    real = loop.compute_loss
    monkeypatch.setattr(loop, "compute_loss", lambda s, b: (seen.append((b.captions, b.concepts)), real(s, b))[1])

    assert train(run.path) == 0
    assert any("aaa.png" in w["message"] for w in events(run, "warning"))
    assert [c for c, _ in seen] == [[PROMPT, "a circle"]] * 3
    assert all(concepts[1] == PRIOR_CONCEPT for _, concepts in seen)


def test_class_examples_are_found_again_once_the_examples_are_final():
    from engine.train.data import Example

    m = DreamBoothMethod(db_config(), fake_components(), fake_accelerator(), torch.float32)
    m.class_indices = [3, 4, 5]  # as prepare_data saw them, before an instance image was dropped
    final = [Example(path=None, rel=f"{i}.png", caption="x", concept="c") for i in range(2)] + [
        Example(path=None, rel=f"c{i}.png", caption="a circle", concept=PRIOR_CONCEPT) for i in range(2)]
    ev = Warnings()
    m.examples_ready(final, events=ev)
    assert m.class_indices == [2, 3]
    assert ev.messages == ["1 of 3 class image(s) could not be decoded"]
