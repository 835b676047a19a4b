"""A pseudo-terminal that answers the graphics probe's DA1 query late, as a terminal over a slow SSH
link does: shared by the TUI's probe tests and `tunelab doctor`'s."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import time


def run_on_a_slow_terminal(argv: list[str], reply: bytes | None, delay: float, *, env: dict[str, str],
                           cwd: str | os.PathLike) -> tuple[str, bytes]:
    """Run `argv` with a pty as stdin/stdout; once it asks for the DA1 answer (`ESC [ c`), write `reply`
    after `delay` seconds (None: never answer). Returns the child's stderr and what it wrote to the
    terminal; fails the test if the child does not exit 0."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=cwd, env=env)
    os.close(slave)
    received, answer_at = b"", None
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.02)[0]:
                try:
                    received += os.read(master, 4096)
                except OSError:
                    break
            if reply is not None and answer_at is None and b"\x1b[c" in received:
                answer_at = time.monotonic() + delay
            if answer_at is not None and time.monotonic() >= answer_at:
                os.write(master, reply)
                answer_at = float("inf")
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err.decode()
    return err.decode(), received
