"""Import hygiene: the TUI and the light engine start fast — no torch, no diffusers; the engine never loads textual."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "diffusers", "transformers", "accelerate", "peft"]
# Every module directly in engine/ is light (engine/train/ is the heavy part), so a new one is checked
# too — but the BLIP captioner, which is torch by nature and imported only by `tunelab caption auto`.
HEAVY_ENGINE = {"engine.autocaption"}
LIGHT_ENGINE = sorted(f"engine.{p.stem}" for p in (REPO / "engine").glob("*.py")
                      if p.stem != "__init__" and f"engine.{p.stem}" not in HEAVY_ENGINE)
TUI = ["tui", "tui.cli", "tui.app"]

# Imports the modules one after another in one interpreter and records, for each, which of the watched
# top-level packages appeared with it — so one process names the first module that pulls a package in.
PROBE = """
import importlib, importlib.util, json, sys
watch, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
report = {}
for name in modules:
    try:
        if importlib.util.find_spec(name) is None:
            report[name] = None; continue
    except ModuleNotFoundError:
        report[name] = None; continue
    before = {m.split('.')[0] for m in sys.modules}
    importlib.import_module(name)
    report[name] = sorted({m.split('.')[0] for m in sys.modules} - before & set(watch))
print(json.dumps(report))
"""


def probe(modules: list[str], watch: list[str]) -> dict[str, list[str] | None]:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(watch), json.dumps(modules)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_light_engine_modules_load_neither_torch_nor_diffusers_nor_textual():
    report = probe(LIGHT_ENGINE, HEAVY + ["textual", "textual_image"])
    assert {m: pulled for m, pulled in report.items() if pulled} == {}


def test_the_tui_loads_neither_torch_nor_diffusers():
    report = probe(TUI, HEAVY)
    assert report["tui.cli"] is not None
    assert {m: pulled for m, pulled in report.items() if pulled} == {}


def loaded_by_cli(argv: list[str]) -> set[str]:
    code = ("import sys, tui.cli\ntry:\n    tui.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}))")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    line = next(ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--help"], ["check", "{project}"], ["caption", "{project}", "fixed", "x", "--dry-run"]])
def test_cli_commands_that_need_no_model_do_not_load_torch(tmp_path, argv):
    from tests.projectkit import write_image

    write_image(tmp_path / "p" / "a" / "1.png", caption="x")
    loaded = loaded_by_cli([a.replace("{project}", str(tmp_path / "p")) for a in argv])
    assert not loaded & set(HEAVY)


def test_check_with_a_config_counts_tokens_exactly_without_loading_torch(tmp_path, tiny_base):
    from tests.projectkit import write_image

    write_image(tmp_path / "p" / "a" / "1.png", caption="x")
    (tmp_path / "c.toml").write_text(f'[model]\nbase = "{tiny_base}"\n')
    loaded = loaded_by_cli(["check", str(tmp_path / "p"), str(tmp_path / "c.toml")])
    assert "tokenizers" in loaded  # the exact count ran
    assert not loaded & set(HEAVY)
