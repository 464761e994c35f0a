"""Which spec and source an intermediate file was made from, so a rerun keeps it or remakes it.

Snakemake decides on a job's outputs; inside a job, partial work (sample chunks, a group's finished
cells, a resume checkpoint) lives in files Snakemake does not know. Each is stamped with a digest
of the spec (and, where there is one, the source file's bytes) it was made for: a rerun reuses it
only when the stamp still matches, and never resumes another experiment's state.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from scorebench.results import write_text
from scorebench.specs import spec_digest, spec_json

log = logging.getLogger("scorebench")


def made_from(spec: dict, source_path) -> str:
    """A digest of what an output is made from: its spec and its source file's bytes (a sample
    chunk: the sample spec and the model; a retrained model under the same spec, e.g. on another
    GPU, must not mix its samples with the old one's)."""
    digest = hashlib.sha256(spec_json(spec).encode())
    with open(source_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_once(path: Path, spec: dict, source: Path, make) -> None:
    """Run `make` unless `path` exists with a stamp for this spec and source; then stamp it."""
    stamp = path.with_name(path.name + ".made_from")
    key = made_from(spec, source)
    if path.exists() and stamp.exists() and stamp.read_text() == key:
        log.info("kept %s (made earlier for the same spec and source)", path)
        return
    make()
    write_text(stamp, key)


def discard_foreign_checkpoint(out_dir: Path, spec: dict) -> None:
    """Keep a resume checkpoint only if it was made for this very spec.

    Snakemake reruns a cell's training when its spec changes (a preset edit); the checkpoint left by
    the old spec then belongs to another experiment and must not be resumed. The spec's hash is
    stamped beside the checkpoint when training starts.
    """
    ckpt, stamp = out_dir / "checkpoint.pt", out_dir / "checkpoint.spec"
    digest = spec_digest(spec)
    if ckpt.exists() and (not stamp.exists() or stamp.read_text().strip() != digest):
        log.warning("discarding %s: it was made for different settings; training starts from step 0", ckpt)
        ckpt.unlink()
    write_text(stamp, digest + "\n")
