"""Training data and the latent/text cache: order, crops, validation split, cache keys and reuse."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from engine.train import data as datamod
from engine.train.loop import train
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def test_epoch_plan_is_seeded_repeats_images_and_shards_evenly():
    repeats = [1, 3, 1, 2]  # 7 images per epoch
    a = datamod.epoch_plan(repeats, 1, 42, rank=0, world=1, batch_size=2)
    assert a == datamod.epoch_plan(repeats, 1, 42, rank=0, world=1, batch_size=2)
    assert a != datamod.epoch_plan(repeats, 2, 42, rank=0, world=1, batch_size=2)
    flat = [i for b in a for i in b]
    assert sorted(flat) == [0, 1, 1, 1, 2, 3, 3] and [len(b) for b in a] == [2, 2, 2, 1]
    shards = [datamod.epoch_plan(repeats, 1, 42, rank=r, world=2, batch_size=2) for r in (0, 1)]
    assert [sum(map(len, s)) for s in shards] == [4, 4]  # padded to the same count per process
    assert datamod.steps_per_epoch(7, world=2, batch_size=2, accumulation=1) == len(shards[0])


def test_load_image_resizes_the_short_side_and_crops(tmp_path):
    im = Image.new("RGB", (80, 40), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 20, 40))  # blue left quarter
    path = tmp_path / "wide.png"
    im.save(path)
    center = datamod.load_image(path, 20)
    assert center.shape == (3, 20, 20) and center.min() >= -1 and center.max() <= 1
    assert center[0, 10, 2] > 0.9 and center[2, 10, 2] < -0.9  # the blue strip is cropped away
    flipped = datamod.load_image(path, 20, flip=True)
    torch.testing.assert_close(flipped, torch.flip(center, dims=[2]))
    crops = {datamod.load_image(path, 20, crop="random", generator=torch.Generator().manual_seed(s))[2, 10, 0].item()
             for s in range(8)}
    assert len(crops) > 1  # some random crops include the blue strip


def test_validation_split_is_deterministic_and_never_takes_everything():
    examples = [datamod.Example(path=f"/x/{i}.png", rel=f"{i}.png", caption="c", concept="c") for i in range(10)]
    train_a, val_a = datamod.split_validation(examples, 0.2, seed=1)
    train_b, val_b = datamod.split_validation(list(reversed(examples)), 0.2, seed=1)
    assert len(val_a) == 2 and {e.rel for e in val_a} == {e.rel for e in val_b}
    assert len(datamod.split_validation(examples[:2], 0.9, seed=1)[0]) == 1


def test_a_validation_folder_is_held_out_and_scored_each_epoch(tmp_path):
    project = make_project(tmp_path, n=3, goals=False)
    (project / "held").mkdir()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(project / "held" / "v.png")
    (project / "held" / "v.txt").write_text("a green square\n")
    cfg = tiny_config(**{"data.validation_folder": "held", "data.concepts": ["images"], "train.epochs": 2})
    cfg.sample.at_start = False
    run = make_run(project, cfg)
    assert train(run.path) == 0
    start = events(run, "start")[0]
    assert start["images"] == 3 and start["validation_images"] == 1
    val = events(run, "val_loss")
    assert [v["epoch"] for v in val] == [1, 2] and all(v["images"] == 1 for v in val)


def test_the_validation_loss_is_deterministic_with_a_trained_text_encoder_and_dropout(tmp_path, monkeypatch):
    from engine.train import loop

    cfg = tiny_config(**{"data.validation_split": 0.5, "lora.train_text_encoder": True, "lora.dropout": 0.5,
                         "train.epochs": 2, "train.learning_rate": 1e-2})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, goals=False), cfg)
    real = loop.validation_loss
    monkeypatch.setattr(loop, "validation_loss", lambda s: (real(s), real(s)))  # score each epoch twice
    assert train(run.path) == 0
    val = [v["loss"] for v in events(run, "val_loss")]
    assert len(val) == 4 and val[0] == val[1] and val[2] == val[3] and val[1] != val[2]


def test_latents_are_cached_per_transform_and_reused_by_the_next_run(tmp_path):
    project = make_project(tmp_path, n=3, goals=False)
    cfg = tiny_config(**{"train.epochs": 1, "data.flip": True})
    cfg.sample.at_start = False
    first = make_run(project, cfg, "20260101-000000-first")
    assert train(first.path) == 0
    assert events(first, "start")[0]["cache"] == {"latents": True, "text": True, "computed": 3 + 4}  # 3 captions + ""
    files = list((project / ".cache" / "latents").rglob("*.safetensors"))
    assert len(files) == 3
    from safetensors.torch import load_file

    assert load_file(str(files[0]))["params"].shape[0] == 2  # plain and mirrored variants

    second = make_run(project, cfg, "20260101-000001-second")
    assert train(second.path) == 0
    assert events(second, "start")[0]["cache"]["computed"] == 0
    # Same data, same seed: cached runs train identically.
    assert [e["loss"] for e in events(first, "progress")] == [e["loss"] for e in events(second, "progress")]

    cfg.data.resolution = 24  # another transform: new entries
    third = make_run(project, cfg, "20260101-000002-third")
    assert train(third.path) == 0
    assert events(third, "start")[0]["cache"]["computed"] == 3

    from PIL import Image  # an edited picture (same file name) is encoded again; the others are reused

    Image.new("RGB", (40, 40), (10, 200, 10)).save(project / "images" / "img00.png")
    fourth = make_run(project, cfg, "20260101-000003-fourth")
    assert train(fourth.path) == 0
    assert events(fourth, "start")[0]["cache"]["computed"] == 1


def test_cached_and_uncached_training_agree(tmp_path):
    cfg = tiny_config(**{"train.epochs": 1})
    cfg.sample.at_start = False
    cached = make_run(make_project(tmp_path / "a", goals=False), cfg)
    assert train(cached.path) == 0
    cfg.data.cache_latents = False
    cfg.data.cache_text = False
    uncached = make_run(make_project(tmp_path / "b", goals=False), cfg)
    assert train(uncached.path) == 0
    assert events(uncached, "start")[0]["cache"]["latents"] is False
    a = [e["loss"] for e in events(cached, "progress")]
    b = [e["loss"] for e in events(uncached, "progress")]
    assert b == pytest.approx(a, rel=1e-4)
