"""Keeps background work out of timed regions: a host-wide lock that timed generation holds shared and work done
ahead of time (a warm kernel preparing the next trial) takes exclusively, one short step at a time.

    with fence.timed():         # trial: warm-up and timed batches (any number of trials may time at once)
        ...
    with fence.background():    # a warm kernel's preparation step: waits until no trial on this host is timing
        ...

Both are no-ops unless $WORKBENCH_TIMING_FENCE names the lock file (the warm-kernel executor sets it for every
kernel it starts), so in-process and cold-kernel trials time exactly as before. A POSIX `flock`, so a process that
dies releases its hold. Imports no torch.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time

ENV = "WORKBENCH_TIMING_FENCE"
BACKGROUND_WAIT_S = 120.0  # a preparation step waits at most this long for a gap between timed regions, then runs


@contextlib.contextmanager
def _held(mode: int, wait_s: float | None):
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    with open(path, "a") as f:
        if wait_s is None:
            fcntl.flock(f, mode)
        else:  # polled, so that timed regions overlapping one another never starve a step for good
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(f, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def timed():
    """Hold the fence shared for a timed region: waits for a background step in progress to end (at most one step)."""
    return _held(fcntl.LOCK_SH, None)


def background(wait_s: float = BACKGROUND_WAIT_S):
    """Hold the fence exclusively for one step of background work: waits until no trial on this host is timing."""
    return _held(fcntl.LOCK_EX, wait_s)
