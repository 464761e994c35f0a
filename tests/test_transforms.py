"""The authors' image pipeline options (scorebench/data/transforms.py): the maps written out here
from their definitions (ermongroup/ncsnv2 datasets/__init__.py `data_transform`,
`inverse_data_transform`, `logit_transform`; torchvision's RandomHorizontalFlip), and where the
pipeline applies them: data in model space, minibatches augmented in the loss, chains started in
model space, samples written as images in [0, 1], every option on every row."""

import json

import numpy as np
import pytest
import torch

from scorebench.components import Components
from scorebench.data import load_dataset
from scorebench.data.transforms import ImageTransform, augmented_loss
from scorebench.errors import ScorebenchError
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.results import spec_columns
from scorebench.sampling import chain_starts
from scorebench.study import Study, validate_config

LAM = 1e-6
LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every uint8 pixel value, as ToTensor gives it


def test_forward_maps_and_inverses_are_the_authors():
    x = LEVELS
    torch.testing.assert_close(ImageTransform(rescaled=True).to_model(x), 2 * x - 1, rtol=0, atol=0)
    p = LAM + (1 - 2 * LAM) * x
    logit = ImageTransform(logit_transform=True)
    torch.testing.assert_close(logit.to_model(x), torch.log(p / (1 - p)), rtol=1e-14, atol=1e-12)
    for t in (ImageTransform(rescaled=True), logit):
        torch.testing.assert_close(t.to_unit(t.to_model(x)), x, rtol=0, atol=1e-12)
        assert t.to_unit(torch.tensor([-50.0, 50.0], dtype=torch.float64)).tolist() == [0.0, 1.0]  # clamped
    # the authors' own inverse of the logit map is the bare sigmoid: within λ of this one
    assert (torch.sigmoid(logit.to_model(x)) - x).abs().max() <= LAM * (1 + 1e-9)
    raw = torch.tensor([-0.5, 1.5])
    assert torch.equal(ImageTransform().to_unit(raw), raw)  # untransformed data: samples as they are
    with pytest.raises(ScorebenchError, match="exclude each other"):
        ImageTransform(rescaled=True, logit_transform=True)


@pytest.mark.parametrize("space", ["unit", "rescaled", "logit"])
def test_dequantisation_spreads_each_pixel_level_over_its_256th(space, gen):
    t = ImageTransform(uniform_dequantization=True, rescaled=space == "rescaled", logit_transform=space == "logit")
    x = LEVELS.float().repeat(200)[None, None, None, :]  # 51,200 pixels, each level 200 times
    out = t._unit(t.augment(t.to_model(x), gen).double()).flatten()
    k = (LEVELS * 255).round().repeat(200)
    offset = out * 256 - k  # x/256·255 + u/256 = (k + u)/256: u must be U[0, 1)
    assert offset.min() >= -1e-5 and offset.max() < 1 + 1e-5
    assert abs(float(offset.mean()) - 0.5) < 0.01 and abs(float(offset.var()) - 1 / 12) < 0.005


def test_random_flip_mirrors_about_half_the_images_whole(gen):
    t = ImageTransform(random_flip=True)
    x = torch.rand(400, 3, 4, 5, generator=gen)
    out = t.augment(x, gen)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 160 < int(mirrored.sum()) < 240  # Binomial(400, 1/2): 200 ± 10


def test_augmented_loss_sees_augmented_batches_and_draws_from_the_loop_generator(gen):
    seen = []

    def loss(model, x, sigma, weight, *, generator=None):
        seen.append(x)
        return x.flatten(1).sum(1)

    t = ImageTransform(random_flip=True, uniform_dequantization=True)
    x = torch.full((8, 1, 2, 2), 1.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    augmented_loss(loss, t)(None, x, None, None, generator=g1)
    augmented_loss(loss, t)(None, x, None, None, generator=g2)
    assert not torch.equal(seen[0], x) and torch.equal(seen[0], seen[1])
    assert augmented_loss(loss, ImageTransform(rescaled=True)) is loss


def study_with(options, objective="oracle"):
    config = {
        "study": "pipeline", "datasets": {"d": {"kind": "digits", "options": {"max_train": 200, "max_test": 50, **options}}},
        "schedules": {"geom": {"kind": "geometric", "sigma_max": 1.0, "sigma_min": 0.1, "levels": 3}},
        "objectives": {objective: {"kind": objective}}, "model": {"image": {"arch": "ncsn", "preset": "tiny"}},
        "training": {"device": "cpu"},
        "sampling": {"n_samples": 6, "batch_size": 6, "samplers": {"ald": {"kind": "annealed_langevin", "n_steps": 2}}},
    }  # fmt: skip
    return Study(validate_config(json.loads(json.dumps(config))))


def test_options_are_recorded_on_every_row_and_set_the_model_space():
    options = {"uniform_dequantization": True, "random_flip": True, "rescaled": True}
    study = study_with(options, "dsm")
    spec = study.train_spec(study.cells[0])
    columns = spec_columns(spec)
    for key, value in options.items():
        assert columns[f"dataset_options_{key}"] == value
    c = Components(spec)
    assert c.dataset.train.min() == -1 and c.dataset.info["transform"]["space"] == "rescaled"
    assert c.new_model().config["rescale_input"] is False  # the network takes [−1, 1] data as they are
    plain = Components(study_with({}, "dsm").train_spec(study.cells[0]))
    assert plain.new_model().config["rescale_input"] is True and plain.dataset.transform.space == "unit"
    g = torch.Generator().manual_seed(0)
    starts = chain_starts(c.dataset, 5, kind="annealed_langevin", sigma_max=1.0, generator=g, device="cpu")
    assert starts.min() >= -1 and starts.max() <= 1 and starts.min() < -0.5  # U[0, 1] mapped to [−1, 1]


def test_sample_job_writes_images_in_unit_range_from_a_logit_space_model(tmp_path):
    study = study_with({"logit_transform": True})
    cell = study.cells[0]
    train_job(study.train_spec(cell), tmp_path)  # the oracle: the exact score of the logit-space data
    spec = study.sample_spec(cell, "ald")
    meta = sample_job(spec, tmp_path / "model.pt", tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        samples = z["samples"]
    assert meta["model_space"] == "logit"
    assert samples.min() >= 0 and samples.max() <= 1 and samples.shape == (6, 1, 8, 8)


def test_image_datasets_refuse_a_non_boolean_option():
    with pytest.raises(ScorebenchError, match="random_flip: need true or false"):
        load_dataset("digits", random_flip="yes")
