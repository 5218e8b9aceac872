"""Interrupting a training run in-process, where a test would otherwise need ``kill -9`` (tests/test_resume.py
has the real kill)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import biomtl.train as loop


class _Killed(Exception):
    """Stands for the kill: raised between two optimizer steps."""


@contextmanager
def interrupted_after(steps: int) -> Iterator[None]:
    """``with interrupted_after(13): train(config)`` stops the run after its 13th optimizer step (and whatever
    that step writes: a checkpoint, say), as a kill just before the 14th would. The run must get that far."""
    real = loop.train_step
    done = 0

    def step(*args, **kwargs):
        nonlocal done
        if done == steps:
            raise _Killed
        done += 1
        return real(*args, **kwargs)

    loop.train_step = step
    try:
        yield
    except _Killed:
        return
    finally:
        loop.train_step = real
    raise AssertionError(f"the run ended after {done} steps, before it could be interrupted after {steps}")
