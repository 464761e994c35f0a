"""Grouped evaluation (jobs.evaluate_pack_job): a group of toy cells sampled, evaluated and
score-errored in one process must write what the per-cell jobs write, whether the cells were trained
in a pack or one per job, and a group that fails part way keeps the cells it finished.

Checked against the per-cell jobs themselves (sample, evaluate, score-error), run on the same
members' model files with the specs the unpacked workflow gives them.
"""

import json

import numpy as np
import pandas as pd
import pytest

import scorebench.jobs.group as group
from scorebench.jobs.evaluate import evaluate_samples_job, score_error_job
from scorebench.jobs.group import evaluate_pack_job
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job, train_pack_job
from scorebench.layout import member_dir
from scorebench.errors import ScorebenchError
from scorebench.study import Study, validate_config

CONFIG = {
    "study": "evalpack",
    "seeds": [0, 1],
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {
        "L1": {"kind": "single", "sigma": 0.3},
        "L3": {"kind": "geometric", "sigma_max": 3.0, "sigma_min": 0.3, "levels": 3},
    },
    "objectives": {"dsm": {"kind": "dsm"}},
    "training": {"steps": 20, "batch_size": 32, "log_every": 10, "checkpoint_every": 20, "device": "cpu", "pack": True},
    "sampling": {"n_samples": 40, "samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 3, "step_ratio": 4.0}}},  # L1 must move (R > 0.05)
    "evaluation": {"score_error": {"n_points": 100, "n_bins": 2, "grid_size": 8}},
}

# columns that say when and how long, not what
VOLATILE = ("wall_s", "host", "gpu_hours", "created", "time")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The study, its one pack trained, and its members' model files (in the workflow's layout)."""
    study = Study(validate_config(json.loads(json.dumps(CONFIG))))
    (name,) = study.packs
    root = tmp_path_factory.mktemp("pack") / "results" / study.name / "packs" / name
    train_pack_job(study.pack_spec(name), root / "members", root / "resume")
    return study, name, model_files(root / "members", study.eval_groups[name], study)


def model_files(members_dir, cells, study) -> dict[str, object]:
    """{member folder: model.pt} of cells trained into members_dir (a pack's folder)."""
    return {member_dir(c): members_dir / member_dir(c) / "model.pt" for c in cells}


def stable(df: pd.DataFrame) -> pd.DataFrame:
    """The rows and columns that say what was measured (timings dropped: they differ run to run)."""
    keep = [c for c in df.columns if not any(v in c for v in VOLATILE)]
    timed = df["metric"].str.contains("|".join(VOLATILE))
    return df.loc[~timed, keep].reset_index(drop=True)


def test_a_group_writes_what_the_per_cell_jobs_write(pack, tmp_path):
    study, name, models = pack
    (group,) = study.eval_shards(name)  # 4 cells, one group
    assert len(group) == 4
    files = list(models.values())[::-1]  # any order: matched to members by path
    evaluate_pack_job(study.eval_pack_spec(name, "shard0"), files, tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "work").exists()  # renamed into the output in one step
    for cell in group:
        member = member_dir(cell)
        model, alone = models[member], tmp_path / "alone" / member
        sample_job(study.sample_spec(cell, "annealed"), model, alone / "samples.npz")
        evaluate_samples_job(study.eval_spec(cell, "annealed"), alone / "samples.npz", alone / "annealed.parquet")
        score_error_job(study.eval_spec(cell), model, alone / "score_error.parquet")
        packed = tmp_path / "out" / member
        with np.load(alone / "samples.npz") as a, np.load(packed / "samples" / "annealed.npz") as b:
            assert np.array_equal(a["samples"], b["samples"]), member
        for mine, theirs in (("annealed.parquet", "annealed.parquet"), ("score_error.parquet", "score_error.parquet")):
            a, b = pd.read_parquet(alone / mine), pd.read_parquet(packed / "metrics" / theirs)
            assert len(a) > 0 and set(a["cell"]) == {cell.id}
            pd.testing.assert_frame_equal(stable(a), stable(b))


def test_a_failed_group_keeps_its_finished_cells(pack, tmp_path, monkeypatch, caplog):
    study, name, models = pack
    members = list(models.values())
    spec = study.eval_pack_spec(name, "shard0")
    last = list(spec["members"])[-1]
    real = group.score_error_job

    def fails_on_the_last_cell(s, model, out):
        if str(model).endswith(f"{last}/model.pt"):
            raise RuntimeError("killed")
        return real(s, model, out)

    monkeypatch.setattr(group, "score_error_job", fails_on_the_last_cell)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_pack_job(spec, members, tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "out").exists()
    first = tmp_path / "work" / list(spec["members"])[0]
    before = (first / "samples" / "annealed.npz").stat().st_mtime_ns
    monkeypatch.setattr(group, "score_error_job", real)
    with caplog.at_level("INFO", logger="scorebench"):
        evaluate_pack_job(spec, members, tmp_path / "out", tmp_path / "work")
    kept = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kept ")]
    assert len(kept) == 3 * 3 + 2  # three finished cells' three files, the last cell's samples and table
    moved = tmp_path / "out" / list(spec["members"])[0] / "samples" / "annealed.npz"
    assert moved.stat().st_mtime_ns == before
    assert all((tmp_path / "out" / m / "metrics" / "score_error.parquet").exists() for m in spec["members"])


def test_groups_cover_the_pack_once(pack):
    study, name, _ = pack
    cells = [c for group in study.eval_shards(name) for c in group]
    assert sorted(c.id for c in cells) == sorted(c.id for c in study.packs[name])
    assert {study.eval_shard_of(c) for c in cells} == {"shard0"}


def test_cells_trained_one_per_job_are_grouped_too(tmp_path):
    """Unpacked toy cells: grouped in evaluation.group_size jobs, reading each cell's own model.pt."""
    config = json.loads(json.dumps(CONFIG))
    config["training"]["pack"] = False
    config["evaluation"]["group_size"] = 3
    study = Study(validate_config(config))
    assert not study.packs and list(study.eval_groups) == ["mix/dsm"]
    assert [len(g) for g in study.eval_shards("mix/dsm")] == [3, 1]
    cell = study.eval_shards("mix/dsm")[1][0]
    own = tmp_path / "results" / study.name / cell.dataset / cell.schedule / cell.objective / f"seed{cell.seed}"
    train_job(study.train_spec(cell), own)
    evaluate_pack_job(study.eval_pack_spec("mix/dsm", "shard1"), [own / "model.pt"], tmp_path / "out", tmp_path / "work")
    alone = tmp_path / "alone"
    score_error_job(study.eval_spec(cell), own / "model.pt", alone / "score_error.parquet")
    grouped = pd.read_parquet(tmp_path / "out" / member_dir(cell) / "metrics" / "score_error.parquet")
    pd.testing.assert_frame_equal(stable(pd.read_parquet(alone / "score_error.parquet")), stable(grouped))


def test_group_size_one_means_one_job_per_cell_and_rule():
    config = json.loads(json.dumps(CONFIG))
    config["evaluation"]["group_size"] = 1
    study = Study(validate_config(config))
    assert study.packs and not study.eval_groups
    assert all(study.eval_group_of(c) is None for c in study.cells)


def test_image_cells_are_never_grouped():
    config = json.loads(json.dumps(CONFIG))
    config["datasets"]["digits"] = {"kind": "digits", "options": {"max_train": 50, "max_test": 20}}
    study = Study(validate_config(config))
    assert list(study.eval_groups) == ["mix/dsm"]
    assert {study.eval_group_of(c) for c in study.cells if c.dataset == "digits"} == {None}


def test_model_files_must_match_the_groups_members_one_to_one(pack, tmp_path):
    study, name, models = pack
    spec, files = study.eval_pack_spec(name, "shard0"), list(models.values())
    with pytest.raises(ScorebenchError, match=r"no model file for member\(s\) " + list(models)[-1]):
        evaluate_pack_job(spec, files[:-1], tmp_path / "out", tmp_path / "work")
    with pytest.raises(ScorebenchError, match="a second model for " + list(models)[0]):
        evaluate_pack_job(spec, files + files[:1], tmp_path / "out", tmp_path / "work")
    stranger = tmp_path / "results" / "evalpack" / "mix" / "L9" / "dsm" / "seed0" / "model.pt"
    with pytest.raises(ScorebenchError, match=f"--models {stranger}: not a member of this group: L9/seed0"):
        evaluate_pack_job(spec, [*files, stranger], tmp_path / "out", tmp_path / "work")
    with pytest.raises(ScorebenchError, match="model.pt: not in a cell's or a pack's folder"):
        evaluate_pack_job(spec, [tmp_path / "model.pt"], tmp_path / "out", tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before any file is made


@pytest.mark.parametrize(
    "path, below",
    [
        ("results/st/mix/L3/dsm/seed1/samples/annealed.npz", 2),  # a cell's own folder
        ("results/st/packs/mix/dsm/members/L3/seed1/train_log.jsonl", 1),  # trained in a pack
        ("results/st/packs/mix/dsm/evaluated/shard0/L3/seed1/samples/annealed.npz", 2),  # evaluated in a group
    ],
)
def test_a_cell_is_read_from_any_of_its_file_paths(path, below):
    from scorebench.layout import cell_of_path

    assert cell_of_path(path, below=below) == ("st", "mix", "L3", "dsm", 1)
