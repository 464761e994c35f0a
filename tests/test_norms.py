"""InstanceNorm++ and CondInstanceNorm++ (scorebench/models/norms.py) against the authors' formula,
written out here in float64 independently of the module (ermongroup/ncsn
models/cond_refinenet_dilated.py `ConditionalInstanceNorm2dPlus`, ermongroup/ncsnv2
models/normalization.py `InstanceNorm2dPlus`): per-sample channel means μ and population variances
over pixels, the channel means' mean m and *unbiased* variance v (torch.var), eps 1e-5 in both."""

import pytest
import torch

from scorebench.errors import ScorebenchError
from scorebench.models import build_model, model_from_config
from scorebench.models.norms import CondInstanceNormPP, InstanceNormPP, instance_norm_pp

EPS = 1e-5


def reference(x, gamma, alpha, beta, divisor_offset=1):
    """z[b,c] = γ[b,c]·((x − μ)/√(s² + eps) + α[b,c]·(μ − m)/√(v + eps)) + β[b,c], loops over b and c."""
    x = x.double()
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        mus = [x[b, c].sum() / (H * W) for c in range(C)]
        m = sum(mus) / C
        v = sum((mu - m) ** 2 for mu in mus) / (C - divisor_offset)
        for c in range(C):
            s2 = ((x[b, c] - mus[c]) ** 2).sum() / (H * W)
            h = (x[b, c] - mus[c]) / torch.sqrt(s2 + EPS)
            out[b, c] = gamma[b, c] * (h + alpha[b, c] * (mus[c] - m) / torch.sqrt(v + EPS)) + beta[b, c]
    return out


def test_conditional_norm_equals_the_authors_formula_in_float64(gen):
    levels, C = 4, 6
    norm = CondInstanceNormPP(C, levels).double()
    with torch.no_grad():
        norm.embed.weight.normal_(generator=gen)  # every γ, α, β away from its initial value
    x = 3 * torch.randn(3, C, 5, 7, generator=gen, dtype=torch.float64) + torch.randn(3, C, 1, 1, generator=gen, dtype=torch.float64)
    level = torch.tensor([0, 3, 1])
    gamma, alpha, beta = norm.embed.weight.detach()[level].chunk(3, dim=1)
    want = reference(x, gamma, alpha, beta)
    got = norm(x, level)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_unconditional_norm_equals_the_authors_formula_in_float64(gen):
    C = 5
    norm = InstanceNormPP(C).double()
    with torch.no_grad():
        for p in (norm.gamma, norm.alpha, norm.beta):
            p.normal_(generator=gen)
    x = torch.randn(2, C, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1
    rows = [p.detach().expand(2, C) for p in (norm.gamma, norm.alpha, norm.beta)]
    torch.testing.assert_close(norm(x), reference(x, *rows), rtol=0, atol=1e-12)


def test_population_option_uses_divisor_c_and_differs_from_the_authors(gen):
    C = 4
    x = torch.randn(2, C, 3, 3, generator=gen, dtype=torch.float64) + torch.arange(C, dtype=torch.float64)[:, None, None]
    g, a, b = (torch.randn(2, C, generator=gen, dtype=torch.float64) for _ in range(3))
    pop = instance_norm_pp(x, g, a, b, channel_var="population")
    torch.testing.assert_close(pop, reference(x, g, a, b, divisor_offset=0), rtol=0, atol=1e-12)
    unbiased = instance_norm_pp(x, g, a, b)
    assert (pop - unbiased).abs().max() > 1e-3  # the option changes the result: the test sees which ran


def test_one_channel_gives_plain_instance_norm_not_nan(gen):
    x = torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64)
    g, a, b = (torch.randn(2, 1, generator=gen, dtype=torch.float64) for _ in range(3))
    out = instance_norm_pp(x, g, a, b)
    mu = x.mean(dim=(2, 3), keepdim=True)
    h = (x - mu) / torch.sqrt(x.var(dim=(2, 3), keepdim=True, correction=0) + EPS)
    torch.testing.assert_close(out, g[:, :, None, None] * h + b[:, :, None, None], rtol=0, atol=1e-12)


def test_second_derivatives_exist_for_sliced_score_matching(gen):
    """Sliced score matching differentiates the network's input gradient again (double backward)."""
    x = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    g, a, b = (torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradgradcheck(lambda *t: instance_norm_pp(*t), (x, g, a, b))


def test_bf16_input_gives_float32_statistics_and_output(gen):
    norm = CondInstanceNormPP(8, 2)
    x = torch.randn(2, 8, 6, 6, generator=gen)
    out = norm(x.bfloat16(), torch.tensor([0, 1]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, norm(x, torch.tensor([0, 1])), rtol=0.05, atol=0.05)


def test_ncsn_defaults_to_the_authors_variance_and_old_configs_keep_theirs(gen):
    sigmas = [1.0, 0.1]
    model = build_model("ncsn", shape=(1, 8, 8), sigmas=sigmas, generator=gen)
    assert model.config["channel_var"] == "unbiased"
    norms = [m for m in model.modules() if isinstance(m, CondInstanceNormPP)]
    assert norms and all(m.channel_var == "unbiased" for m in norms)
    legacy = {k: v for k, v in model.config.items() if k not in ("channel_var", "rescale_input")}
    old = model_from_config(legacy)  # a model.pt written before the option: the population variance
    assert old.config["channel_var"] == "population"
    assert all(m.channel_var == "population" for m in old.modules() if isinstance(m, CondInstanceNormPP))
    old.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 8, 8, generator=gen)
    with torch.no_grad():
        assert (old(x, torch.tensor([1.0, 0.1])) - model(x, torch.tensor([1.0, 0.1]))).abs().max() > 0
    with pytest.raises(ScorebenchError, match="channel_var"):
        build_model("ncsn", shape=(1, 8, 8), sigmas=sigmas, channel_var="biased")
