"""Shared fixtures. The tiny offline model is built once per machine, not once per test.

Tests (and the trainer processes they start, which inherit the environment) keep the tiny model in
`<repo>/.cache/tunelab-test/` unless `TUNELAB_CACHE` is already set, so a test run never writes into
the user's own cache and a second local run reuses the first build. The cache is keyed by
`engine.train.tiny.TINY_VERSION`; a clean checkout (CI) pays for one build.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TUNELAB_CACHE", str(REPO / ".cache" / "tunelab-test"))
# One intra-op thread per process (this worker and every trainer it starts): the suite runs two workers
# on two cores, and torch's default of one thread per core oversubscribes them; measured on the
# pivotal + process tests at load ~3: 71 s with the default, 45 s with one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The caption editor counts exactly once a config's base has its tokenizer on disk; the tiny model is
# built by whichever test needs it first, so TUI tests and snapshots keep the estimate unless they ask.
os.environ.setdefault("TUNELAB_CAPTION_TOKENS", "estimate")


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """The diffusers folder of the tiny SD 1.x model (seed 0), built on first use."""
    from engine.train.tiny import ensure_tiny

    return ensure_tiny()
