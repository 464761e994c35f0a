"""Seeds for the purposes of a cell, derived from its seed and a name (benchopt's habit).

A cell has one seed; its training, each sampler's chunk k, its evaluation and its score error
each draw from a generator seeded by (seed, purpose...), so adding a sampler or resuming a
chunk never shifts another purpose's random stream.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *names: str) -> int:
    """A seed for one purpose of a cell: the cell seed plus what it is for."""
    digest = hashlib.sha256(":".join([str(int(seed)), *names]).encode()).digest()
    return int.from_bytes(digest[:7], "little")
