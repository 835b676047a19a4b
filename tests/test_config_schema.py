"""Run configs (engine.config over engine.schema): every mistake named with file, line, key and what is accepted."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine.config import (RunConfig, default_config, dump_config, load_run_config, parse_run_config,
                           reference_markdown, sample_prompts)
from engine.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent


def errors(tmp_path: Path, text: str, overrides=()) -> list[str]:
    path = tmp_path / "lora.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_run_config(path, overrides)
    return [str(p) for p in e.value.problems]


def test_an_empty_config_is_all_defaults(tmp_path):
    (tmp_path / "c.toml").write_text("")
    assert load_run_config(tmp_path / "c.toml") == RunConfig()


def test_invalid_toml_reports_file_line_and_column(tmp_path):
    (msg,) = errors(tmp_path, '[train]\nepochs = 3\nlearning_rate = \n')
    assert msg.startswith(f"{tmp_path / 'lora.toml'}:3:") and "invalid TOML" in msg
    line_col = msg.split(": ", 1)[0].rsplit(":", 2)[1:]
    assert line_col[0] == "3" and line_col[1].isdigit()


def test_unknown_keys_get_a_did_you_mean(tmp_path):
    msgs = errors(tmp_path, '[train]\nlearning_rat = 1e-4\n[sampel]\nsteps = 3\n')
    assert f"{tmp_path / 'lora.toml'}:2: train.learning_rat: unknown key; did you mean 'learning_rate'?" in msgs
    assert any(m.endswith("sampel: unknown key; did you mean 'sample'?") and ":3:" in m for m in msgs)


def test_wrong_types_and_ranges_name_key_value_and_what_is_accepted(tmp_path):
    msgs = errors(tmp_path, 'method = "lorra"\n[train]\nlearning_rate = -1\nbatch_size = 1.5\n'
                            'mixed_precision = "fp8"\ngradient_checkpointing = "yes"\n[data]\nresolution = 0\n')
    f = tmp_path / "lora.toml"
    assert f"{f}:1: method = 'lorra': must be one of 'lora', 'full', 'dreambooth', 'textual_inversion', 'pivotal' " \
           "(did you mean 'lora'?)" in msgs
    assert f"{f}:3: train.learning_rate = -1: must be > 0" in msgs
    assert f"{f}:4: train.batch_size = 1.5: must be a whole number" in msgs
    assert any(m.startswith(f"{f}:5: train.mixed_precision = 'fp8': must be one of") for m in msgs)
    assert f"{f}:6: train.gradient_checkpointing = 'yes': must be true or false" in msgs
    assert f"{f}:8: data.resolution = 0: must be between 8 and 4096" in msgs
    assert len(msgs) == 6  # every problem of the file at once


def test_cross_field_rules_point_at_the_key_to_fix(tmp_path):
    msgs = errors(tmp_path, 'method = "dreambooth"\n[train]\nepochs = 10\n[save]\nepochs = [5, 20]\n')
    assert any("dreambooth.class_prompt: is required when dreambooth.prior_preservation = true" in m for m in msgs)
    assert any(":5: save.epochs = [20]: each must be between 1 and train.epochs (10)" in m for m in msgs)


def test_a_shorter_train_epochs_from_set_names_the_save_list_and_the_one_command_that_fixes_both(tmp_path):
    text = "[train]\nepochs = 10\n[save]\nepochs = [1, 3]\n"
    msgs = errors(tmp_path, text, ["train.epochs=1"])
    assert msgs == [f"{tmp_path / 'lora.toml'}:4: save.epochs = [3]: each must be between 1 and train.epochs (1); keep "
                    "those that fit, save.epochs = [1], or raise train.epochs to 3 (with --set train.epochs=1, add "
                    "--set 'save.epochs=[1]' to the same command)"]
    cfg = load_run_config(tmp_path / "lora.toml", ["train.epochs=1", "save.epochs=[1]"])  # the hint, followed
    assert (cfg.train.epochs, cfg.save.epochs) == (1, [1])
    assert "--set" not in errors(tmp_path, "[train]\nepochs = 2\n[save]\nepochs = [1, 3]\n")[0]  # no --set: none


def test_overrides_apply_as_toml_values_and_are_validated(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 3\n")
    cfg = load_run_config(path, ["train.epochs=20", "train.learning_rate=3e-4", "description=hello world"])
    assert (cfg.train.epochs, cfg.train.learning_rate, cfg.description) == (20, 3e-4, "hello world")
    msgs = errors(tmp_path, "", ["train.epochs=0", "nonsense"])
    assert any("train.epochs = 0: must be between 1 and 100000" in m and "--set" in m for m in msgs)
    assert any(m.startswith("--set: nonsense") for m in msgs)


def test_sample_prompts_default_to_the_goals_in_kind_order_with_section_defaults():
    cfg = default_config("lora")
    got = sample_prompts(cfg, {"preservation": ["a red car"], "accuracy": ["sks dog"]})
    assert [(p.text, p.kind, p.seeds, p.steps) for p in got] == [("sks dog", "accuracy", [42], 20),
                                                                 ("a red car", "preservation", [42], 20)]
    cfg = parse_run_config('[sample]\nprompts = ["x", {text = "y", seeds = [1, 2], kind = "flexibility"}]\n')
    assert [(p.text, p.kind, p.seeds) for p in sample_prompts(cfg, {"accuracy": ["ignored"]})] == \
        [("x", "other", [42]), ("y", "flexibility", [1, 2])]


@pytest.mark.parametrize("method", ["lora", "full", "dreambooth", "textual_inversion", "pivotal"])
def test_a_dumped_config_loads_back_to_the_same_config(method):
    cfg = default_config(method)
    if method == "dreambooth":
        cfg.dreambooth.class_prompt = "a dog"
    text = dump_config(cfg)
    tomllib.loads(text)
    assert parse_run_config(text) == cfg


def test_docs_config_md_is_the_generated_reference():
    out = subprocess.run([sys.executable, "-m", "engine.config", "--docs"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out == reference_markdown()
    assert (REPO / "docs" / "config.md").read_text() == out, \
        "regenerate: python -m engine.config --docs > docs/config.md"


@pytest.mark.parametrize("text, where, says", [
    ('[train]\nscheduler = cosine\n', ":2:13:", 'Invalid value (text needs quotes: scheduler = "cosine")'),
    ('[data]\nflip = True\n', ":2:8:", "true and false are lower case in TOML"),
    ('[train]\nepochs = 5\n\nepochs = 6\n', ":4:", "Cannot overwrite a value (train.epochs is already on line 2)"),
    ('[train]\nepochs = 5\nseed = 1\nepochs = 6', ":4", "train.epochs is already on line 2"),  # last line: tomllib gives no position
    ('[save]\nepochs = [1, 2\n[train]\nseed = 1\n', ":3:1:", "Unclosed array (the array opened on line 2 is never closed)"),
    ('description = "a run\nmethod = "lora"\n', ":1:", "a string on this line has no closing quote"),
    ('[sample]\nprompts = ["a cat"]\n[sample]\nseeds = [1]\n', ":3:", "is already on line 1"),
])
def test_toml_syntax_errors_point_at_the_line_and_say_what_to_fix(tmp_path, text, where, says):
    (msg,) = errors(tmp_path, text)
    assert msg.startswith(str(tmp_path / "lora.toml") + where) and "invalid TOML" in msg and says in msg, msg


def test_a_section_with_one_bad_key_still_has_its_other_keys_checked_across_sections(tmp_path):
    msgs = errors(tmp_path, '[sample]\nwidth = 513\nprompts = ["a", 3]\n[data]\nresolution = 100\n')
    f = tmp_path / "lora.toml"
    assert msgs == [  # in file order, all in one pass
        f"{f}:2: sample.width = 513: must be a multiple of 8 (or 0: data.resolution), e.g. 512",
        f"{f}:3: sample.prompts.1 = 3: must be a string or a table, got a whole number",
        f"{f}:5: data.resolution = 100: must be a multiple of 8 (the VAE works in 8-pixel blocks), e.g. 96",
    ]


def test_a_key_in_the_wrong_section_says_where_it_belongs(tmp_path):
    msgs = errors(tmp_path, 'learning_rate = 1e-4\n[train]\nresolution = 512\nmethod = "full"\n[data]\nrepeats = 3\n')
    f = tmp_path / "lora.toml"
    assert msgs[:3] == [
        f"{f}:1: learning_rate: unknown key; it belongs in [train]: train.learning_rate",
        f"{f}:3: train.resolution: unknown key; it belongs in [data]: data.resolution",
        f"{f}:4: train.method: unknown key; it belongs at the top of the file, before any [section]: method",
    ]
    assert msgs[3].startswith(f"{f}:6: data.repeats: unknown key; accepted keys: cache_latents")
