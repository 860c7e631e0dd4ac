"""Seeded randomness that stays inside the block that asked for it.

Module constructors (weight init) and dropout draw from torch's global generator: no torch API takes a
generator there. So a seeded step forks that generator (`torch.random.fork_rng`), seeds the fork and leaves
the caller's state exactly as it was: a library call never reseeds its caller's process. Everything that
can take a generator (`torch.randn`, numpy) is given a local one instead.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """torch's global generator seeded with `seed` inside the block (left as it is for None), and restored
    to the caller's state after it."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield
