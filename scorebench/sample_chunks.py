"""Resumable sampling: chains drawn in chunks, each chunk a file, so a killed job loses one chunk at most.

A sample job of n chains runs them `size` at a time. Chunk k is written to `<out>.chunks/` the
moment it is drawn, with the key (spec + model digest, scorebench.stamps.made_from) it was drawn
under; a rerun keeps the chunks whose key, index and count still match and draws only the rest.
SIGTERM/SIGUSR1 (SLURM's warnings) stop the loop after the current chunk with `Preempted`. The
caller seeds chunk k's generator from (cell seed, sampler, k), so a resumed job writes exactly the
samples of an uninterrupted one. `size` is the config's `batch_size`, or "auto": as many chains as
fit in a share of the free GPU memory, measured on a probe batch.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

from scorebench.errors import Preempted, ScorebenchError
from scorebench.results import atomic_path, write_json
from scorebench.signals import StopOnSignal

log = logging.getLogger("scorebench")

SAMPLE_CHUNK_CPU = 5000  # `batch_size: auto` on a CPU: memory is rarely the limit there
AUTO_PROBE = 256  # chains in the probe batch that measures a score evaluation's memory per sample
AUTO_MEMORY_SHARE = 0.5  # share of free GPU memory a chunk may fill (the rest: allocator slack, neighbours)
SAMPLER_COPIES = 4  # buffers of a sample's size the sampler keeps besides the model's: start, chain, noise, score
PROGRESS_EVERY_S = 30.0  # rule logs are files: a progress line at most this often (plus the first and last)
CHUNK_MANIFEST = "chunks.json"
SNAPSHOT_KEYS = ("snapshots", "snapshot_level", "snapshot_step")


def chunk_path(chunk_dir: Path, k: int) -> Path:
    return chunk_dir / f"chunk_{k:05d}.npz"


def resumable_chunk_size(chunk_dir: Path, key: str) -> int | None:
    """The chunk size of chunks left by an earlier run for the same key; otherwise the folder is
    cleared (its chunks belong to other settings or another model) and None is returned."""
    try:
        manifest = json.loads((chunk_dir / CHUNK_MANIFEST).read_text())
        if manifest["key"] == key and int(manifest["chunk_size"]) >= 1:
            return int(manifest["chunk_size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if chunk_dir.exists():
        log.warning("discarding %s: its chunks were drawn for different settings or another model", chunk_dir)
        shutil.rmtree(chunk_dir)
    return None


def read_chunk_info(path: Path, key: str, k: int, n: int) -> dict | None:
    """A finished chunk's record if `path` holds chunk k of `n` samples drawn under `key`, else None."""
    import numpy as np

    try:
        with np.load(path) as z:
            info = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError):
        return None
    ok = info.get("key") == key and info.get("chunk") == k and info.get("n") == n
    return info if ok else None


def chunk_size(batch_size, n: int, score_fn, shape, sigma: float, device) -> int:
    """Chains per chunk: `batch_size`, or for "auto" SAMPLE_CHUNK_CPU on a CPU and, on CUDA, as many
    as fit in AUTO_MEMORY_SHARE of free memory at the peak memory per sample of one score evaluation
    of a probe batch (plus the sampler's own SAMPLER_COPIES buffers)."""
    import torch

    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ScorebenchError(f"sampling batch_size: need a positive integer or 'auto', got {batch_size!r}")
        return min(n, batch_size)
    if device.type != "cuda":
        return min(n, SAMPLE_CHUNK_CPU)
    probe = min(n, AUTO_PROBE)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.rand((probe, *shape), device=device)
    score_fn(x, torch.full((probe,), sigma, device=device))
    torch.cuda.synchronize(device)
    per_sample = (torch.cuda.max_memory_allocated(device) - base) / probe + SAMPLER_COPIES * x[0].numel() * 4
    del x
    size = max(1, min(n, int(AUTO_MEMORY_SHARE * free / per_sample)))
    log.info("batch_size auto: %d chains per chunk (%.0f MiB free, %.2f MiB per chain)", size, free / 2**20,
             per_sample / 2**20)  # fmt: skip
    return size


def plan_chunks(chunk_dir: Path, key: str, n: int, choose_size) -> int:
    """The chunk size: the one earlier chunks of the same key were drawn with, else `choose_size()`
    (recorded in the folder's manifest, so every run of this key cuts the chains the same way)."""
    size = resumable_chunk_size(chunk_dir, key)
    if size is None:
        size = choose_size()
        write_json(chunk_dir / CHUNK_MANIFEST, {"key": key, "chunk_size": size})
    return size


def draw_chunks(chunk_dir: Path, key: str, n: int, size: int, draw) -> dict:
    """Draw the missing chunks of n chains (`draw(k, m)` -> (samples, info, extra arrays)), then
    read all of them back as one array.

    Returns:
        {"samples": (n, ...) float32, "infos": each chunk's record, "snapshots": chunk 0's snapshot
        arrays, "n_chunks", "resumed_chunks"}; the chunk folder is left for the caller to remove once
        its final file is written.
    """
    import numpy as np

    n_chunks = math.ceil(n / size)
    sizes = [min(size, n - k * size) for k in range(n_chunks)]
    todo = [k for k in range(n_chunks) if read_chunk_info(chunk_path(chunk_dir, k), key, k, sizes[k]) is None]
    if len(todo) < n_chunks:
        log.info("resuming: %d of %d chunks of %d samples already drawn", n_chunks - len(todo), n_chunks, size)
    else:
        log.info("sampling %d samples in %d chunk(s) of %d", n, n_chunks, size)
    t_start = t_log = time.perf_counter()
    drawn = 0
    with StopOnSignal() as stop:
        for i, k in enumerate(todo):
            t0 = time.perf_counter()
            samples, info, extra = draw(k, sizes[k])
            info = {"key": key, "chunk": k, "n": sizes[k], **info, "wall_s": time.perf_counter() - t0}
            with atomic_path(chunk_path(chunk_dir, k)) as tmp, open(tmp, "wb") as fh:
                # uncompressed: a chunk lives only until the final file is written
                np.savez(fh, samples=samples, meta=np.array(json.dumps(info)), **extra)
            drawn += sizes[k]
            now = time.perf_counter()
            if i == 0 or i + 1 == len(todo) or now - t_log >= PROGRESS_EVERY_S:
                rate = drawn / max(now - t_start, 1e-9)
                left = sum(sizes[j] for j in todo[i + 1 :])
                log.info("sampled chunk %d/%d: %.1f samples/s, %d samples (%.0f s) left", k + 1, n_chunks, rate,
                         left, left / rate)  # fmt: skip
                t_log = now
            if stop.requested and i + 1 < len(todo):
                raise Preempted(
                    f"sampling stopped by {stop.name} after chunk {k + 1}/{n_chunks}; rerun to resume from {chunk_dir}"
                )
    samples, infos, snaps = None, [], {}
    for k in range(n_chunks):
        with np.load(chunk_path(chunk_dir, k)) as z:
            part = z["samples"]
            if samples is None:
                samples = np.empty((n, *part.shape[1:]), dtype=np.float32)
            samples[k * size : k * size + sizes[k]] = part
            infos.append(json.loads(str(z["meta"])))
            if k == 0:
                snaps = {name: z[name] for name in SNAPSHOT_KEYS if name in z}
    return {"samples": samples, "infos": infos, "snapshots": snaps, "n_chunks": n_chunks,
            "resumed_chunks": n_chunks - len(todo)}  # fmt: skip
