"""Damaged inputs and a full disk are one line naming the file and what to do, never a traceback.

Every file a job reads goes through scorebench.readers; a write on a full disk through
results.atomic_path. The cases are the ones a user met: a samples file cut short or bit-flipped,
a damaged per-job or study table, a reference record that is not JSON, a packed cell's model.pt
gone (Snakemake tracks the pack's folder, not the file), all samples non-finite, and training on a
disk that fills up.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scorebench.errors import ScorebenchError
from scorebench.jobs.evaluate import evaluate_samples_job
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.specs import spec_json
from scorebench.study import Study, validate_config

CONFIG = {
    "study": "damage",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
    "objectives": {"oracle": {"kind": "oracle"}, "dsm": {"kind": "dsm"}},
    "training": {"device": "cpu", "steps": 20, "batch_size": 16, "checkpoint_every": 10},
    "sampling": {"n_samples": 200, "samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 3}}},
}


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """An oracle cell's model file and samples, and the specs that made them."""
    study = Study(validate_config(json.loads(json.dumps(CONFIG))))
    c = next(x for x in study.cells if x.objective == "oracle")
    out = tmp_path_factory.mktemp("cell")
    train_job(study.train_spec(c), out)
    sample_job(study.sample_spec(c, "annealed"), out / "model.pt", out / "annealed.npz")
    return study, c, out


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


def copy_of(path: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.write_bytes(path.read_bytes())
    return out


def test_a_truncated_samples_file_is_named_with_the_action(cell, tmp_path):
    study, c, out = cell
    bad = copy_of(out / "annealed.npz", tmp_path, "cut.npz")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(ScorebenchError) as exc:
        evaluate_samples_job(study.eval_spec(c, "annealed"), bad, tmp_path / "m.parquet")
    assert f"samples file {bad} is damaged or unreadable" in one_line(exc)
    assert "delete it and run snakemake again" in str(exc.value)
    assert not (tmp_path / "m.parquet").exists()


def test_a_bit_flipped_samples_file_is_named(cell, tmp_path):
    study, c, out = cell
    bad = copy_of(out / "annealed.npz", tmp_path, "flip.npz")
    data = bytearray(bad.read_bytes())
    for i in range(200, 260):  # inside the first member's compressed bytes
        data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ScorebenchError) as exc:
        evaluate_samples_job(study.eval_spec(c, "annealed"), bad, tmp_path / "m.parquet")
    assert f"samples file {bad} is damaged or unreadable" in one_line(exc)


def test_the_command_prints_one_line_for_a_damaged_file(cell, tmp_path):
    study, c, out = cell
    bad = copy_of(out / "annealed.npz", tmp_path, "cut.npz")
    bad.write_bytes(bad.read_bytes()[:100])
    spec = tmp_path / "spec.json"
    spec.write_text(spec_json(study.eval_spec(c, "annealed")))
    r = subprocess.run([sys.executable, "-m", "scorebench", "evaluate", "--spec", f"@{spec}", "--samples", str(bad),
                        "--out", str(tmp_path / "m.parquet")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if " ERROR " in ln or "error:" in ln]
    assert errors == [f"scorebench evaluate: error: samples file {bad} is damaged or unreadable "
                      f"(BadZipFile: File is not a zip file); delete it and run snakemake again to remake it"]
    assert "Traceback" not in r.stderr


def test_damaged_tables_and_records_are_named(cell, tmp_path):
    from scorebench.jobs.evaluate import fidelity_rows
    from scorebench.jobs.report import aggregate_job

    table = tmp_path / "metrics" / "annealed.parquet"
    table.parent.mkdir()
    table.write_bytes(b"PAR1 not really a table")
    with pytest.raises(ScorebenchError) as exc:
        aggregate_job([table], tmp_path / "study" / "metrics.parquet")
    assert f"metrics table {table} is damaged or unreadable" in one_line(exc)
    assert not (tmp_path / "study").exists()
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "reference.json").write_text('{"cache_name": ')
    with pytest.raises(ScorebenchError) as exc:
        fidelity_rows(None, ref, {})
    assert f"reference record {ref / 'reference.json'} is damaged or unreadable" in one_line(exc)


def test_a_packed_cells_missing_model_names_the_packs_folder(cell, tmp_path):
    study, c, out = cell
    members = tmp_path / "results" / "damage" / "packs" / "mix" / "oracle" / "members"
    gone = members / "geom" / "seed0" / "model.pt"
    gone.parent.mkdir(parents=True)
    with pytest.raises(ScorebenchError) as exc:
        sample_job(study.sample_spec(c, "annealed"), gone, tmp_path / "s.npz")
    assert f"delete the folder {members} and run snakemake again (its pack retrains)" in one_line(exc)


def test_all_nonfinite_samples_are_a_share_not_a_crash(cell, tmp_path):
    study, c, out = cell
    with np.load(out / "annealed.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["samples"] = np.full_like(arrays["samples"], np.nan)
    nan_file = tmp_path / "nan.npz"
    np.savez(nan_file, **arrays)
    evaluate_samples_job(study.eval_spec(c, "annealed"), nan_file, tmp_path / "m.parquet")
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "m.parquet").set_index("metric")["value"]
    assert rows["nonfinite_fraction"] == 1.0
    assert np.isnan(rows["mmd_rbf"]) and np.isnan(rows["mode_weight_error"]) and np.isnan(rows["mode_weight_1"])


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: the disk that fills up (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mount
    finally:  # lazily: a process still holding a file there must not keep the mount alive
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_named_and_leaves_no_partial_file(tiny_disk):
    import torch

    from scorebench.checkpoint import save_atomic

    with pytest.raises(ScorebenchError) as exc:
        save_atomic({"x": torch.zeros(200_000)}, tiny_disk / "checkpoint.pt")
    assert one_line(exc) == (f"no space left on device writing {tiny_disk / 'checkpoint.pt'}; "
                             "free some space and run snakemake again")  # fmt: skip
    assert os.listdir(tiny_disk) == []


def test_training_on_a_full_disk_says_so_in_one_line(cell, tiny_disk, tmp_path):
    study, *_ = cell
    c = next(x for x in study.cells if x.objective == "dsm")
    (tiny_disk / "filler").write_bytes(b"0" * 200_000)  # leaves room for the log, not for a checkpoint
    spec = tmp_path / "spec.json"
    spec.write_text(spec_json(study.train_spec(c)))
    r = subprocess.run([sys.executable, "-m", "scorebench", "train", "--spec", f"@{spec}", "--out-dir",
                        str(tiny_disk / "cell")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("scorebench train: error: no space left on device writing ") and str(tiny_disk) in last
