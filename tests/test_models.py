"""Contract tests for every registered score network, plus the oracle and the registry's errors.

Derivatives are checked against central finite differences in float64, the oracle against the
closed-form score of Gaussian mixtures, and parameter counts against the MLP's layer arithmetic.
"""

import json
import math

import pytest
import torch

from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.data.toys import gmm_2mode_mixture
from scorebench.errors import ScorebenchError
from scorebench.models import (
    MODELS,
    OracleScore,
    build_model,
    build_oracle,
    count_parameters,
    model_from_config,
)
from scorebench.noise import make_schedule

SHAPES = {
    "mlp": [(2,), (1, 8, 8)], "ncsn": [(1, 8, 8), (3, 32, 32)], "ncsnv2": [(1, 8, 8), (3, 32, 32)],
    "unet": [(1, 8, 8), (3, 32, 32)],
}  # fmt: skip
CASES = [(arch, shape) for arch in sorted(MODELS) for shape in SHAPES[arch]]
SIGMAS = [10.0, 1.0, 0.1]


def _ids(case):
    arch, shape = case
    return f"{arch}-{'x'.join(map(str, shape))}"


def test_every_registered_arch_has_contract_shapes():
    assert set(SHAPES) == set(MODELS)


@pytest.fixture(params=CASES, ids=_ids)
def case(request):
    return request.param


def _inputs(shape, gen, batch=3, dtype=torch.float32):
    x = torch.randn(batch, *shape, generator=gen, dtype=dtype)
    sigma = torch.tensor([5.0, 0.5, 0.05][:batch], dtype=dtype)
    return x, sigma


def test_output_shape_dtype_and_finite(case, gen):
    arch, shape = case
    model = build_model(arch, shape=shape, sigmas=SIGMAS, scale_by_sigma=False)  # ncsnv2's preset scales
    x, _ = _inputs(shape, gen)
    sigma = torch.tensor([10.0, 0.1, 0.0], dtype=torch.float64)  # schedule dtype; σ = 0 is the `none` level
    with torch.no_grad():
        out = model(x, sigma)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_different_sigma_gives_different_output(case, gen):
    arch, shape = case
    model = build_model(arch, shape=shape, sigmas=SIGMAS)
    x, _ = _inputs(shape, gen, batch=1)
    # ncsn conditions on the index of the nearest level of its own σ list: only its levels differ
    # ncsnv2 is s(x)/σ: σ = 0 is outside its domain
    sigmas = SIGMAS if getattr(model, "NEEDS_SIGMAS", False) else (1.0, 1.01, 0.1, 0.0)[: 3 if arch == "ncsnv2" else 4]
    with torch.no_grad():
        outs = [model(x, torch.tensor([s])) for s in sigmas]
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            assert (outs[a] - outs[b]).abs().max() > 1e-6, (a, b)


def test_sample_score_does_not_depend_on_the_batch(case, gen):
    arch, shape = case
    model = build_model(arch, shape=shape, sigmas=SIGMAS)
    x, sigma = _inputs(shape, gen)
    with torch.no_grad():
        together = model(x, sigma)
        alone = torch.cat([model(x[i : i + 1], sigma[i : i + 1]) for i in range(x.shape[0])])
    # float32 rounding relative to the output's size (ncsnv2's s(x)/σ is 20x larger at σ = 0.05)
    atol = 1e-5 * max(1.0, float(together.abs().max()))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=atol)


def test_weights_are_deterministic_given_the_seed_and_leave_global_rng_alone(case):
    arch, shape = case
    before = torch.get_rng_state()
    a = build_model(arch, shape=shape, sigmas=SIGMAS, generator=torch.Generator().manual_seed(7)).state_dict()
    b = build_model(arch, shape=shape, sigmas=SIGMAS, generator=torch.Generator().manual_seed(7)).state_dict()
    c = build_model(arch, shape=shape, sigmas=SIGMAS, generator=torch.Generator().manual_seed(8)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    with torch.random.fork_rng(devices=[]):  # without a generator the global RNG picks the seed
        torch.manual_seed(3)
        d = build_model(arch, shape=shape, sigmas=SIGMAS).state_dict()
        torch.manual_seed(3)
        e = build_model(arch, shape=shape, sigmas=SIGMAS).state_dict()
    assert a.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(d[k], e[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].numel() > 1)


def test_model_from_config_rebuilds_the_architecture(case, gen):
    arch, shape = case
    model = build_model(arch, shape=shape, sigmas=SIGMAS, generator=gen, scale_by_sigma=True)
    config = json.loads(json.dumps(model.config))  # as a checkpoint stores it
    assert config["arch"] == arch and config["preset"] == "tiny" and tuple(config["shape"]) == shape
    assert set(MODELS[arch].PRESETS["tiny"]) <= set(config) and config["scale_by_sigma"] is True
    twin = model_from_config(config)
    assert twin.config == model.config
    twin.load_state_dict(model.state_dict(), strict=True)
    x, sigma = _inputs(shape, gen)
    with torch.no_grad():
        torch.testing.assert_close(twin(x, sigma), model(x, sigma), rtol=0, atol=0)


def _central_difference(f, x, direction, eps=1e-4):
    return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)


def test_first_and_second_derivatives_match_finite_differences(case, gen):
    """Exact SM needs ∂/∂x of the score (Jacobian trace) and its gradient again: check both in float64."""
    arch, shape = case
    # SiLU is C-infinity; ncsn's ELU has a jump in its second derivative at 0 that central differences
    # straddle (errors ~1e-6 relative): the check is of the network's derivatives, so use a smooth one
    model = build_model(arch, shape=shape, sigmas=SIGMAS, generator=gen, activation="silu").double()
    x = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.2], dtype=torch.float64)
    v, u, w = (torch.randn(x.shape, generator=gen, dtype=torch.float64) for _ in range(3))
    # ncsnv2's max pooling (the authors') is smooth only where no 5x5 window's maximum changes hands:
    # a smaller step keeps the differences inside one piece (float64 rounding stays ~1e-10 relative)
    eps = 1e-6 if arch == "ncsnv2" else 1e-4

    def v_dot_score(x_):
        return (model(x_, sigma) * v).sum()

    def vjp(x_, create_graph=False):  # Jᵀv = ∇ₓ (v · s(x))
        x_ = x_.detach().requires_grad_(True)
        return torch.autograd.grad(v_dot_score(x_), x_, create_graph=create_graph)[0], x_

    def h(x_, create_graph=False):  # u · Jᵀv
        g, x_ = vjp(x_, create_graph)
        return (g * u).sum(), x_

    with torch.no_grad():
        fd1 = _central_difference(v_dot_score, x, u, eps)
    assert float(h(x)[0]) == pytest.approx(float(fd1), rel=1e-6, abs=1e-8)

    hx, x_leaf = h(x, create_graph=True)
    grad_h_x, *grad_h_params = torch.autograd.grad(hx, [x_leaf, *model.parameters()], allow_unused=True)
    fd2 = _central_difference(lambda z: h(z)[0].detach(), x, w, eps)
    assert float((grad_h_x * w).sum()) == pytest.approx(float(fd2), rel=1e-5, abs=1e-7)
    assert float(grad_h_x.abs().max()) > 1e-8  # curvature in x: a piecewise-linear (ReLU) net has none
    # the loss gradient in θ of a Jacobian term (exact SM) exists and is not identically zero
    used = [g for g in grad_h_params if g is not None]
    assert used and all(torch.isfinite(g).all() for g in used)
    assert sum(float(g.abs().sum()) for g in used) > 0


def test_scale_by_sigma_divides_the_unscaled_twin_by_sigma(case, gen):
    arch, shape = case
    plain = build_model(
        arch, shape=shape, sigmas=SIGMAS, generator=torch.Generator().manual_seed(5), scale_by_sigma=False
    )
    scaled = build_model(
        arch, shape=shape, sigmas=SIGMAS, generator=torch.Generator().manual_seed(5), scale_by_sigma=True
    )
    scaled.load_state_dict(plain.state_dict(), strict=True)  # same weights, whatever the init
    x, sigma = _inputs(shape, gen)
    with torch.no_grad():
        ratio_target = plain(x, sigma) / sigma.reshape(-1, *([1] * len(shape)))
        torch.testing.assert_close(scaled(x, sigma), ratio_target, rtol=1e-6, atol=1e-6)
        # and it is not a no-op: at σ = 0.05 the output is 20x the unscaled one
        assert not torch.allclose(scaled(x, sigma), plain(x, sigma))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_scale_by_sigma_refuses_a_zero_sigma(arch):
    shape = SHAPES[arch][0]
    none_sigmas = make_schedule("none").sigmas
    with pytest.raises(ScorebenchError, match="scale_by_sigma"):
        build_model(arch, shape=shape, sigmas=none_sigmas, scale_by_sigma=True)
    with pytest.raises(ScorebenchError, match="scale_by_sigma"):
        build_model(arch, shape=shape, sigmas=[1.0, 0.0], scale_by_sigma=True)
    build_model(arch, shape=shape, sigmas=none_sigmas, scale_by_sigma=False)  # unscaled is fine on the noiseless schedule


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64), (1, 7, 9)], ids=str)
def test_unet_handles_odd_sizes_and_deep_downsampling(shape, gen):
    model = build_model("unet", shape=shape, sigmas=SIGMAS, channel_mult=[1, 2, 2, 2], channels=8)
    x, sigma = _inputs(shape, gen, batch=2)
    with torch.no_grad():
        out = model(x, sigma)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("preset", ["tiny", "small", "medium"])
@pytest.mark.parametrize("dim", [2, 64])
def test_mlp_parameter_count_matches_layer_arithmetic(preset, dim):
    p = MODELS["mlp"].PRESETS[preset]
    h, n_layers, e = p["hidden"], p["layers"], p["embed_dim"]
    expected = (dim * h + h) + (n_layers - 1) * (h * h + h) + n_layers * (e * h + h) + (h * dim + dim)
    shape = (dim,) if dim == 2 else (1, 8, 8)
    assert count_parameters(build_model("mlp", shape=shape, sigmas=SIGMAS, preset=preset)) == expected


# ---------------------------------------------------------------------------------------------
# oracle


def _two_mode_score(x, sigma):
    """∇ log Σ_k w_k N(x; μ_k, (1 + σ²) I) for Song & Ermon's 0.2/0.8 mixture, by hand."""
    mus = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=torch.float64)
    w = torch.tensor([0.2, 0.8], dtype=torch.float64)
    var = 1.0 + sigma[:, None] ** 2  # (B, 1); equal variances, so the normaliser cancels
    d2 = ((x[:, None, :] - mus[None]) ** 2).sum(-1)  # (B, K)
    r = torch.softmax(torch.log(w)[None] - 0.5 * d2 / var, dim=1)
    return ((r[:, :, None] * (mus[None] - x[:, None, :])).sum(1)) / var


def test_oracle_returns_the_mixture_score(gen):
    oracle = build_oracle(gmm_2mode_mixture())
    x = (6 * torch.randn(64, 2, generator=gen, dtype=torch.float64)).float()
    sigma = torch.rand(64, generator=gen, dtype=torch.float64) * 3
    out = oracle(x, sigma.float())
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.double(), _two_mode_score(x.double(), sigma.float().double()), rtol=1e-4, atol=1e-4)


def test_oracle_on_an_image_point_mass_is_the_gaussian_score(gen):
    mu = torch.rand(1, 1, 8, 8, generator=gen)
    oracle = OracleScore(IsotropicGaussianMixture(mu, 0.0))  # empirical distribution of one image
    x = torch.rand(3, 1, 8, 8, generator=gen)
    sigma = torch.tensor([0.1, 0.5, 2.0])
    torch.testing.assert_close(oracle(x, sigma), (mu - x) / sigma[:, None, None, None] ** 2, rtol=1e-5, atol=1e-5)


def test_oracle_has_no_parameters_moves_and_rebuilds(gen):
    dist = gmm_2mode_mixture()
    oracle = build_oracle(dist)
    assert count_parameters(oracle, trainable_only=False) == 0 and list(oracle.parameters()) == []
    assert oracle.state_dict() == {}  # nothing to checkpoint
    assert oracle.config == {"arch": "oracle"}
    x = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    assert oracle.to(torch.float64)(x, torch.full((4,), 0.3, dtype=torch.float64)).dtype == torch.float64
    rebuilt = model_from_config(json.loads(json.dumps(oracle.config)), distribution=dist)
    torch.testing.assert_close(rebuilt(x, 0.3), oracle(x, 0.3))
    with pytest.raises(ScorebenchError, match="oracle"):
        model_from_config({"arch": "oracle"})


# ---------------------------------------------------------------------------------------------
# errors: one line naming the field and the valid choices


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(arch="resnet", shape=(2,)), r"model.arch: unknown 'resnet'.*\['mlp', 'ncsn', 'ncsnv2', 'unet'\]"),
        (dict(arch="oracle", shape=(2,)), r"build_oracle"),
        (dict(arch="mlp", shape=(2,), preset="huge"), r"unknown preset 'huge'.*tiny"),
        (dict(arch="unet", shape=(1, 8, 8), preset="medium"), r"unknown preset 'medium'.*base"),
        (dict(arch="mlp", shape=(2,), hiddn=32), r"unknown option\(s\) \['hiddn'\].*hidden"),
        (dict(arch="mlp", shape=(2,), activation="relu"), r"activation: unknown 'relu'.*silu"),
        (dict(arch="mlp", shape=(2,), layers=0), r"layers: need an integer >= 1"),
        (dict(arch="mlp", shape=(2,), scale_by_sigma="yes"), r"scale_by_sigma: need true or false"),
        (dict(arch="unet", shape=(1, 8, 8), channel_mult=[]), r"channel_mult: need a non-empty list"),
        (dict(arch="unet", shape=(2,)), r"shape \(2,\) refused.*\(C, H, W\)"),
        (dict(arch="unet", shape=(8, 8)), r"shape \(8, 8\) refused"),
        (dict(arch="mlp", shape=()), r"shape \(\) refused"),
        (dict(arch="mlp", shape=(0, 2)), r"model.shape: need positive sizes"),
    ],
)
def test_bad_input_raises_a_named_error(kwargs, pattern):
    arch = kwargs.pop("arch")
    shape = kwargs.pop("shape")
    with pytest.raises(ScorebenchError, match=pattern):
        build_model(arch, shape=shape, sigmas=SIGMAS, **kwargs)


def test_bad_config_and_oracle_inputs_raise_named_errors():
    with pytest.raises(ScorebenchError, match="'arch'"):
        model_from_config({"shape": [2]})
    with pytest.raises(ScorebenchError, match="missing 'shape'"):
        model_from_config({"arch": "mlp"})
    with pytest.raises(ScorebenchError, match="IsotropicGaussianMixture"):
        build_oracle("gmm_2mode")


def test_sigma_embedding_is_finite_at_zero_and_bounded():
    from scorebench.models.mlp import SIGMA_FLOOR, SigmaEmbedding

    emb = SigmaEmbedding(32)
    feats = emb(torch.tensor([0.0, SIGMA_FLOOR, 1.0, 1e4]))
    assert torch.isfinite(feats).all() and feats.abs().max() <= 1.0
    torch.testing.assert_close(feats[0], feats[1])  # σ = 0 reads as the floor
    # each (sin, cos) pair lies on the unit circle: sin² + cos² = 1
    torch.testing.assert_close(feats[:, :16] ** 2 + feats[:, 16:] ** 2, torch.ones(4, 16))
    assert math.isclose(float(feats[2, 16:].min()), 1.0)  # log 1 = 0: every cosine is 1
