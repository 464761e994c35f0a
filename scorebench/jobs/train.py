"""Training jobs: one cell into its folder, or the cells of a pack in one process into the pack's."""

from __future__ import annotations

import logging
from pathlib import Path

from scorebench.clock import log_ready
from scorebench.components import Components
from scorebench.seeds import derive_seed
from scorebench.stamps import discard_foreign_checkpoint

log = logging.getLogger("scorebench")


def train_job(spec: dict, out_dir) -> dict:
    """Train one cell (or write the oracle's marker) into out_dir/model.pt; resumes a killed run."""
    from scorebench.checkpoint import save_atomic
    from scorebench.device import device_description
    from scorebench.train import train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = Components(spec)
    log.info("cell %s: dataset %s %s, %d σ levels", spec["cell"], c.dataset.name, c.dataset.shape, c.schedule.levels)
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


def train_pack_job(spec: dict, out_dir, resume_dir) -> dict:
    """Train the members of a pack (Study.pack_spec) in one process into out_dir/{member}/ (model.pt,
    train_log.jsonl each); the resume checkpoint lives in `resume_dir`, outside the job's output, so a
    killed job resumes from it."""
    from scorebench.packed import PackMember, train_packed

    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
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
