"""The study layer: schema errors name the bad key, impossible cells are refused by name, and a
job's spec changes only when a setting it depends on changes (what makes Snakemake rerun it)."""

import copy

import pytest
import yaml

from scorebench.errors import ScorebenchError
from scorebench.specs import spec_json
from scorebench.study import Cell, Study, load_config, validate_config

BASE = {
    "study": "s",
    "datasets": {"mix": {"kind": "gmm_2mode"}, "digits": {"kind": "digits"}},
    "schedules": {"none": {"kind": "none"}, "geom": {"kind": "geometric", "sigma_max": 1, "sigma_min": 0.1, "levels": 3}},
    "objectives": {"ssm": {"kind": "sliced"}, "dsm": {"kind": "dsm"}},
    "exclude": [{"schedule": "none", "objective": "dsm"}],
}


def study(**changes):
    cfg = copy.deepcopy(BASE)
    cfg.update(changes)
    return Study(validate_config(cfg))


def test_defaults_are_filled_and_grid_is_the_product_minus_excludes():
    s = study()
    assert s.config["seeds"] == [0]
    assert s.config["sampling"]["samplers"]["annealed"]["kind"] == "annealed_langevin"
    assert len(s.cells) == 2 * 2 * 2 - 2
    assert Cell("mix", "none", "dsm", 0) not in s.cells


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"datsets": {}}, "datsets"),  # typo'd top-level key
        ({"datasets": {"x": {"kind": "imagenet"}}}, "imagenet"),  # unknown dataset
        ({"schedules": {"g": {"kind": "geometric", "sigma_max": 1, "sigma_min": 0.1, "levls": 3}}}, "levls"),
        ({"objectives": {"o": {"kind": "sliced", "n_projections": 0}}}, "n_projections"),
    ],
)
def test_schema_errors_name_the_key(change, needle):
    cfg = copy.deepcopy(BASE)
    cfg.update(change)
    with pytest.raises(ScorebenchError) as e:
        validate_config(cfg)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_non_decreasing_sigma_lists_are_refused():
    with pytest.raises(ScorebenchError, match="schedules/bad/sigmas"):
        study(schedules={"bad": {"kind": "explicit", "sigmas": [0.1, 1.0]}})
    with pytest.raises(ScorebenchError, match="sigma_max"):
        study(schedules={"bad": {"kind": "geometric", "sigma_max": 0.1, "sigma_min": 1.0, "levels": 3}})


def test_impossible_cells_are_refused_with_their_names():
    with pytest.raises(ScorebenchError, match=r"mix/none/dsm: denoising"):
        study(exclude=[])
    with pytest.raises(ScorebenchError, match=r"digits/geom/ex: exact score matching on 64"):
        study(objectives={"ex": {"kind": "exact", "max_dim": 10}}, exclude=[])


def test_specs_change_only_with_their_own_settings():
    a = study()
    b = study(schedules={**BASE["schedules"], "geom": {**BASE["schedules"]["geom"], "levels": 5}})
    for cell in a.cells:
        same = spec_json(a.train_spec(cell)) == spec_json(b.train_spec(cell))
        assert same == (cell.schedule != "geom"), cell
    # a sampler setting leaves every training spec alone but changes sample specs
    # (90, not 7: at 7 steps the noiseless cell's chains would not move, R < 0.05, and the config is refused)
    c = study(sampling={"samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 90}}})
    for cell in a.cells:
        assert spec_json(a.train_spec(cell)) == spec_json(c.train_spec(cell))
        assert spec_json(a.sample_spec(cell, "annealed")) != spec_json(c.sample_spec(cell, "annealed"))


def test_per_dataset_overrides_merge_onto_defaults():
    s = study(training={"steps": 100, "lr": 0.01}, datasets={"mix": {"kind": "gmm_2mode", "training": {"steps": 7}}})
    assert s.training_settings("mix")["steps"] == 7 and s.training_settings("mix")["lr"] == 0.01
    assert s.model_settings("mix")["arch"] == "mlp"


def test_defaults_fill_study_wide_blocks_but_not_overrides():
    """The schema's defaults land in `training` and `model/{toy,image}`; a dataset's override block
    keeps only what it says, so it cannot undo a study-wide setting with a default."""
    s = study(
        training={"lr": 0.01},
        model={"image": {"preset": "small"}},
        datasets={"mix": {"kind": "gmm_2mode", "training": {"steps": 7}}, "digits": {"kind": "digits", "model": {"preset": "base"}}},
    )  # fmt: skip
    c = s.config
    assert c["datasets"]["mix"]["training"] == {"steps": 7} and c["datasets"]["mix"]["model"] == {}
    assert c["datasets"]["digits"]["model"] == {"preset": "base"} and c["datasets"]["digits"]["training"] == {}
    assert c["training"]["lr"] == 0.01 and c["training"]["steps"] == 2000 and c["training"]["pack"] is False
    assert c["model"]["toy"] == {"arch": "mlp", "preset": "tiny", "scale_by_sigma": "auto"}
    assert c["model"]["image"] == {"arch": "unet", "preset": "small", "scale_by_sigma": "auto"}
    assert s.training_settings("mix")["lr"] == 0.01 and s.training_settings("mix")["steps"] == 7
    assert s.model_settings("digits") == {"arch": "unet", "preset": "base", "scale_by_sigma": "auto"}


def test_kind_specific_defaults_reach_only_their_kind():
    """max_dim belongs to the exact objective: another kind's loss would refuse it as an option."""
    from scorebench.components import Components

    s = study(objectives={"ex": {"kind": "exact"}, "dsm": {"kind": "dsm"}}, exclude=[{"schedule": "none", "objective": "dsm"}])
    assert s.config["objectives"]["ex"]["max_dim"] == 128 and "max_dim" not in s.config["objectives"]["dsm"]
    for cell in s.cells:
        Components(s.train_spec(cell)).loss  # each objective accepts its spec's options


def test_shipped_configs_validate(tmp_path):
    for path in ["config/config.yaml", ".test/config/config.yaml"]:
        Study(load_config(path))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "seeds": "zero"}))
    with pytest.raises(ScorebenchError, match="seeds"):
        load_config(bad)


def test_trainer_defaults_are_the_schemas():
    """A direct TrainSettings and a config that leaves training out train with the same settings."""
    import dataclasses

    from scorebench.components import Components
    from scorebench.schema import block_defaults
    from scorebench.train import TrainSettings

    schema = block_defaults("training")
    for f in dataclasses.fields(TrainSettings):
        if f.default is not dataclasses.MISSING and f.name in schema:
            assert f.default == schema[f.name], f.name
    s = study()
    from_config = Components(s.train_spec(s.cells[0])).settings
    d = schema
    assert from_config == TrainSettings(steps=d["steps"], batch_size=d["batch_size"], lr=d["lr"], seed=s.cells[0].seed)


def test_sigma_max_auto_is_the_largest_pairwise_distance():
    import torch

    from scorebench.components import Components

    s = study(schedules={"auto": {"kind": "geometric", "sigma_max": "auto", "sigma_min": 0.1, "levels": 4}}, exclude=[])
    spec = s.train_spec(s.cells[0])
    c = Components(spec)
    ds, sch = c.dataset, c.schedule
    x = ds.train.reshape(len(ds.train), -1).double()
    brute = max(float(torch.cdist(c, x).max()) for c in x.split(2000))
    assert float(sch.sigmas[0]) == pytest.approx(brute, rel=1e-6)
    assert float(sch.sigmas[-1]) == pytest.approx(0.1)
