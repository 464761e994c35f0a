"""The job files some figures draw besides the table: samples .npz (whose cell is read from the
path) and score-field .npz files."""

from __future__ import annotations

from pathlib import Path

from scorebench.layout import cell_of_path
from scorebench.readers import read_meta, read_npz


def sample_cell(path) -> tuple[str, str, str, int, str]:
    """(dataset, schedule, objective, seed, sampler) of a samples/{sampler}.npz file."""
    _, dataset, schedule, objective, seed = cell_of_path(path, below=2)
    return dataset, schedule, objective, seed, Path(path).stem


def first_seed(items, key):
    """Keep, for every key(item) without its seed, the item of the smallest seed.

    `key(item)` returns (the item's key without the seed, its seed); the result is sorted by key.
    """
    best = {}
    for it in items:
        k, seed = key(it)
        if k not in best or seed < best[k][0]:
            best[k] = (seed, it)
    return [best[k][1] for k in sorted(best)]


def first_seed_samples(paths) -> list[Path]:
    """Of samples files, the first seed's of every (dataset, schedule, objective, sampler)."""
    return first_seed((Path(p) for p in paths), lambda p: (sample_cell(p)[:3] + (sample_cell(p)[4],), sample_cell(p)[3]))


def load_field(path) -> dict:
    """A score-field .npz as a dict of arrays plus its parsed `meta`."""
    out = read_npz(path, "score-field file")
    out["meta"] = read_meta(out, path, "score-field file")
    return out
