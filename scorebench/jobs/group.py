"""Grouped evaluation: the sample, evaluate and score-error jobs of a group of toy cells in one process.

Why: a toy cell's three jobs each pay a process start and `import torch` (~1.3 s) for less work
than that. One `evaluate_pack` job runs the per-cell jobs' own functions with the per-cell jobs'
own specs for up to `evaluation.group_size` cells, so every file means what it would alone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from scorebench.errors import ScorebenchError
from scorebench.jobs.evaluate import evaluate_samples_job, score_error_job
from scorebench.jobs.sample import sample_job
from scorebench.stamps import make_once

log = logging.getLogger("scorebench")


def evaluate_pack_job(spec: dict, model_files, out_dir, work_dir, reference_dir=None) -> None:
    """Sample, evaluate and score-error every cell of one evaluation job of a group (Study.eval_pack_spec)
    in one process: out_dir/{member}/samples/{sampler}.npz, metrics/{sampler}.parquet and
    metrics/score_error.parquet, each made by the per-cell job's function from the per-cell job's spec.

    `model_files` are the members' model.pt files, in any order: each is matched to its member by
    its path (a cell's own folder or its pack's). Files are made in `work_dir` (not an output, so a
    failed job's finished files survive) and each is stamped with a digest of its spec and source; a
    rerun keeps the files whose stamp still matches. When all are made, `work_dir` becomes `out_dir`
    in one rename.
    """
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    members = spec["members"]
    models = member_models(model_files, members)
    log.info("evaluating %d cells of group %s (%s)", len(members), spec["group"], spec["shard"])
    for i, (member, m) in enumerate(members.items()):
        model, cell = models[member], work_dir / member
        for sampler, sample_spec in m["sample"].items():
            samples = cell / "samples" / f"{sampler}.npz"
            make_once(samples, sample_spec, model, lambda: sample_job(sample_spec, model, samples))
            table, eval_spec = cell / "metrics" / f"{sampler}.parquet", m["evaluate"][sampler]
            make_once(table, eval_spec, samples, lambda: evaluate_samples_job(eval_spec, samples, table, reference_dir))
        table = cell / "metrics" / "score_error.parquet"
        make_once(table, m["score_error"], model, lambda: score_error_job(m["score_error"], model, table))
        log.info("cell %d/%d of %s %s done: %s", i + 1, len(members), spec["group"], spec["shard"], member)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir.replace(out_dir)


def member_models(model_files, members) -> dict[str, Path]:
    """{member folder: its model file}, read from the files' paths; every member needs exactly one."""
    from scorebench.layout import MEMBER, cell_of_path

    found: dict[str, Path] = {}
    for path in map(Path, model_files):
        try:
            _, dataset, schedule, objective, seed = cell_of_path(path, below=1)
        except (IndexError, ValueError):
            raise ScorebenchError(
                f"evaluate-pack --models {path}: not in a cell's or a pack's folder (.../SCHEDULE/seedN/model.pt)"
            ) from None
        member = MEMBER.format(schedule=schedule, seed=seed)
        if member not in members or member in found:
            why = "a second model for" if member in found else "not a member of this group:"
            raise ScorebenchError(f"evaluate-pack --models {path}: {why} {member}")
        found[member] = path
    missing = [m for m in members if m not in found]
    if missing:
        raise ScorebenchError(f"evaluate-pack --models: no model file for member(s) {', '.join(missing)}")
    return found
