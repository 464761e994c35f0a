"""The Langevin step convention (scorebench/sampling.py `step_convention`).

The authors' published update, written out here independently of the sampler, as their code runs
it (ermongroup/ncsn runners/anneal_runner.py and ermongroup/ncsnv2 models/__init__.py
`anneal_Langevin_dynamics`): at level i, step_size = step_lr·(σ_i/σ_L)², then T times
grad = s(x, σ_i); x = x + step_size·grad + noise·√(2·step_size); NCSNv2 ends with
x + σ_L²·s(x, σ_L). With the same initial points and the same noise draws (one N(0, I) per step,
drawn after the score, from the same generator), the project's default sampler at ε = their
step_lr must be that chain to float64 rounding.
"""

import json

import pytest
import torch

from scorebench.data.toys import gmm_2mode_mixture
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.results import spec_columns
from scorebench.sampling import SAMPLERS, annealed_langevin, langevin
from scorebench.study import Study, validate_config


def authors_chain(score, x, sigmas, n_steps_each, step_lr, g, denoise):
    for sigma in sigmas:
        step_size = step_lr * (sigma / sigmas[-1]) ** 2
        for _ in range(n_steps_each):
            grad = score(x, torch.full((x.shape[0],), sigma, dtype=x.dtype))
            noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = x + step_size * grad + noise * (step_size * 2) ** 0.5
    if denoise:
        x = x + sigmas[-1] ** 2 * score(x, torch.full((x.shape[0],), sigmas[-1], dtype=x.dtype))
    return x


def geometric(sigma_begin, sigma_end, levels):  # the authors' get_sigmas, in float64
    return torch.exp(torch.linspace(torch.log(torch.tensor(sigma_begin)), torch.log(torch.tensor(sigma_end)),
                                    levels, dtype=torch.float64)).tolist()  # fmt: skip


def mixture_score():
    mix = gmm_2mode_mixture()
    return lambda x, s: mix.score(x, s).to(x.dtype)


def image_gaussian_score(gen):
    """Target N(μ, 0.1² I) with μ a (3, 32, 32) image: at level σ the exact score is −(x − μ)/(0.01 + σ²)."""
    mu = torch.rand(1, 3, 32, 32, generator=gen, dtype=torch.float64)
    return lambda x, s: -(x - mu) / (0.01 + s[:, None, None, None] ** 2)


@pytest.mark.parametrize(
    "target, shape, sigmas, T, step_lr, denoise",
    [
        # NCSN CIFAR-10 sampling (anneal_runner.test: σ 1 → 0.01, L 10, T 100, step_lr 2e-5, no denoising)
        ("mixture", (2,), (1.0, 0.01, 10), 100, 2e-5, False),
        # NCSNv2 CIFAR-10 (configs/cifar10.yml: σ 50 → 0.01, L 232, T 5, step_lr 6.2e-6, denoise)
        ("image", (3, 32, 32), (50.0, 0.01, 232), 5, 6.2e-6, True),
    ],
    ids=["mixture-ncsn", "image-ncsnv2"],
)
def test_default_sampler_is_the_authors_chain(target, shape, sigmas, T, step_lr, denoise, gen):
    score = mixture_score() if target == "mixture" else image_gaussian_score(gen)
    levels = geometric(*sigmas)
    x0 = torch.rand(16, *shape, generator=gen, dtype=torch.float64)
    if target == "mixture":
        x0 = 16 * x0 - 8  # over both modes of the 0.2/0.8 pair
    ours = annealed_langevin(score, x0, levels, n_steps=T, step_size=step_lr, denoise=denoise,
                             generator=torch.Generator().manual_seed(11)).samples  # fmt: skip
    theirs = authors_chain(score, x0, levels, T, step_lr, torch.Generator().manual_seed(11), denoise)
    assert ours.dtype == torch.float64
    assert float((ours - theirs).abs().max()) <= 1e-10
    assert float((ours - x0).abs().max()) > 1e-3  # the chains moved: the comparison is not vacuous
    # the Algorithm-1 form at the same ε is a different chain, and at 2ε the same one
    half = annealed_langevin(score, x0, levels, n_steps=T, step_size=step_lr, denoise=denoise,
                             generator=torch.Generator().manual_seed(11), step_convention="algorithm1").samples  # fmt: skip
    assert float((half - theirs).abs().max()) > 1e3 * 1e-10
    double = annealed_langevin(score, x0, levels, n_steps=T, step_size=2 * step_lr, denoise=denoise,
                               generator=torch.Generator().manual_seed(11), step_convention="algorithm1").samples  # fmt: skip
    assert float((double - theirs).abs().max()) <= 1e-10


def test_algorithm1_form_is_ncsn_algorithm1_as_printed(gen):
    """x ← x + (α_i/2)·s + √α_i·z (Song & Ermon 2019, Algorithm 1), written out."""
    score = mixture_score()
    levels = geometric(5.0, 0.1, 4)
    x0 = torch.randn(32, 2, generator=gen, dtype=torch.float64) * 4
    g = torch.Generator().manual_seed(5)
    x = x0.clone()
    for sigma in levels:
        alpha = 0.05 * sigma**2 / levels[-1] ** 2
        for _ in range(7):
            s = score(x, torch.full((32,), sigma, dtype=torch.float64))
            x = x + alpha / 2 * s + alpha**0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = annealed_langevin(score, x0, levels, n_steps=7, step_size=0.05, generator=torch.Generator().manual_seed(5),
                            step_convention="algorithm1").samples  # fmt: skip
    assert float((got - x).abs().max()) <= 1e-10


def test_plain_langevin_default_is_the_authors_form(gen):
    """ermongroup/ncsn AnnealRunner.Langevin_dynamics: x + step_lr·grad + √(2·step_lr)·z at one level."""
    score = mixture_score()
    x0 = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = x0.clone()
    for _ in range(50):
        grad = score(x, torch.full((64,), 0.1, dtype=torch.float64))
        x = x + 0.01 * grad + torch.randn(x.shape, generator=g, dtype=torch.float64) * (2 * 0.01) ** 0.5
    got = langevin(score, x0, [0.1], n_steps=50, step_size=0.01, generator=torch.Generator().manual_seed(2)).samples
    assert float((got - x).abs().max()) <= 1e-10


def test_every_sampler_defaults_to_the_code_form():
    import inspect

    for name, fn in SAMPLERS.items():
        assert inspect.signature(fn).parameters["step_convention"].default == "code", name


def test_sample_rows_and_files_record_the_convention(tmp_path):
    config = {
        "study": "convention", "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 300, "n_test": 100}}},
        "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
        "objectives": {"oracle": {"kind": "oracle"}}, "training": {"device": "cpu"},
        "sampling": {"n_samples": 8, "batch_size": 8, "samplers": {
            "code": {"kind": "annealed_langevin", "n_steps": 3},
            "alg1": {"kind": "annealed_langevin", "n_steps": 3, "step_convention": "algorithm1"},
        }},
    }  # fmt: skip
    study = Study(validate_config(json.loads(json.dumps(config))))
    cell = study.cells[0]
    train_job(study.train_spec(cell), tmp_path)
    for name, want in (("code", "code"), ("alg1", "algorithm1")):
        spec = study.sample_spec(cell, name)
        assert spec["sampler"]["step_convention"] == want  # the schema default fills it in
        assert spec_columns(study.eval_spec(cell, name))["sampler_step_convention"] == want  # a column of every row
        assert sample_job(spec, tmp_path / "model.pt", tmp_path / f"{name}.npz")["step_convention"] == want
