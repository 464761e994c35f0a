"""Settings that cannot finish are refused when the config is read, one line naming the key path.

Each case in the first block once passed `snakemake -n` and failed only after training (issue 17):
the message is asserted whole, so a refusal that drifts to a vaguer line fails here. The workflow
side (one line on stderr, nothing finished touched) is tests/test_workflow.py's
test_settings_that_cannot_finish_are_refused_before_any_job.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from scorebench.checks import SIGMA_LIMIT, nfe_per_chain
from scorebench.errors import ScorebenchError
from scorebench.study import Study, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
TEST_STUDY = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())


def refusal(cfg_or_path) -> str:
    """The one-line error of a config (a dict, or a file read as `scorebench check` reads it)."""
    with pytest.raises(ScorebenchError) as e:
        if isinstance(cfg_or_path, Path):
            Study(load_config(cfg_or_path))
        else:
            Study(validate_config(copy.deepcopy(cfg_or_path)))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def edited(edit) -> dict:
    cfg = copy.deepcopy(TEST_STUDY)
    edit(cfg)
    return cfg


def image_data(tmp_path: Path) -> dict:
    """A valid npz file and a valid image folder (neither has class labels)."""
    from PIL import Image

    np.savez(tmp_path / "faces.npz", x=np.zeros((6, 8, 8), np.uint8))
    (tmp_path / "folder" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "folder" / "a" / "0.png")
    return {"npz": str(tmp_path / "faces.npz"), "image_folder": str(tmp_path / "folder")}


# ------------------------------------------------------------------ the cases issue 17 found


@pytest.mark.parametrize("kind", ["npz", "image_folder"])
def test_feature_net_without_labels(tmp_path, kind):
    path = image_data(tmp_path)[kind]
    cfg = edited(lambda c: c["datasets"].update(faces={"kind": kind, "options": {"path": path}}))
    assert refusal(cfg) == (
        f"config evaluation/fid/extractor: feature_net trains on class labels, but dataset faces (kind {kind}) "
        "has none; use `extractor: inception` (with `inception_weights: PATH` offline) or exclude its cells"
    )
    cfg["evaluation"]["fid"]["extractor"] = "inception"
    assert Study(validate_config(cfg)).cells  # the same data with an extractor that needs no labels
    cfg["evaluation"]["fid"]["extractor"] = "feature_net"
    cfg["exclude"].append({"dataset": "faces"})
    assert Study(validate_config(cfg)).cells  # or with its cells excluded


@pytest.mark.parametrize("step", [0, -0.1])
def test_non_positive_step_size(step):
    cfg = edited(lambda c: c["sampling"]["samplers"]["annealed"].update(step_size=step))
    assert refusal(cfg) == f"config sampling/samplers/annealed/step_size: must be > 0, got {step}"


def test_duplicate_seeds():
    assert refusal(edited(lambda c: c.update(seeds=[0, 0]))) == "config seeds: [0, 0] repeats a value; each must appear once"


def test_infinite_sigma_from_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text((ROOT / ".test" / "config" / "config.yaml").read_text().replace("sigma_max: 3.0", "sigma_max: .inf"))
    assert refusal(p) == "config schedules/geom/sigma_max: must be a finite number, got inf"


def test_sigma_beyond_float32():
    msg = refusal(edited(lambda c: c["schedules"]["geom"].update(sigma_max=1e30)))
    assert msg == (
        "config schedules/geom/sigma_max: 1e+30 is outside float32's range for σ, [1.1e-16, 9.0e+15]: the loss "
        "squares σ·z and z/σ, which then overflow (see scorebench/checks.py)"
    )


def test_levels_beyond_the_evaluation_budget():
    cfg = edited(lambda c: c["schedules"]["geom"].update(levels=100000))
    assert refusal(cfg) == (
        "config sampling/samplers/annealed: with schedule geom (L = 100000, T = 5) one chain takes 500,001 network "
        "evaluations, above limits/max_nfe = 100,000"
    )
    cfg["limits"] = {"max_nfe": 500_001}  # the cap is the user's: raised on purpose, the study runs
    assert Study(validate_config(cfg)).cells


# ------------------------------------------------------------------ their families


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["training"].update(lr=float("nan")), "config training/lr: must be a finite number, got nan"),
        (lambda c: c["evaluation"]["score_error"].update(noiseless_sigmas=[0.0, float("inf")]),
         "config evaluation/score_error/noiseless_sigmas/1: must be a finite number, got inf"),
        (lambda c: c["schedules"].update(tiny={"kind": "single", "sigma": 1e-20}),
         "config schedules/tiny/sigma: 1e-20 is outside float32's range for σ"),
        (lambda c: c["schedules"].update(ex={"kind": "explicit", "sigmas": [1e20, 1.0]}),
         "config schedules/ex/sigmas/0: 1e+20 is outside float32's range for σ"),
        (lambda c: c["sampling"].update(n_samples=100_000_000),
         "config sampling/n_samples: 100,000,000 samples (and 0 snapshots) of dataset digits (D = 64) take 25.6 GB "
         "in float32, above limits/max_samples_gb = 16"),
        (lambda c: c["sampling"]["samplers"].update(long={"kind": "langevin", "n_steps": 200_000}),
         "config sampling/samplers/long: with schedule geom (L = 3, T = 200000) one chain takes 200,001 network"),
    ],
)  # fmt: skip
def test_family_of_the_found_cases(edit, message):
    assert refusal(edited(edit)).startswith(message)


@pytest.mark.parametrize(
    "kind, path, message",
    [
        ("npz", "nope.npz", "npz {tmp}/nope.npz: file not found"),
        ("npz", "labels.npz", "npz {tmp}/labels.npz: no array 'x' (found ['y']); store the images as x=..."),
        ("npz", "broken.npz", "npz {tmp}/broken.npz: not a readable .npz archive (BadZipFile: File is not a zip file)"),
        ("npz", "flat.npz", "npz {tmp}/flat.npz: array 'x' has shape (6, 64); use (N, H, W), (N, H, W, C) or (N, C, H, W)"),
        ("image_folder", "nowhere", "image_folder {tmp}/nowhere: folder not found"),
        ("image_folder", "empty", "image_folder {tmp}/empty: no .png/.jpg/.jpeg files found (searched recursively)"),
        ("npz", None, "required for kind npz (the .npz file)"),
    ],
)
def test_missing_or_malformed_data_files(tmp_path, kind, path, message):
    np.savez(tmp_path / "labels.npz", y=np.zeros(6))
    np.savez(tmp_path / "flat.npz", x=np.zeros((6, 64), np.uint8))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    options = {} if path is None else {"path": str(tmp_path / path)}
    cfg = edited(lambda c: c["datasets"].update(faces={"kind": kind, "options": options}))
    cfg["evaluation"]["fid"]["extractor"] = "inception"
    assert refusal(cfg) == f"config datasets/faces/options/path: {message.format(tmp=tmp_path)}"


def test_the_header_check_agrees_with_the_loader(tmp_path):
    """What the config check accepts, the loader loads; what it refuses, the loader refuses too."""
    from scorebench.data import load_dataset
    from scorebench.data.registry import npz_image_shape

    np.savez(tmp_path / "ok.npz", x=np.zeros((6, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "no_x.npz", images=np.zeros((6, 8, 8), np.uint8))
    assert npz_image_shape(tmp_path / "ok.npz") == (6, 8, 8, 3)
    assert load_dataset("npz", path=str(tmp_path / "ok.npz"), max_train=2).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="no array 'x'"):
        npz_image_shape(tmp_path / "no_x.npz")
    with pytest.raises(ScorebenchError, match="no array 'x'"):
        load_dataset("npz", path=str(tmp_path / "no_x.npz"))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").rglob("*.yaml")))
def test_every_shipped_study_passes(path):
    """The bounds refuse nothing a shipped study asks for (the cluster studies included)."""
    assert Study(load_config(ROOT / path)).cells


def test_sigma_bound_keeps_squared_norms_finite_in_float32():
    for sigma in (SIGMA_LIMIT, 1 / SIGMA_LIMIT):
        z = torch.ones(2**20)  # the largest dimension the bound allows for
        assert torch.isfinite((sigma * z).square().sum()) and torch.isfinite((z / sigma).square().sum())
    assert not torch.isfinite(torch.tensor(SIGMA_LIMIT * 1e2).square() * 2**20)  # a tight bound, not an arbitrary one


@pytest.mark.parametrize("kind", ["langevin", "annealed_langevin", "pc"])
@pytest.mark.parametrize("n_steps, denoise", [(0, True), (3, False), (3, True)])
def test_nfe_budget_counts_what_the_samplers_count(kind, n_steps, denoise):
    from scorebench.sampling import get_sampler

    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.5])
    opts = {"snr": 0.16} if kind == "pc" else {}
    out = get_sampler(kind)(
        lambda x, s: -x, torch.zeros(5, 2), sigmas, n_steps=n_steps, step_size=0.01,
        generator=torch.Generator().manual_seed(0), denoise=denoise, **opts,
    )  # fmt: skip
    assert out.nfe == nfe_per_chain(kind, len(sigmas), n_steps, denoise)
