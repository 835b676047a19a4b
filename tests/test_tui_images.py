"""Image modes: an explicit mode never probes the terminal; `auto` does, before Textual starts."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.fake_terminal import run_on_a_slow_terminal

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


CHILD = textwrap.dedent("""
    import os, select, sys, time
    from tui.widgets import image_preview
    t = time.monotonic()  # the probe's own time, not the imports' (slow on a loaded machine)
    got = image_preview.prepare_image_mode(sys.argv[1], timeout=float(sys.argv[2]))
    took = time.monotonic() - t
    from textual_image import _terminal, renderable
    cell = _terminal.get_cell_size()
    # whatever the terminal sends after the probe would reach Textual as keys
    ready, _, _ = select.select([0], [], [], 0.5)
    leftover = os.read(0, 1024) if ready else b""
    probe = image_preview.LAST_PROBE
    sys.stderr.write(f"{got} {renderable.Image.__module__.rsplit('.', 1)[-1]} {cell.width}x{cell.height} "
                     f"{len(leftover)} {took:.2f} {probe.answered if probe else '-'}\\n")
""")


def fake_terminal(mode: str, reply: bytes | None, delay: float = 0.0, timeout: float = 2.0) -> tuple[list[str], bytes]:
    """Run prepare_image_mode(mode) on a pseudo-terminal that answers `reply` to the DA1 query after
    `delay` seconds (None: never answers). Returns the child's report and what it wrote to the terminal."""
    err, received = run_on_a_slow_terminal([sys.executable, "-c", CHILD, mode, str(timeout)], reply, delay,
                                           env={**os.environ, "TUNELAB_IMAGES": ""}, cwd=os.getcwd())
    return err.strip().splitlines()[-1].split(), received

KITTY = b"\x1b_Gi=31;OK\x1b\\\x1b[6;18;9t\x1b[?62;22c"
SIXEL = b"\x1b[6;20;10t\x1b[?62;4;22c"
PLAIN = b"\x1b[?1;2c"


@pytest.mark.parametrize("mode", ["halfblock", "kitty", "sixel"])
def test_an_explicit_mode_never_asks_the_terminal(mode):
    report, received = fake_terminal(mode, KITTY)
    got, chosen = report[0], report[1]
    # textual-image's own choice stays at its no-terminal fallback (unicode), and nothing was sent
    assert (got, chosen) == (mode, "unicode")
    assert b"\x1b[c" not in received and b"\x1b_G" not in received


@pytest.mark.parametrize("reply, expected, cell", [(KITTY, "kitty", "9x18"), (SIXEL, "sixel", "10x20"),
                                                   (PLAIN, "halfblock", "10x20")])
def test_auto_reads_the_terminals_answer_even_over_a_slow_link(reply, expected, cell):
    # 0.6 s round trip: textual-image's own 0.1 s probe gave up and left the reply to be read as keys
    report, received = fake_terminal("auto", reply, delay=0.6, timeout=10.0)
    got, _, cell_size, leftover, took, answered = report
    assert got == expected and answered == "True" and cell_size == cell
    assert leftover == "0"  # every byte of the reply was read by the probe, none is left for Textual
    assert 0.5 < float(took) < 5.0  # waited as long as the link needed, not the full (10 s) timeout
    assert received.count(b"\x1b[c") == 1  # one write: graphics query, cell size, DA1


def test_auto_gives_up_on_a_silent_terminal_within_its_timeout_and_says_so():
    report, _ = fake_terminal("auto", None, timeout=0.4)
    got, _, _, leftover, took, answered = report
    assert got == "halfblock" and answered == "False" and float(took) < 1.5


def test_the_app_says_when_the_terminal_did_not_answer(tmp_path, monkeypatch):
    import asyncio

    from tests.test_tui_support import wait_for
    from tui.app import make_app
    from tui.graphics_probe import ProbeResult
    from tui.widgets import image_preview

    monkeypatch.setattr(image_preview, "LAST_PROBE", ProbeResult(
        "halfblock", False, 2.0, "the terminal did not answer within 2 s; showing half-blocks "
        "(--images or TUNELAB_IMAGES skips the question)"))

    async def run():
        app = make_app(tmp_path, images="halfblock", watch=False, animations=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: bool(app._notifications))
            return [str(n.message) for n in app._notifications]

    messages = asyncio.run(run())
    assert any("did not answer within 2 s" in m and "--images" in m for m in messages)
