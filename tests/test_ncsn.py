"""NCSN's conditional RefineNet (scorebench/models/ncsn.py): size against the paper's layer list,
conditioning by σ level index, rebuild from a checkpoint's config, memory formats, bf16, training.

The registry's contract tests (tests/test_models.py) cover it too; these are the NCSN-specific checks.
"""

import copy
import json

import pytest
import torch

from scorebench.components import Components
from scorebench.errors import ScorebenchError
from scorebench.losses import denoising_score_matching
from scorebench.models import build_model, count_parameters, model_from_config
from scorebench.study import Study, validate_config

SIGMAS10 = [float(s) for s in torch.logspace(0, -2, 10, dtype=torch.float64)]  # NCSN's 10 levels, 1 -> 0.01
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "celeba": (3, 64, 64)}


def paper_parameter_count(ngf: int, channels: int, levels: int) -> int:
    """Parameters of the dilated conditional RefineNet, counted layer by layer from the paper's
    description (appendix B.1) and the reference code's layer list, independently of the module."""
    a, b = ngf, 2 * ngf

    def norm(c):  # CondInstanceNorm++: γ, α, β per level and channel
        return 3 * levels * c

    def conv3(i, o, bias=True):
        return 9 * i * o + (o if bias else 0)

    def res_plain(c):  # two norm-act-conv with equal widths, identity shortcut
        return 2 * norm(c) + 2 * conv3(c, c)

    def rcu(c, blocks):  # blocks × 2 stages of norm + bias-free conv
        return blocks * 2 * (norm(c) + conv3(c, c, bias=False))

    def crp(c):  # 2 stages of norm + bias-free conv (the pooling has no parameters)
        return 2 * (norm(c) + conv3(c, c, bias=False))

    def refine(ins, o, end=False):  # adapting RCUs, fusion (several inputs only), CRP, output RCU
        msf = sum(norm(i) + conv3(i, o) for i in ins) if len(ins) > 1 else 0
        return sum(rcu(i, 2) for i in ins) + msf + crp(o) + rcu(o, 3 if end else 1)

    total = conv3(channels, a) + norm(a) + conv3(a, channels)  # input conv, output norm and conv
    total += 2 * res_plain(a)  # stage 1
    total += norm(a) + conv3(a, a) + norm(a) + conv3(a, b) + (a * b + b) + res_plain(b)  # stage 2, 1x1 shortcut
    total += 2 * (2 * norm(b) + 3 * conv3(b, b) + res_plain(b))  # stages 3, 4: dilated 3x3 shortcut
    total += refine([b], b) + refine([b, b], b) + refine([b, b], a) + refine([a, a], a, end=True)
    return total


def test_cifar10_preset_has_the_papers_30_1_million_parameters():
    with torch.device("meta"):  # counting needs no memory or init time
        model = build_model("ncsn", shape=(3, 32, 32), sigmas=SIGMAS10, preset="cifar10")
    n = count_parameters(model)
    assert abs(n - 30.1e6) <= 0.01 * 30.1e6, n
    assert n == paper_parameter_count(128, 3, 10) == 30_117_635


@pytest.mark.parametrize("preset, shape", [("mnist", (1, 28, 28)), ("celeba", (3, 64, 64)), ("tiny", (3, 32, 32))])
@pytest.mark.parametrize("levels", [1, 10, 232])
def test_parameter_count_matches_the_layer_list(preset, shape, levels):
    sigmas = torch.logspace(0, -2, levels).tolist()
    with torch.device("meta"):
        model = build_model("ncsn", shape=shape, sigmas=sigmas, preset=preset)
    ngf = {"mnist": 64, "celeba": 128, "tiny": 16}[preset]
    assert count_parameters(model) == paper_parameter_count(ngf, shape[0], levels)


@pytest.mark.parametrize("shape", list(SHAPES.values()) + [(1, 8, 8), (1, 7, 9)], ids=str)
def test_output_has_the_input_shape(shape, gen):
    model = build_model("ncsn", shape=shape, sigmas=SIGMAS10, generator=gen)
    x = torch.rand(2, *shape, generator=gen)
    with torch.no_grad():
        out = model(x, torch.tensor([1.0, 0.01]))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


def test_sigma_maps_to_the_nearest_level_in_log_sigma():
    model = build_model("ncsn", shape=(1, 8, 8), sigmas=[10.0, 1.0, 0.1])
    sigma = torch.tensor([10.0, 1.0, 0.1, 20.0, 2.9, 3.5, 0.2, 0.0, 1e-3])
    # √10 ≈ 3.16 is the log-midpoint of 10 and 1; σ = 0 reads as 1e-4, nearest 0.1
    assert model.level_index(sigma).tolist() == [0, 1, 2, 0, 1, 0, 2, 2, 2]
    noiseless = build_model("ncsn", shape=(1, 8, 8), sigmas=[0.0])  # the `none` schedule: one level
    assert noiseless.level_index(torch.tensor([0.0, 1.0])).tolist() == [0, 0]


def test_conditioning_depends_on_the_level_and_only_on_it(gen):
    model = build_model("ncsn", shape=(3, 16, 16), sigmas=SIGMAS10, generator=gen)
    x = torch.rand(1, 3, 16, 16, generator=gen)
    with torch.no_grad():
        outs = [model(x, torch.tensor([s])) for s in SIGMAS10]
        for i in range(len(outs)):
            for j in range(i + 1, len(outs)):
                assert (outs[i] - outs[j]).abs().max() > 1e-4, (i, j)
        # off the grid: exactly the nearest level's output (index conditioning, no interpolation)
        torch.testing.assert_close(model(x, torch.tensor([SIGMAS10[3] * 1.05])), outs[3], rtol=0, atol=0)
        # a batch mixing levels equals each sample alone (norm statistics are per sample)
        xb = x.expand(3, -1, -1, -1)
        together = model(xb, torch.tensor([SIGMAS10[0], SIGMAS10[5], SIGMAS10[9]]))
        torch.testing.assert_close(together, torch.cat([outs[0], outs[5], outs[9]]), rtol=1e-5, atol=1e-5)


def test_rebuild_from_config_gives_identical_outputs(gen):
    model = build_model("ncsn", shape=(1, 28, 28), sigmas=SIGMAS10, generator=gen, scale_by_sigma=True)
    config = json.loads(json.dumps(model.config))  # as a checkpoint stores it
    assert config["arch"] == "ncsn" and config["sigmas"] == SIGMAS10 and config["ngf"] == 16
    twin = model_from_config(config)
    assert twin.config == model.config
    state = model.state_dict()
    assert "sigmas" not in state  # the config carries the σ list; the state dict holds weights only
    twin.load_state_dict(state, strict=True)
    torch.testing.assert_close(twin.sigmas, model.sigmas, rtol=0, atol=0)
    x = torch.rand(3, 1, 28, 28, generator=gen)
    sigma = torch.tensor([1.0, 0.1, 0.01])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, sigma), model(x, sigma), rtol=0, atol=0)


def test_channels_last_input_gives_the_same_output(gen):
    model = build_model("ncsn", shape=(3, 32, 32), sigmas=SIGMAS10, generator=gen)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    sigma = torch.tensor([0.5, 0.02])
    with torch.no_grad():
        plain = model(x, sigma)
        cl = model(x.contiguous(memory_format=torch.channels_last), sigma)
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        both = model_cl(x.contiguous(memory_format=torch.channels_last), sigma)
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both, plain, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs_and_stays_close_to_fp32(gen):
    model = build_model("ncsn", shape=(3, 16, 16), sigmas=SIGMAS10, generator=gen)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    sigma = torch.tensor([1.0, 0.05])
    with torch.no_grad():
        ref = model(x, sigma)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, sigma)
    assert torch.isfinite(low).all()
    assert float((low.float() - ref).norm() / ref.norm()) < 0.05  # bf16 keeps ~3 significant digits


def test_a_few_dsm_steps_lower_the_loss(gen):
    torch.manual_seed(0)
    model = build_model("ncsn", shape=(1, 8, 8), sigmas=SIGMAS10, generator=gen)
    x = torch.rand(16, 1, 8, 8, generator=gen)
    levels = torch.randint(0, 10, (16,), generator=gen)
    sigma = torch.tensor(SIGMAS10)[levels].float()
    weight = sigma**2  # NCSN's λ(σ) = σ²

    def loss(seed):  # the same perturbation noise before and after training
        return denoising_score_matching(model, x, sigma, weight, generator=torch.Generator().manual_seed(seed)).mean()

    with torch.no_grad():
        before = float(loss(99))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(10):
        opt.zero_grad()
        loss(step).backward()
        opt.step()
    with torch.no_grad():
        after = float(loss(99))
    assert after < 0.9 * before, (before, after)  # measured: 32.8 -> 27.0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(sigmas=None), r"needs the schedule's σ list"),
        (dict(sigmas=[1.0, 1.0, 0.1]), r"distinct"),
        (dict(sigmas=[]), r"non-empty"),
        (dict(sigmas=[1.0, -0.1]), r"σ >= 0"),
        (dict(shape=(2,)), r"shape \(2,\) refused.*\(C, H, W\)"),
        (dict(shape=(1, 1, 8)), r"H and W >= 2"),
        (dict(preset="base"), r"unknown preset 'base'.*cifar10"),
        (dict(ngf=0), r"ngf: need an integer >= 1"),
        (dict(sigmas=[1.0, 0.0], scale_by_sigma=True), r"scale_by_sigma"),
    ],
)
def test_bad_input_raises_a_named_error(kwargs, pattern):
    args = {"shape": (1, 8, 8), "sigmas": [1.0, 0.1], **kwargs}
    with pytest.raises(ScorebenchError, match=pattern):
        build_model("ncsn", **args)


def test_study_builds_ncsn_for_images_and_refuses_it_on_toys():
    base = {
        "study": "s",
        "datasets": {"digits": {"kind": "digits"}},
        "schedules": {"geom": {"kind": "geometric", "sigma_max": 1, "sigma_min": 0.1, "levels": 3}},
        "objectives": {"dsm": {"kind": "dsm"}},
        "model": {"image": {"arch": "ncsn", "preset": "tiny"}},
    }
    s = Study(validate_config(copy.deepcopy(base)))
    (cell,) = s.cells
    spec = s.train_spec(cell)
    c = Components(spec)
    schedule, model = c.schedule, c.new_model()
    assert model.config["arch"] == "ncsn" and model.config["sigmas"] == schedule.sigmas.tolist()
    toy = copy.deepcopy(base)
    toy["datasets"] = {"mix": {"kind": "gmm_2mode"}}
    toy["model"] = {"toy": {"arch": "ncsn", "preset": "tiny"}}
    with pytest.raises(ScorebenchError, match=r"mix/geom/dsm: model arch ncsn needs images"):
        Study(validate_config(toy))
