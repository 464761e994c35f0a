"""NCSNv2's networks (scorebench/models/ncsnv2.py): sizes against the authors' layer lists, s(x)/σ.

The counts are derived layer by layer from ermongroup/ncsnv2 models/ncsnv2.py (`NCSNv2`,
`NCSNv2Deeper`, `NCSNv2Deepest`) and models/layers.py, at the published configs (configs/cifar10.yml,
celeba.yml, church.yml, ffhq.yml: ngf 128, 3 channels, InstanceNorm++, no spectral norm); no σ
conditioning, so L and the image size do not enter. Which class a data set gets is the runner's
`get_model` (runners/ncsn_runner.py): CIFAR10 and CELEBA -> NCSNv2, LSUN -> NCSNv2Deeper, FFHQ ->
NCSNv2Deepest.
"""

import json

import pytest
import torch

from scorebench.errors import ScorebenchError
from scorebench.models import build_model, count_parameters, model_from_config


def authors_parameter_count(ngf: int, channels: int, depth: str) -> int:
    a, b, c = ngf, 2 * ngf, 4 * ngf

    def norm(k):  # InstanceNorm++: γ, α, β per channel
        return 3 * k

    def conv3(i, o, bias=True):
        return 9 * i * o + (o if bias else 0)

    def plain(k):  # norm, conv, norm, conv; identity shortcut
        return 2 * norm(k) + 2 * conv3(k, k)

    def down(i, o):  # conv3x3(i, i), ConvMeanPool(i, o, 3), shortcut ConvMeanPool(i, o, 1) with bias
        return 2 * norm(i) + conv3(i, i) + conv3(i, o) + (i * o + o)

    def down_dilated(i, o):  # dilated conv(i, i), dilated conv(i, o), dilated 3x3 shortcut
        return 2 * norm(i) + conv3(i, i) + 2 * conv3(i, o)

    def rcu(k, blocks):  # RCUBlock: blocks × 2 bias-free 3x3 convs, no norms
        return blocks * 2 * conv3(k, k, bias=False)

    def refine(ins, o, end=False):  # adapt RCUs, MSFBlock convs (with bias), CRPBlock (2 convs), output RCU
        msf = sum(conv3(i, o) for i in ins) if len(ins) > 1 else 0
        return sum(rcu(i, 2) for i in ins) + msf + 2 * conv3(o, o, bias=False) + rcu(o, 3 if end else 1)

    total = conv3(channels, a) + norm(a) + conv3(a, channels)  # begin_conv, normalizer, end_conv
    total += 2 * plain(a) + down(a, b) + plain(b)  # res1, res2
    if depth == "base":
        total += 2 * (down_dilated(b, b) + plain(b))  # res3, res4
        total += refine([b], b) + refine([b, b], b) + refine([b, b], a) + refine([a, a], a, end=True)
    elif depth == "deeper":
        total += down(b, b) + plain(b) + down_dilated(b, c) + plain(c) + down_dilated(c, c) + plain(c)
        total += refine([c], c) + refine([c, c], b) + refine([b, b], b) + refine([b, b], a) + refine([a, a], a, True)
    else:  # deepest: res31 adds one more subsampling stage of width 2·ngf, refine31 its RefineBlock
        total += 2 * (down(b, b) + plain(b)) + down_dilated(b, c) + plain(c) + down_dilated(c, c) + plain(c)
        total += refine([c], c) + refine([c, c], b) + 2 * refine([b, b], b) + refine([b, b], a)
        total += refine([a, a], a, True)
    return total


@pytest.mark.parametrize(
    "preset, shape, depth, expected",
    [
        ("cifar10", (3, 32, 32), "base", 29_694_083),  # configs/cifar10.yml, NCSNv2
        ("celeba", (3, 64, 64), "base", 29_694_083),  # configs/celeba.yml: the same NCSNv2 class at 64x64
        ("church", (3, 64, 64), "deeper", 83_445_379),  # configs/church.yml, NCSNv2Deeper
        ("ffhq", (3, 256, 256), "deepest", 94_132_611),  # configs/ffhq.yml, NCSNv2Deepest
    ],
)
def test_presets_have_the_authors_parameter_counts(preset, shape, depth, expected):
    with torch.device("meta"):
        model = build_model("ncsnv2", shape=shape, preset=preset)
    assert model.config["depth"] == depth and model.config["ngf"] == 128
    assert count_parameters(model) == authors_parameter_count(128, 3, depth) == expected


@pytest.mark.parametrize("depth, shape", [("base", (1, 28, 28)), ("deeper", (3, 16, 16)), ("deepest", (3, 16, 16))])
def test_output_shape_and_exact_one_over_sigma_scaling(depth, shape, gen):
    model = build_model("ncsnv2", shape=shape, depth=depth, generator=gen).double()
    x = torch.rand(1, *shape, generator=gen, dtype=torch.float64).expand(3, *shape)
    sigma = torch.tensor([50.0, 1.0, 0.01], dtype=torch.float64)
    with torch.no_grad():
        out = model(x, sigma)
    assert out.shape == x.shape and torch.isfinite(out).all()
    f = out * sigma[:, None, None, None]  # s(x, σ)·σ is one unconditional f(x)
    torch.testing.assert_close(f[0], f[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(f[2], f[1], rtol=1e-12, atol=0)


def test_rescale_input_switch_and_rebuild_from_config(gen):
    model = build_model("ncsnv2", shape=(3, 8, 8), generator=gen)
    twin = model_from_config(json.loads(json.dumps(model.config)))
    twin.load_state_dict(model.state_dict(), strict=True)
    raw = model_from_config({**model.config, "rescale_input": False})
    raw.load_state_dict(model.state_dict(), strict=True)
    x, sigma = torch.rand(2, 3, 8, 8, generator=gen), torch.tensor([1.0, 0.1])
    with torch.no_grad():
        torch.testing.assert_close(twin(x, sigma), model(x, sigma), rtol=0, atol=0)
        # the authors' network sees 2x − 1 for data in [0, 1] and the data as they are when rescaled
        torch.testing.assert_close(raw(2 * x - 1, sigma), model(x, sigma), rtol=1e-5, atol=1e-5)


def test_sizes_the_subsampling_cannot_halve_are_refused():
    with pytest.raises(ScorebenchError, match="divisible by 4"):
        build_model("ncsnv2", shape=(3, 30, 30), depth="deeper")
    with pytest.raises(ScorebenchError, match="unknown depth"):
        build_model("ncsnv2", shape=(3, 32, 32), depth="deepestest")


def test_study_accepts_ncsnv2_for_images_and_refuses_it_on_toys():
    from scorebench.study import Study, validate_config

    base = {
        "study": "v2", "schedules": {"geom": {"kind": "geometric", "sigma_max": 1.0, "sigma_min": 0.01, "levels": 4}},
        "objectives": {"dsm": {"kind": "dsm"}},
    }  # fmt: skip
    images = {**base, "datasets": {"d": {"kind": "digits"}}, "model": {"image": {"arch": "ncsnv2", "preset": "tiny"}}}
    study = Study(validate_config(images))
    assert study.train_spec(study.cells[0])["model"] == {"arch": "ncsnv2", "preset": "tiny", "scale_by_sigma": True}
    toys = {**base, "datasets": {"mix": {"kind": "gmm_2mode"}}, "model": {"toy": {"arch": "ncsnv2", "preset": "tiny"}}}
    with pytest.raises(ScorebenchError, match=r"model arch ncsnv2 needs images"):
        Study(validate_config(toys))
