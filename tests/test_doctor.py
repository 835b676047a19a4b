"""`tunelab doctor`: a report that never hangs or fails on a bare box, and honours TUNELAB_IMAGES."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

from tests.fake_terminal import run_on_a_slow_terminal

REPO = Path(__file__).resolve().parent.parent


def doctor(*argv: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TUNELAB_IMAGES"}
    full_env.update(TUNELAB_NO_GPU="1", **env)
    code = ("import sys, tui.cli; rc = tui.cli.main(sys.argv[1:]); "
            "print('TORCH_LOADED' if 'torch' in sys.modules else '', file=sys.stderr); sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "doctor", *argv], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_doctor_reports_every_section_without_a_terminal_or_gpu_and_without_importing_torch():
    r = doctor()
    assert r.returncode == 0, r.stderr
    keys = [line.split()[0] for line in r.stdout.splitlines()]
    assert keys == ["images", "colours", "terminal", "gpu", "torch", "diffusers", "transformers", "accelerate", "disk"]
    assert "not a terminal" in r.stdout
    assert next(l for l in r.stdout.splitlines() if l.startswith("gpu")).split()[1] == "none"
    assert "TORCH_LOADED" not in r.stderr


def test_tunelab_images_overrides_detection_and_an_invalid_value_is_reported():
    r = doctor("--json", TUNELAB_IMAGES="sixel")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["images"] == "sixel" and data["images_how"] == "from TUNELAB_IMAGES"
    r = doctor("--json", TUNELAB_IMAGES="holograms")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["images"] == "invalid" and "holograms" in data["images_how"]


def test_doctor_json_has_versions_accelerate_config_and_disk(tmp_path):
    (tmp_path / "hf" / "accelerate").mkdir(parents=True)
    (tmp_path / "hf" / "accelerate" / "default_config.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    r = doctor("--json", "--projects-dir", str(tmp_path / "not" / "yet"), HF_HOME=str(tmp_path / "hf"))
    data = json.loads(r.stdout)
    from importlib.metadata import version
    assert data["torch"] == version("torch") and data["accelerate"] == version("accelerate")
    assert data["accelerate_config"] == str(tmp_path / "hf" / "accelerate" / "default_config.yaml")
    assert data["disk_path"] == str(tmp_path) and data["disk_free_bytes"] > 0
    assert data["gpu"] == ["none"]


def test_colours_through_a_pipe_say_what_the_terminal_would_get():
    r = doctor("--json", TERM="xterm-256color", COLORTERM="truecolor")
    data = json.loads(r.stdout)
    assert data["colours"] == "truecolor" and "not a terminal" in data["colours_how"]
    r = doctor(TERM="xterm-256color", COLORTERM="")
    assert "colours       256  (from TERM/COLORTERM" in r.stdout


DOCTOR_CHILD = ("import json, sys\nfrom tui.commands import doctor\n"
                "sys.stderr.write(json.dumps(doctor.report()) + '\\n')\n")


def doctor_on_a_terminal(reply: bytes | None, delay: float, tmp_path, **env: str) -> dict:
    """`doctor.report()` on a pseudo-terminal that answers `reply` to the DA1 query after `delay` s."""
    full_env = {k: v for k, v in os.environ.items() if k != "TUNELAB_IMAGES"}
    full_env.update(TUNELAB_NO_GPU="1", TUNELAB_SETTINGS=str(tmp_path / "none.toml"), **env)
    err, _ = run_on_a_slow_terminal([sys.executable, "-c", DOCTOR_CHILD], reply, delay, env=full_env, cwd=REPO)
    return json.loads(err.strip().splitlines()[-1])

def test_doctor_asks_the_terminal_with_the_tuis_probe_and_waits_for_a_slow_link(tmp_path):
    # 0.5 s round trip: textual-image's 0.1 s probe would have said half blocks on this kitty terminal.
    data = doctor_on_a_terminal(b"\x1b_Gi=31;OK\x1b\\\x1b[6;18;9t\x1b[?62;22c", 0.5, tmp_path)
    assert data["images"] == "kitty"
    answered = re.match(r"asked the terminal: it answered in ([\d.]+) ?s", data["images_how"])
    assert answered and float(answered.group(1)) >= 0.4, data["images_how"]  # it waited for the slow link
    assert "cells 9x18 px" in data["images_how"]
    sixel = doctor_on_a_terminal(b"\x1b[?62;4;22c", 0.5, tmp_path)
    assert sixel["images"] == "sixel"


def test_doctor_reports_the_settings_files_mode_as_the_tui_uses_it(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text('images = "none"\n')
    r = doctor("--json", TUNELAB_SETTINGS=str(settings))
    data = json.loads(r.stdout)
    assert data["images"] == "none" and data["images_how"] == f"from the settings file {settings}"
