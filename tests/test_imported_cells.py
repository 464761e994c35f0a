"""A study cell whose model is the authors' released weights (objective kind `imported`).

The cell is not trained: its train job imports the checkpoint into model.pt, and every later job
(sample, score error) reads that file as it reads a trained cell's. Checked here: the imported
cell's model gives exactly the outputs of the network the checkpoint was exported from, its train
log passes aggregation, the workflow makes the checkpoint an input of the train job (so replacing
it reruns the import), and a missing file or a network that is not NCSN/NCSNv2 is refused when the
config is read.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scorebench.aggregate import read_train_logs
from scorebench.components import Components
from scorebench.errors import ScorebenchError
from scorebench.jobs.evaluate import score_error_job
from scorebench.jobs.train import train_job
from scorebench.models import build_model
from scorebench.models.import_authors import geometric_sigmas, to_authors_state
from scorebench.study import Study, validate_config

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = geometric_sigmas(1.0, 0.01, 3)


@pytest.fixture
def released(tmp_path):
    """An NCSN checkpoint in the authors' layout ([state dict with `module.` keys, optimizer]) and its network."""
    net = build_model("ncsn", shape=(1, 8, 8), sigmas=SIGMAS, preset="tiny", generator=torch.Generator().manual_seed(3))
    path = tmp_path / "checkpoint.pth"
    torch.save([to_authors_state(net), {}], path)
    return path, net


def config(checkpoint, **model) -> dict:
    return {
        "study": "imported",
        "results_dir": "results",
        "datasets": {"digits": {"kind": "digits"}},
        "schedules": {"ncsn": {"kind": "geometric", "sigma_max": 1.0, "sigma_min": 0.01, "levels": 3}},
        "objectives": {"released": {"kind": "imported", "checkpoint": str(checkpoint)}},
        "model": {"image": {"arch": "ncsn", "preset": "tiny", "scale_by_sigma": False, **model}},
        "sampling": {"n_samples": 16, "samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 2,
                                                                "step_size": 2e-5}}},
        "evaluation": {"score_error": {"n_points": 64}},
    }  # fmt: skip


def test_an_imported_cell_is_the_released_network(released, tmp_path):
    path, net = released
    study = Study(validate_config(config(path)))
    (cell,) = study.cells
    out = tmp_path / "results" / "imported" / "digits" / "ncsn" / "released" / "seed0"
    train_job(study.train_spec(cell), out)
    model, ckpt = Components(study.train_spec(cell)).trained_model(out / "model.pt", "ema")
    x, sigma = torch.rand(4, 1, 8, 8), torch.tensor(SIGMAS + [SIGMAS[0]])
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma), net(x, sigma), rtol=0, atol=0)
    assert ckpt["settings"]["imported"]["imported_from"] == str(path)
    curves = read_train_logs([out / "train_log.jsonl"])  # one record at the file's step, no losses
    assert curves.empty
    score_error_job(study.eval_spec(cell), out / "model.pt", tmp_path / "se.parquet")
    import pandas as pd

    assert (pd.read_parquet(tmp_path / "se.parquet")["objective_kind"] == "imported").all()


def test_imported_cells_are_refused_without_their_file_or_network(released, tmp_path):
    path, _ = released
    with pytest.raises(ScorebenchError, match=r"objectives/released/checkpoint: .*nope.pth: file not found"):
        Study(validate_config(config(tmp_path / "nope.pth")))
    with pytest.raises(ScorebenchError, match="imported checkpoint is an NCSN or NCSNv2 network, but the model arch is unet"):
        Study(validate_config(config(path, arch="unet")))
    bad = config(path)
    del bad["objectives"]["released"]["checkpoint"]
    with pytest.raises(ScorebenchError, match="checkpoint"):
        validate_config(copy.deepcopy(bad))


def test_the_workflow_makes_the_checkpoint_an_input_of_the_import(released, tmp_path):
    path, _ = released
    (tmp_path / "study.yaml").write_text(json.dumps(config(path)))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(tmp_path / "study.yaml"), "--cores", "1"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    train = r.stdout[r.stdout.index("rule train:"):]
    assert f"input: {path}" in train.split("\n\n")[0]
