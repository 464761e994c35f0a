"""The one map of a study's results folder: where a cell's, a pack's and a group's files live.

results/{study}/ holds one folder per cell, {dataset}/{schedule}/{objective}/seed{seed}/, unless
the cell is trained in a pack (training.pack) or evaluated in a group (evaluation.group_size):
then its files sit in the pack's folders, packs/{dataset}/{objective}/members/ (training) or
packs/{dataset}/{objective}/evaluated/shard{i}/ (sampling and evaluation), in a member folder
{schedule}/seed{seed}/. The workflow (common.smk) builds paths from these templates, with
Snakemake wildcards left in braces, and readers get a file's cell back with `cell_of_path`.
"""

from __future__ import annotations

from pathlib import Path

CELL = "{dataset}/{schedule}/{objective}/seed{seed}"  # a cell's own folder
PACK = "packs/{dataset}/{objective}"  # the shared folders of a dataset × objective
MEMBERS = "members"  # a pack's training output, inside PACK
EVALUATED = "evaluated"  # a group's evaluation outputs (one shard{i} folder per job), inside PACK
MEMBER = "{schedule}/seed{seed}"  # a cell's folder inside a pack's or group's folder


def member_dir(cell) -> str:
    """A cell's folder inside its pack's or evaluation group's folders."""
    return MEMBER.format(schedule=cell.schedule, seed=cell.seed)


def cell_of_path(path, below: int) -> tuple[str, str, str, str, int]:
    """(study, dataset, schedule, objective, seed) of a cell's output file, read from its path.

    A cell's own folder is results/{study}/{dataset}/{schedule}/{objective}/seed{seed}/; a packed
    cell's files sit in its pack's folders, results/{study}/packs/{dataset}/{objective}/members/
    (training) or .../evaluated/shard{i}/ (sampling and evaluation), then {schedule}/seed{seed}/.
    `below`: the parts after the seed folder (1 for train_log.jsonl, 2 for samples/{sampler}.npz).
    """
    parts = Path(path).parts
    seed, schedule = parts[-below - 1], parts[-below - 2]
    if len(parts) >= below + 6 and parts[-below - 3] == MEMBERS and parts[-below - 6] == "packs":
        study, dataset, objective = parts[-below - 7], parts[-below - 5], parts[-below - 4]
    elif len(parts) >= below + 7 and parts[-below - 4] == EVALUATED and parts[-below - 7] == "packs":
        study, dataset, objective = parts[-below - 8], parts[-below - 6], parts[-below - 5]
    else:
        study, dataset, schedule, objective = parts[-below - 5 : -below - 1]
    return study, dataset, schedule, objective, int(seed.removeprefix("seed"))
