"""Image modes: an explicit mode never probes the terminal; `auto` does, before Textual starts."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

import pytest

from tui.widgets.image_preview import requested_mode

def test_mode_precedence_cli_then_env_then_settings(monkeypatch):
    monkeypatch.delenv("TUNELAB_IMAGES", raising=False)
    assert requested_mode(None, {}) == "auto"
    assert requested_mode(None, {"images": "sixel"}) == "sixel"
    monkeypatch.setenv("TUNELAB_IMAGES", "none")
    assert requested_mode(None, {"images": "sixel"}) == "none"
    assert requested_mode("halfblock", {"images": "sixel"}) == "halfblock"
    monkeypatch.setenv("TUNELAB_IMAGES", "bogus")
    with pytest.raises(ValueError, match="accepted: auto, kitty, sixel, halfblock, none"):
        requested_mode(None, {})


def _run_on_a_tty(mode: str) -> str:
    """Run prepare_image_mode with stdout on a pseudo-terminal that never answers; report what happened."""
    code = textwrap.dedent(f"""
        import sys, time
        t = time.monotonic()
        from tui.widgets.image_preview import prepare_image_mode
        got = prepare_image_mode({mode!r})
        from textual_image import renderable
        sys.stderr.write(f"{{got}} {{renderable.Image.__module__.rsplit('.', 1)[-1]}} {{time.monotonic() - t:.2f}}\\n")
    """)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                              timeout=60, cwd=os.getcwd(), env={**os.environ, "TUNELAB_IMAGES": ""})
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stderr.decode().strip().splitlines()[-1]


@pytest.mark.parametrize("mode", ["halfblock", "kitty", "sixel"])
def test_an_explicit_mode_never_asks_the_terminal(mode):
    got, chosen, _ = _run_on_a_tty(mode).split()
    # textual-image's own choice stays at its no-terminal fallback (unicode): it never sent a query
    assert (got, chosen) == (mode, "unicode")


def test_auto_asks_the_terminal_and_falls_back_to_half_blocks():
    # the pseudo-terminal never answers the queries: textual-image falls back to half cells on a tty
    got, chosen, _ = _run_on_a_tty("auto").split()
    assert (got, chosen) == ("halfblock", "halfcell")
