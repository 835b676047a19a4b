"""The trainer, run in-process on the tiny model: events, checkpoints, samples, resume, failures."""
from __future__ import annotations

import errno
import json
import os
import signal
import time

import pytest
import torch

from engine.train import checkpoint as ckpt
from engine.train import loop
from engine.train.loop import train
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def losses(run) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run, "progress")}


def test_a_lora_run_writes_progress_checkpoints_samples_and_finishes(tmp_path):
    project = make_project(tmp_path, bad=1)
    cfg = tiny_config(**{"data.validation_split": 0.25})  # 4 images: 3 train, 1 validation
    cfg.sample.seeds = [1, 2]
    cfg.save.epochs = [1]
    run = make_run(project, cfg)

    assert train(run.path) == 0

    kinds = [e["kind"] for e in events(run)]
    assert kinds[0] == "warning" and "broken0.png" in events(run, "warning")[0]["message"]
    assert kinds[-1] == "finished"
    start = events(run, "start")[0]
    assert start["total_steps"] == 4 and start["steps_per_epoch"] == 2 and start["resumed_from_step"] is None
    assert start["device"] == "cpu" and start["mixed_precision"] == "no"  # `auto` on a CPU
    progress = events(run, "progress")
    assert [p["step"] for p in progress] == [1, 2, 3, 4]
    for p in progress:
        assert {"loss", "smooth_loss", "lr", "img_s", "eta_s", "elapsed", "epoch", "epochs", "total_steps"} <= set(p)
        assert p["loss"] > 0 and p["img_s"] > 0
    assert [(e["epoch"], e["step"]) for e in events(run, "epoch")] == [(1, 2), (2, 4)]
    val = events(run, "val_loss")
    assert [v["epoch"] for v in val] == [1, 2] and all(v["images"] == 1 for v in val)

    assert [c["path"] for c in events(run, "checkpoint")] == ["checkpoints/e0001-s00000002",
                                                               "checkpoints/e0002-s00000004"]
    for ck in run.checkpoints():
        assert ck.complete
        assert (ck.path / "pytorch_lora_weights.safetensors").is_file()
        assert (ck.path / "state" / "optimizer.safetensors").is_file()
        assert not list(ck.path.rglob("*.pt")) and not list(ck.path.rglob("*.bin")) and not list(ck.path.rglob("*.pkl"))
    # Epoch 0 and every save get a sample column: 2 prompts x 2 seeds.
    assert [c[0] for c in run.sample_columns()] == ["e0000-s00000000", "e0001-s00000002", "e0002-s00000004"]
    col = run.samples_dir / "e0002-s00000004"
    assert sorted(p.name for p in col.glob("*.png")) == ["p00-s0001.png", "p00-s0002.png", "p01-s0001.png",
                                                         "p01-s0002.png"]
    listing = json.loads((col / "samples.json").read_text())
    assert [p["kind"] for p in listing["prompts"]] == ["accuracy", "preservation"]
    assert listing["prompts"][0]["seeds"] == [1, 2] and listing["prompts"][0]["steps"] == 2
    samples = events(run, "sample")
    assert len(samples) == 12 and samples[0]["path"] == "samples/e0000-s00000000/p00-s0001.png"
    assert samples[0]["goal"] == "accuracy"


def test_resume_after_a_stop_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(**{"train.epochs": 3, "train.scheduler": "cosine", "train.warmup_steps": 2,
                         "lora.dropout": 0.1, "data.flip": True, "data.caption_dropout": 0.3})
    cfg.sample.at_start = False
    straight = make_run(make_project(tmp_path / "a", goals=False), cfg)
    assert train(straight.path) == 0

    stopped = make_run(make_project(tmp_path / "b", goals=False), cfg)
    assert train(stopped.path, stop_after_steps=3) == 0  # mid-epoch: epoch 2 has 2 steps
    assert events(stopped, "stopped")[-1]["step"] == 3
    assert [c.path.name for c in stopped.checkpoints()] == ["e0001-s00000003"]
    assert train(stopped.path, resume=True) == 0

    assert events(stopped, "resumed")[0]["step"] == 3
    assert events(stopped, "start")[-1]["resumed_from_step"] == 3
    assert not events(stopped, "warning")  # same data, same processes: nothing to warn about
    a, b = losses(straight), losses(stopped)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert events(stopped, "finished")[-1]["step"] == 6
    # The final weights agree too.
    wa = ckpt.read_state(straight.latest_complete_checkpoint().path).trainable
    wb = ckpt.read_state(stopped.latest_complete_checkpoint().path).trainable
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_a_stop_by_signal_leaves_the_samples_to_the_resume_which_still_matches_an_uninterrupted_run(
        tmp_path, monkeypatch):
    # dropout: the global RNG matters; log_every 2: the stop at step 3 is off the log schedule.
    cfg = tiny_config(**{"train.epochs": 3, "lora.dropout": 0.1, "train.log_every": 2})
    cfg.sample.at_start = False
    straight = make_run(make_project(tmp_path / "a"), cfg)
    assert train(straight.path) == 0
    stopped = make_run(make_project(tmp_path / "b"), cfg)
    real = loop.train_step

    def sigterm_during_step_3(s, micro_batches):
        if s.position.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: stop after this step
        return real(s, micro_batches)

    monkeypatch.setattr(loop, "train_step", sigterm_during_step_3)
    assert train(stopped.path) == 0
    monkeypatch.setattr(loop, "train_step", real)
    assert events(stopped, "stopped")[0]["reason"] == "signal"
    assert [c.path.name for c in stopped.checkpoints()] == ["e0001-s00000003"]
    assert not (stopped.samples_dir / "e0001-s00000003").exists()  # saved and gone, no sampling

    assert train(stopped.path, resume=True) == 0
    column = sorted(p.name for p in (stopped.samples_dir / "e0001-s00000003").glob("*.png"))
    assert column == ["p00-s0001.png", "p01-s0001.png"]
    assert [c[0] for c in stopped.sample_columns()] == ["e0001-s00000003", "e0003-s00000006"]
    assert [c[0] for c in straight.sample_columns()] == ["e0003-s00000006"]
    a, b = losses(straight), losses(stopped)
    assert sorted(a) == [2, 4, 6] and sorted(b) == [2, 3, 4, 6]  # the stop logs its step too…
    # …and the event at step 4 still averages steps 3 and 4, like the uninterrupted run's.
    assert all(b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6) for k in a)
    smooth = lambda run: {e["step"]: e["smooth_loss"] for e in events(run, "progress")}
    assert smooth(stopped)[6] == pytest.approx(smooth(straight)[6], rel=1e-5)
    wa = ckpt.read_state(straight.latest_complete_checkpoint().path).trainable
    wb = ckpt.read_state(stopped.latest_complete_checkpoint().path).trainable
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_a_stop_before_the_first_step_ends_at_once_without_a_checkpoint(tmp_path, monkeypatch):
    from engine.train import data as datamod

    run = make_run(make_project(tmp_path / "a"), tiny_config())
    run.request("stop")  # asked while the model loads and the cache fills
    assert train(run.path) == 0
    assert events(run, "stopped") == [{**events(run, "stopped")[0], "step": 0, "epoch": 0, "reason": "request"}]
    assert not events(run, "progress") and not events(run, "sample") and not run.checkpoints()

    run = make_run(make_project(tmp_path / "b"), tiny_config())
    real = datamod.load_examples

    def sigterm_while_scanning(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler raises here: nothing to save yet
        return real(*args, **kwargs)

    monkeypatch.setattr(datamod, "load_examples", sigterm_while_scanning)
    assert train(run.path) == 0
    assert [e["kind"] for e in events(run)] == ["stopped"] and events(run, "stopped")[0]["reason"] == "signal"
    assert not run.checkpoints()

    # A request that arrives while a long preparation runs (a big cache, class images) ends it at the
    # next batch, not after the whole cache is filled.
    from engine.train import cache as cachemod

    run = make_run(make_project(tmp_path / "c", n=8), tiny_config())
    monkeypatch.setattr(datamod, "load_examples", real)
    monkeypatch.setattr(cachemod, "ENCODE_BATCH", 1)
    encode, calls = cachemod.LatentCache.encode, []

    def slow_encode(self, examples):
        calls.append(1)
        if len(calls) == 1:
            run.request("stop")
        time.sleep(0.7)  # the watch looks every 0.5 s
        return encode(self, examples)

    monkeypatch.setattr(cachemod.LatentCache, "encode", slow_encode)
    assert train(run.path) == 0
    assert len(calls) < 8, "the whole cache was filled before the stop was seen"
    assert [e["kind"] for e in events(run)] == ["stopped"] and events(run, "stopped")[0]["reason"] == "request"
    assert not (run.control_dir / "stop").exists()  # consumed: a resume does not stop at once


def test_a_cpu_run_with_more_threads_than_cores_warns_that_it_is_oversubscribed(tmp_path):
    cores = len(os.sched_getaffinity(0))
    run = make_run(make_project(tmp_path / "a"), tiny_config())
    run.request("stop")  # the warning comes first; nothing needs to train
    threads = torch.get_num_threads()
    torch.set_num_threads(cores + 1)  # as OMP_NUM_THREADS = cores does to each of 2 processes, or more
    try:
        assert train(run.path) == 0
    finally:
        torch.set_num_threads(threads)
    (warning,) = [w for w in events(run, "warning") if w.get("reason") == "cpu_oversubscribed"]
    assert f"x {cores + 1} torch thread(s) each" in warning["message"]
    assert f"on {cores} CPU core(s)" in warning["message"] and "set OMP_NUM_THREADS=" in warning["message"]
    assert (warning["threads"], warning["processes"], warning["cores"]) == (cores + 1, 1, cores)

    run = make_run(make_project(tmp_path / "b"), tiny_config())
    run.request("stop")
    assert torch.get_num_threads() <= cores  # conftest: OMP_NUM_THREADS=1
    assert train(run.path) == 0
    assert not [w for w in events(run, "warning") if w.get("reason") == "cpu_oversubscribed"]


@pytest.mark.slow
def test_a_full_fine_tune_with_ema_resumes_exactly_too(tmp_path):
    cfg = tiny_config(method="full", **{"train.epochs": 3, "train.ema": True, "train.ema_decay": 0.9,
                                        "full.train_text_encoder": True, "train.gradient_accumulation": 2,
                                        "train.batch_size": 1, "data.flip": True, "data.caption_dropout": 0.3})
    cfg.sample.at_start, cfg.sample.prompts, cfg.save.formats = False, [], []  # state only: quicker
    straight = make_run(make_project(tmp_path / "a", goals=False), cfg)
    assert train(straight.path) == 0
    stopped = make_run(make_project(tmp_path / "b", goals=False), cfg)
    assert train(stopped.path, stop_after_steps=3) == 0  # mid-epoch 2
    assert train(stopped.path, resume=True) == 0
    a, b = losses(straight), losses(stopped)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert all(b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6) for step in a)
    wa = ckpt.read_state(straight.latest_complete_checkpoint().path).trainable
    wb = ckpt.read_state(stopped.latest_complete_checkpoint().path).trainable
    assert any(k.startswith("ema.text_encoder.") for k in wa) and wa.keys() == wb.keys()
    for k in wa:  # training weights and EMA shadows, UNet and text encoder
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_resuming_after_the_images_changed_warns_that_the_run_differs(tmp_path):
    cfg = tiny_config(**{"train.epochs": 2})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, n=4, goals=False), cfg)
    assert train(run.path, stop_after_steps=1) == 0
    make_project(tmp_path, n=6, goals=False)  # two more pictures in the same project
    assert train(run.path, resume=True) == 0
    (warning,) = [w for w in events(run, "warning") if "changed since checkpoint" in w["message"]]
    assert "e0000-s00000001" in warning["message"] and (warning["images_then"], warning["images_now"]) == (4, 6)
    assert events(run, "finished")


def test_control_files_save_sample_and_stop(tmp_path):
    cfg = tiny_config(**{"train.epochs": 5})
    cfg.sample.at_start = False
    cfg.save.last = False
    run = make_run(make_project(tmp_path), cfg)
    run.request("save-now")
    run.request("sample-now")  # served by the save's sample column
    calls = []
    real = loop.train_step

    def step_then_stop(s, micro_batches):
        calls.append(1)
        if len(calls) == 2:
            run.request("stop")
        return real(s, micro_batches)

    loop.train_step, saved = step_then_stop, loop.train_step
    try:
        assert train(run.path) == 0
    finally:
        loop.train_step = saved
    cks = events(run, "checkpoint")
    assert [(c["step"], c["reason"]) for c in cks] == [(1, "request"), (2, "request")]
    assert events(run, "stopped")[0] == {**events(run, "stopped")[0], "step": 2, "reason": "request"}
    assert [c[0] for c in run.sample_columns()] == ["e0000-s00000001", "e0001-s00000002"]
    assert not any((run.control_dir / name).exists() for name in ("stop", "save-now", "sample-now"))


def test_nothing_usable_is_an_error_listing_the_items(tmp_path):
    project = make_project(tmp_path, n=0, bad=2)
    run = make_run(project, tiny_config())
    assert train(run.path) == 1
    err = events(run, "error")[0]
    assert "no usable training images" in err["message"] and "broken1.png" in err["message"]
    assert not run.checkpoints_dir.exists()


def test_a_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(**{"train.epochs": 3, "train.log_every": 2})
    cfg.sample.at_start = False
    cfg.save.every_n_steps = 2
    run = make_run(make_project(tmp_path, goals=False), cfg)
    real = loop.compute_loss
    monkeypatch.setattr(loop, "compute_loss",
                        lambda s, b: real(s, b) * (float("nan") if s.position.step >= 2 else 1.0))
    assert train(run.path) == 1
    err = events(run, "error")[0]
    assert err["message"].startswith("loss became NaN at step 3; lower the learning rate")
    assert "checkpoints/e0001-s00000002" in err["message"]
    assert [c.path.name for c in run.checkpoints()] == ["e0001-s00000002"]
    weights = ckpt.read_state(run.checkpoints()[0].path).trainable
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_full_disk_during_a_save_leaves_earlier_checkpoints_and_no_partial_folder(tmp_path, monkeypatch):
    cfg = tiny_config(**{"train.epochs": 2})
    cfg.sample.at_start = False
    cfg.save.every_n_epochs = 1
    run = make_run(make_project(tmp_path, goals=False), cfg)
    real, calls = ckpt.write_state, []

    def failing(folder, **kw):
        calls.append(folder)
        if len(calls) == 2:
            (folder / "state").mkdir()
            (folder / "state" / "half.safetensors").write_bytes(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(folder, **kw)

    monkeypatch.setattr(ckpt, "write_state", failing)
    assert train(run.path) == 1
    err = events(run, "error")[0]
    assert "disk is full" in err["message"] and err["path"].endswith("checkpoints/e0002-s00000004")
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["e0001-s00000002"]
    assert run.checkpoints()[0].complete


def test_out_of_memory_names_the_settings_to_lower(tmp_path, monkeypatch):
    cfg = tiny_config()
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, goals=False), cfg)

    def oom(s, b):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop, "compute_loss", oom)
    assert train(run.path) == 1
    msg = events(run, "error")[0]["message"]
    for key in ("train.batch_size", "data.resolution", "train.gradient_checkpointing", "train.mixed_precision"):
        assert key in msg


def test_out_of_memory_while_sampling_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    from engine.train import sampling

    run = make_run(make_project(tmp_path), tiny_config(**{"train.epochs": 1}))

    def oom(**kw):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(sampling, "render_samples", oom)
    assert train(run.path) == 0
    assert any("out of memory while sampling" in w["message"] for w in events(run, "warning"))
    assert events(run, "finished")


def test_a_full_disk_while_writing_samples_is_a_warning_and_training_goes_on(tmp_path, monkeypatch):
    from engine import atomic

    run = make_run(make_project(tmp_path), tiny_config(**{"train.epochs": 1}))
    real = atomic.write_bytes

    def full_for_pngs(path, data):
        if str(path).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full_for_pngs)
    assert train(run.path) == 0
    warnings = [w for w in events(run, "warning") if "could not write the samples" in w["message"]]
    assert [w["checkpoint"] for w in warnings] == ["e0000-s00000000", "e0001-s00000002"]
    assert "No space left on device" in warnings[0]["message"] and warnings[0]["path"].endswith("p00-s0001.png")
    assert events(run, "finished") and run.latest_complete_checkpoint().step == 2


def test_an_unexpected_failure_is_an_error_event_naming_it(tmp_path, monkeypatch):
    cfg = tiny_config()
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, goals=False), cfg)

    def broken(s, b):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(loop, "compute_loss", broken)
    assert train(run.path) == 1
    (err,) = events(run, "error")
    assert err["message"] == ("the trainer failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied "
                              "(the traceback is in train.log)")


def test_the_time_budget_stops_gracefully_with_a_checkpoint(tmp_path):
    cfg = tiny_config(**{"train.epochs": 50, "budget.max_hours": 1e-9})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path, goals=False), cfg)
    assert train(run.path) == 0
    assert any(w.get("reason") == "budget" for w in events(run, "warning"))
    assert events(run, "stopped")[0]["reason"] == "budget" and events(run, "stopped")[0]["step"] == 1
    assert run.latest_complete_checkpoint().step == 1


def test_adamw8bit_without_bitsandbytes_fails_before_training(tmp_path):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    run = make_run(make_project(tmp_path, goals=False), tiny_config(**{"train.optimizer": "adamw8bit"}))
    assert train(run.path) == 1
    assert "bitsandbytes" in events(run, "error")[0]["message"]
    assert not events(run, "start")


def test_fp16_on_a_cpu_and_unknown_lora_targets_are_errors_naming_the_setting(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is fine on a GPU")
    run = make_run(make_project(tmp_path / "a", goals=False), tiny_config(**{"train.mixed_precision": "fp16"}))
    assert train(run.path) == 1
    assert events(run, "error")[0]["message"].startswith('train.mixed_precision = "fp16" needs a GPU')
    assert not events(run, "start")

    run = make_run(make_project(tmp_path / "b", goals=False), tiny_config(**{"lora.target_modules": ["to_qq"]}))
    assert train(run.path) == 1
    message = events(run, "error")[0]["message"]
    assert message.startswith("lora.target_modules = ['to_qq']: ") and "to_q, to_k, to_v and to_out.0" in message


def test_keep_last_prunes_old_checkpoints_but_not_listed_epochs_or_samples(tmp_path):
    cfg = tiny_config(**{"train.epochs": 4, "train.batch_size": 4})
    cfg.sample.at_start = False
    cfg.save.every_n_epochs = 1
    cfg.save.keep_last = 1
    cfg.save.epochs = [1]
    cfg.save.state = False
    cfg.save.formats = ["diffusers"]
    run = make_run(make_project(tmp_path), cfg)
    assert train(run.path) == 0
    assert [c.path.name for c in run.checkpoints()] == ["e0001-s00000001", "e0004-s00000004"]
    assert [e["path"] for e in events(run, "checkpoint_deleted")] == ["checkpoints/e0002-s00000002",
                                                                     "checkpoints/e0003-s00000003"]
    assert len(run.sample_columns()) == 4


def test_v_prediction_min_snr_noise_offset_accumulation_and_uncached_data_train(tmp_path):
    cfg = tiny_config(**{"model.prediction_type": "v_prediction", "train.min_snr_gamma": 5.0,
                         "train.noise_offset": 0.1, "train.gradient_accumulation": 2, "train.batch_size": 1,
                         "train.scheduler": "linear", "data.crop": "random", "data.cache_text": False,
                         "train.epochs": 1, "lora.train_text_encoder": True, "train.gradient_checkpointing": True})
    cfg.sample.at_start = False
    cfg.sample.scheduler = "euler_a"
    run = make_run(make_project(tmp_path, n=3), cfg)
    assert train(run.path) == 0
    assert any("random" in w["message"] for w in events(run, "warning"))
    assert events(run, "start")[0]["cache"] == {"latents": False, "text": False, "computed": 0}
    assert [p["step"] for p in events(run, "progress")] == [1, 2]  # 3 micro-batches, 2 per step
    assert len(list((run.samples_dir / "e0001-s00000002").glob("*.png"))) == 2


def test_bf16_mixed_precision_keeps_trained_weights_in_fp32(tmp_path):
    cfg = tiny_config(**{"train.epochs": 1, "train.mixed_precision": "bf16"})
    cfg.sample.at_start = False
    run = make_run(make_project(tmp_path), cfg)
    assert train(run.path) == 0
    state = ckpt.read_state(run.latest_complete_checkpoint().path)
    assert state.trainable and all(t.dtype == torch.float32 for t in state.trainable.values())
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in events(run, "progress"))
    assert len(list((run.samples_dir / "e0001-s00000002").glob("*.png"))) == 2


def test_a_missing_or_broken_config_is_an_error_event_not_a_traceback(tmp_path):
    run = make_run(make_project(tmp_path, goals=False), tiny_config())
    run.config_path.write_text("[train]\nlearning_rate = -1\n")
    assert train(run.path) == 1
    assert "train.learning_rate" in events(run, "error")[0]["message"]
    assert train(tmp_path / "nowhere") == 1


def test_captions_past_77_tokens_get_one_warning_at_start_with_the_real_count(tmp_path, capsys, tiny_base):
    from engine.tokencount import load_counter

    project = make_project(tmp_path, n=7, goals=False)
    long = "a red circle and " * 30  # 120 words
    for i in range(6):
        (project / "images" / f"img{i:02d}.txt").write_text(long + f"number {i}\n")
    cfg = tiny_config(**{"train.max_steps": 1, "train.epochs": 1})
    cfg.sample.at_start = False
    run = make_run(project, cfg)
    assert train(run.path) == 0

    (warning,) = [w for w in events(run, "warning") if w.get("reason") == "captions_truncated"]
    exact = load_counter(tiny_base / "tokenizer")([long + "number 0"])[0]
    assert exact > 75 and warning["count"] == 6
    assert warning["items"][0] == {"path": "images/img00.png", "tokens": exact}
    assert warning["message"].startswith(
        f"6 caption(s) are longer than the text encoder reads and are truncated to 77 CLIP tokens")
    assert f"images/img00.png ({exact} tokens)" in warning["message"] and "images/img04.png" in warning["message"]
    assert "images/img05.png" not in warning["message"] and "images/img06.png" not in warning["message"]  # first 5
    assert f"warning: 6 caption(s) are longer" in capsys.readouterr().out  # the train.log line
    kinds = [e["kind"] for e in events(run)]
    assert kinds.index("warning") < kinds.index("start")


def test_auto_mixed_precision_is_bf16_on_a_gpu_that_has_it_and_off_on_a_cpu(monkeypatch):
    import torch

    from engine.train.prepare import resolve_mixed_precision

    assert resolve_mixed_precision("auto", cuda=False) == "no"
    assert resolve_mixed_precision("fp16", cuda=False) == "fp16"  # an explicit choice is the user's
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_mixed_precision("auto", cuda=True) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_mixed_precision("auto", cuda=True) == "fp16"
