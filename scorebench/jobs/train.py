"""Training jobs: one cell into its folder, or the cells of a pack in one process into the pack's.

Each job holds its folder's lock while it runs (scorebench.lock: a duplicate job for the same cell
or pack stops at once), and once the model file is written it removes its resume files
(checkpoint.pt and its spec stamp): a killed job keeps them and its rerun resumes, a finished one
leaves only its outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from scorebench.clock import log_ready
from scorebench.components import Components
from scorebench.lock import exclusive
from scorebench.seeds import derive_seed
from scorebench.stamps import discard_foreign_checkpoint

log = logging.getLogger("scorebench")


def train_job(spec: dict, out_dir) -> dict:
    """Train one cell (or write the oracle's marker) into out_dir/model.pt; resumes a killed run."""
    out_dir = Path(out_dir)
    with exclusive(out_dir, what=f"train {spec['cell']}"):
        result = _train_cell(spec, out_dir)
        if result["step"] > 0:
            _settle_cell(out_dir)
    return result


def _train_cell(spec: dict, out_dir: Path) -> dict:
    from scorebench.checkpoint import save_atomic
    from scorebench.device import device_description
    from scorebench.train import train

    c = Components(spec)
    log.info("cell %s: dataset %s %s, %d σ levels", spec["cell"], c.dataset.name, c.dataset.shape, c.schedule.levels)
    if spec["objective"]["kind"] == "imported":
        return _import_cell(spec, c, out_dir)
    if c.is_oracle:
        save_atomic(
            {
                "model_config": {"arch": "oracle"},
                "step": 0,
                "sigmas": c.schedule.sigmas,
                "wall_s": 0.0,
                "device": device_description(c.device),
            },
            out_dir / "model.pt",
        )
        (out_dir / "train_log.jsonl").write_text("")
        return {"step": 0, "wall_s": 0.0}
    model, loss, settings = c.new_model(), c.loss, c.settings
    discard_foreign_checkpoint(out_dir, spec)
    log_ready(log, "training")
    result = train(model, loss, c.dataset.train, c.schedule, settings, out_dir)
    return {"step": result.step, "wall_s": result.wall_s}


def _import_cell(spec: dict, c: Components, out_dir: Path) -> dict:
    """An imported cell: the authors' released weights as its model.pt, checked against its schedule's
    σ list and model preset; its train log is one record naming the file and its step."""
    from scorebench.models.import_authors import import_checkpoint
    from scorebench.results import write_text

    path = spec["objective"]["checkpoint"]
    summary = import_checkpoint(path, out_dir / "model.pt", arch=spec["model"]["arch"], preset=spec["model"]["preset"],
                                shape=c.dataset.shape, sigmas=c.schedule.sigmas.tolist())  # fmt: skip
    record = {"step": int(summary["step"] or 0), "imported_from": str(path), "ema": summary["ema"]}
    write_text(out_dir / "train_log.jsonl", json.dumps(record) + "\n")
    log.info("cell %s: imported %s (step %s, EMA %s)", spec["cell"], path, summary["step"], summary["ema"])
    return {"step": 0, "wall_s": 0.0}  # nothing trained here: no resume files to settle


def train_pack_job(spec: dict, out_dir, resume_dir) -> dict:
    """Train the members of a pack (Study.pack_spec) in one process into out_dir/{member}/ (model.pt,
    train_log.jsonl each); the resume checkpoint lives in `resume_dir`, outside the job's output, so a
    killed job resumes from it."""
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    with exclusive(resume_dir, what=f"train-pack {spec['pack']}"):
        result = _train_pack(spec, out_dir, resume_dir)
        _remove_resume_files(resume_dir)
    try:
        resume_dir.rmdir()  # empty once the lock is released
    except OSError:
        pass
    return result


def _train_pack(spec: dict, out_dir: Path, resume_dir: Path) -> dict:
    from scorebench.packed import PackMember, train_packed

    specs = spec["members"]
    first = Components(next(iter(specs.values())))
    members = []
    for member_dir, m in specs.items():
        c = Components(m, dataset=first.dataset)
        members.append(PackMember(m["cell"], c.new_model(), c.schedule, c.settings, out_dir / member_dir))
    discard_foreign_checkpoint(resume_dir, spec)
    log.info("pack %s: %d cells on %s %s", spec["pack"], len(members), first.dataset.name, first.dataset.shape)
    log_ready(log, "training")
    return train_packed(
        members, first.loss, first.dataset.train, resume_dir / "checkpoint.pt",
        pack_name=spec["pack"], noise_seed=derive_seed(first.spec["seed"], spec["pack"], "noise"),
    )  # fmt: skip


RESUME_FILES = ("checkpoint.pt", "checkpoint.spec")


def _settle_cell(out_dir: Path) -> None:
    """After model.pt is written: make train_log.jsonl the final checkpoint's history (the log lost
    records if its file was deleted mid-run, e.g. by a rerun that submitted this cell again and was
    refused by the lock), then remove the resume files."""
    import torch

    from scorebench.results import write_text

    ckpt, log_path = out_dir / "checkpoint.pt", out_dir / "train_log.jsonl"
    if ckpt.exists():
        history = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("history")
        if history is not None:
            text = "".join(json.dumps(rec) + "\n" for rec in history)
            current = log_path.read_text() if log_path.exists() else None
            if current != text:
                held = len(current.splitlines()) if current is not None else 0
                log.warning("rewrote %s from the final checkpoint (%d records; the file held %d)", log_path,
                            len(history), held)  # fmt: skip
                write_text(log_path, text)
    _remove_resume_files(out_dir)


def _remove_resume_files(folder: Path) -> None:
    for name in RESUME_FILES:
        (folder / name).unlink(missing_ok=True)
