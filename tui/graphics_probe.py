"""Asking the terminal which image protocol it speaks (`--images auto`), without a fixed short timeout.

textual-image asks with two queries and 0.1 s for each answer. Over SSH with a round trip longer than
that, the answer comes late: the app then picks half-blocks on a terminal that has kitty graphics, and
the late reply (`ESC _ G … ; OK ESC \\`) reaches Textual as keystrokes (`3`, `K`, …) once it runs.

This probe sends the kitty graphics query, a cell-size query and then a DA1 request (`ESC [ c`) in
one write. Every
terminal answers DA1, and answers in order, so the DA1 reply marks the end: a graphics reply before
it means kitty graphics, a `4` among DA1's attributes means sixel. The wait is as long as the link
needs and at most `timeout` seconds (a terminal that does not answer at all); both replies are read
here, so nothing is left over for Textual. It runs before Textual takes over the terminal. An
explicit mode (`--images`, `TUNELAB_IMAGES`, the settings file) skips it entirely.
"""
from __future__ import annotations

import os
import re
import select
import sys
import time
from dataclasses import dataclass

TGP_START = b"\x1b_G"
ST = b"\x1b\\"
# A 1x1 RGB image, query only (a=q): the terminal answers OK or an error and stores nothing.
TGP_QUERY = b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"
CELL_QUERY = b"\x1b[16t"  # cell size in pixels: ESC [ 6 ; height ; width t
DA1_QUERY = b"\x1b[c"
DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class ProbeResult:
    mode: str            # kitty, sixel or halfblock
    answered: bool       # False: no DA1 reply within the timeout
    seconds: float
    reason: str = ""
    cell: tuple[int, int] | None = None  # (width, height) of a cell in pixels, if the terminal said


def parse_cell(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a `ESC [ 6 ; height ; width t` reply, if there is one."""
    m = re.search(rb"\x1b\[6;(\d+);(\d+)t", data)
    if m and int(m.group(1)) > 0 and int(m.group(2)) > 0:
        return int(m.group(2)), int(m.group(1))
    return None


def parse_replies(data: bytes) -> tuple[bool, bool, bool]:
    """(kitty, sixel, complete) from the bytes read so far; complete once the DA1 reply is in."""
    kitty = False
    start = data.find(TGP_START)
    if start >= 0:
        end = data.find(ST, start)
        if end >= 0:
            kitty = data[start + len(TGP_START):end].rsplit(b";", 1)[-1] == b"OK"
    da1 = data.find(b"\x1b[?")
    while da1 >= 0:
        end = da1 + 3
        while end < len(data) and data[end:end + 1] in b"0123456789;":
            end += 1
        if end < len(data) and data[end:end + 1] == b"c":
            attributes = data[da1 + 3:end].split(b";")
            return kitty, b"4" in attributes, True
        da1 = data.find(b"\x1b[?", da1 + 1)
    return kitty, False, False


def probe(timeout: float = DEFAULT_TIMEOUT, stdin_fd: int | None = None, stdout_fd: int | None = None) -> ProbeResult:
    """Ask the terminal on stdin/stdout; halfblock when it is not a terminal or does not answer in time."""
    t0 = time.monotonic()
    try:
        import termios
        import tty
    except ImportError:  # Windows: no termios; half-blocks work everywhere
        return ProbeResult("halfblock", False, 0.0, "no termios on this platform")
    in_fd = sys.__stdin__.fileno() if stdin_fd is None and sys.__stdin__ else stdin_fd
    out_fd = sys.__stdout__.fileno() if stdout_fd is None and sys.__stdout__ else stdout_fd
    if in_fd is None or out_fd is None or not (os.isatty(in_fd) and os.isatty(out_fd)):
        return ProbeResult("halfblock", False, 0.0, "not a terminal")
    saved = termios.tcgetattr(in_fd)
    data = b""
    try:
        tty.setcbreak(in_fd, termios.TCSANOW)  # no echo, no line buffering: read the reply as it comes
        os.write(out_fd, TGP_QUERY + CELL_QUERY + DA1_QUERY)
        deadline = t0 + timeout
        while True:
            kitty, sixel, complete = parse_replies(data)
            if complete:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([in_fd], [], [], left)
            if not ready:
                break
            chunk = os.read(in_fd, 1024)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        return ProbeResult("halfblock", False, time.monotonic() - t0, f"cannot ask the terminal: {e}")
    finally:
        termios.tcsetattr(in_fd, termios.TCSANOW, saved)
    seconds = time.monotonic() - t0
    if not complete:
        return ProbeResult("halfblock", False, seconds,
                           f"the terminal did not answer within {timeout:g} s; showing half-blocks "
                           "(--images or TUNELAB_IMAGES skips the question)")
    mode = "kitty" if kitty else ("sixel" if sixel else "halfblock")
    return ProbeResult(mode, True, seconds, cell=parse_cell(data))
