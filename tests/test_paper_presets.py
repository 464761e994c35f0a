"""The paper presets (config/studies/paper_*.yaml) resolve to the authors' values listed, with their
sources, in docs/paper_presets.md: the test reads that table and checks every cell against the
settings the workflow would run (the one cell's sample and evaluation specs, the model preset the
network is built from, the optimiser the trainer makes). `snakemake -n` of each preset is part of
tests/test_studies.py's dry run of every study config."""

import re
from pathlib import Path

import pytest
import torch

from scorebench.models import MODELS
from scorebench.optim import make_adam
from scorebench.study import Study, load_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper_presets.md"
PRESETS = ["ncsn_mnist", "ncsn_cifar10", "ncsnv2_cifar10", "ncsnv2_celeba64"]


def read_table() -> dict[str, dict[str, str]]:
    """{key: {preset: cell text}} from the marked table of docs/paper_presets.md."""
    text = DOC.read_text()
    body = text.split("<!-- paper-presets-table -->")[1].split("<!-- /paper-presets-table -->")[0]
    rows = [r for r in body.strip().splitlines() if r.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[1:5] == PRESETS and header[0] == "key" and header[5] == "source"
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        key = cells[0].strip("`")
        assert cells[5], f"{key}: no source"
        table[key] = dict(zip(PRESETS, cells[1:5]))
    return table


def parse(cell: str):
    if cell in ("true", "false"):
        return cell == "true"
    if cell == "null":
        return None
    try:
        return float(cell)
    except ValueError:
        return cell


def resolved(preset: str) -> dict:
    """Every table key's value as the workflow resolves it for the preset's one cell and sampler."""
    study = Study(load_config(ROOT / "config" / "studies" / f"paper_{preset}.yaml"))
    assert len(study.cells) == 1 and len(study.samplers) == 1
    cell, sampler = study.cells[0], study.samplers[0]
    spec = study.eval_spec(cell, sampler)
    model = MODELS[spec["model"]["arch"]].PRESETS[spec["model"]["preset"]]
    adam = make_adam([torch.zeros(1, requires_grad=True)], lr=spec["training"]["lr"], beta1=0.9, kind="loop")
    group = adam.param_groups[0]
    values = {
        "seed": spec["seed"],
        "optimizer.beta2": group["betas"][1],
        "optimizer.eps": group["eps"],
        "evaluation.fid.extractor": spec["evaluation"]["extractor"],
        "evaluation.fid.n_reference": spec["evaluation"]["n_reference"],
    }
    for owner in ("dataset", "schedule", "objective", "training", "sampler", "sampling"):
        for key, value in spec[owner].items():
            values[f"{owner}.{key}"] = value
    for key, value in spec["dataset"]["options"].items():
        values[f"dataset.options.{key}"] = value
    for key, value in {**model, **spec["model"]}.items():
        values[f"model.{key}"] = value
    return values


TABLE = read_table()


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_resolves_to_the_authors_values(preset):
    got = resolved(preset)
    checked = 0
    for key, cells in TABLE.items():
        want = parse(cells[preset])
        if want == "—":
            continue
        assert key in got, f"{preset}: the table's key {key} is not a resolved setting"
        if isinstance(want, float) and not isinstance(got[key], bool):
            assert got[key] == pytest.approx(want, rel=1e-12), (preset, key)
        else:
            assert got[key] == want, (preset, key, got[key])
        checked += 1
    assert checked >= 30  # the table is not quietly emptied


def test_the_table_covers_every_setting_the_papers_fix():
    needed = {
        "schedule.sigma_max", "schedule.sigma_min", "schedule.levels", "schedule.weighting", "model.arch",
        "model.ngf", "model.channel_var", "model.scale_by_sigma", "training.ema_decay", "training.lr",
        "training.batch_size", "training.steps", "training.grad_clip", "optimizer.beta2", "optimizer.eps",
        "dataset.options.uniform_dequantization", "dataset.options.random_flip", "dataset.options.logit_transform",
        "dataset.options.rescaled", "sampler.n_steps", "sampler.step_size", "sampler.step_convention",
        "sampler.denoise", "sampling.n_samples",
    }  # fmt: skip
    assert needed <= set(TABLE)


def test_presets_use_the_papers_level_count_not_the_rule():
    """The rule (kind ncsnv2) would give 220 and 473 levels; the presets keep the paper's 232 and 500."""
    import math

    from scorebench.ncsnv2_rules import ncsnv2_ratio

    for preset, dim, levels in (("ncsnv2_cifar10", 3072, 232), ("ncsnv2_celeba64", 3 * 64 * 64, 500)):
        sch = resolved(preset)
        rule = math.ceil(math.log(sch["schedule.sigma_max"] / 0.01) / math.log(ncsnv2_ratio(dim))) + 1
        assert sch["schedule.levels"] == levels and rule == {3072: 220, 12288: 473}[dim]
        assert re.search(rf"\b{rule}\b", DOC.read_text())  # the docs say so
