"""`scorebench import-checkpoint` (scorebench/models/import_authors.py).

The authors' key names and shapes are enumerated here from reading their classes (ermongroup/ncsn
models/cond_refinenet_dilated.py `CondRefineNetDilated`; ermongroup/ncsnv2 models/ncsnv2.py `NCSNv2`,
models/layers.py, models/normalization.py) and their runners' checkpoint layout (a DataParallel
state dict, keys prefixed `module.`; NCSNv2 adds [epoch, step, EMA shadow without the prefix]).
An imported model must consume exactly those keys, put named tensors where the authors' layers
keep them, and an exported-then-imported model must give the same outputs as the original.
"""

import json

import pytest
import torch

from scorebench.cli import main
from scorebench.errors import ScorebenchError
from scorebench.models import build_model
from scorebench.models.import_authors import geometric_sigmas, import_checkpoint, to_authors_state
from scorebench.models.loading import load_score_model


def _conv(shapes, name, c_in, c_out, k=3, bias=True):
    shapes[f"{name}.weight"] = (c_out, c_in, k, k)
    if bias:
        shapes[f"{name}.bias"] = (c_out,)


def _rcu(shapes, name, c, blocks, cond_norm=None):
    for b in range(1, blocks + 1):
        for s in (1, 2):
            if cond_norm:
                shapes[f"{name}.{b}_{s}_norm.embed.weight"] = cond_norm(c)
            _conv(shapes, f"{name}.{b}_{s}_conv", c, c, bias=False)


def ncsn_authors_shapes(ngf, channels, levels):
    """CondRefineNetDilated's state dict: {key: shape}."""
    a, b = ngf, 2 * ngf
    norm = lambda c: (levels, 3 * c)  # noqa: E731 - ConditionalInstanceNorm2dPlus.embed
    shapes = {}
    _conv(shapes, "begin_conv", channels, a)
    _conv(shapes, "end_conv", a, channels)
    shapes["normalizer.embed.weight"] = norm(a)

    def block(name, c_in, c_out, resample=None, dilation=None):
        shapes[f"{name}.normalize1.embed.weight"] = norm(c_in)
        mid = c_in if resample else c_out
        shapes[f"{name}.normalize2.embed.weight"] = norm(mid)
        _conv(shapes, f"{name}.conv1", c_in, mid)
        if resample and dilation is None:  # ConvMeanPool wraps its conv
            _conv(shapes, f"{name}.conv2.conv", mid, c_out)
            _conv(shapes, f"{name}.shortcut.conv", c_in, c_out, k=1)
        else:
            _conv(shapes, f"{name}.conv2", mid, c_out)
            if resample:
                _conv(shapes, f"{name}.shortcut", c_in, c_out)

    block("res1.0", a, a), block("res1.1", a, a)
    block("res2.0", a, b, "down"), block("res2.1", b, b)
    block("res3.0", b, b, "down", 2), block("res3.1", b, b, None, 2)
    block("res4.0", b, b, "down", 4), block("res4.1", b, b, None, 4)
    for name, ins, out, end in (("refine1", [b], b, False), ("refine2", [b, b], b, False),
                                ("refine3", [b, b], a, False), ("refine4", [a, a], a, True)):  # fmt: skip
        for i, c in enumerate(ins):
            _rcu(shapes, f"{name}.adapt_convs.{i}", c, 2, norm)
            if len(ins) > 1:
                shapes[f"{name}.msf.norms.{i}.embed.weight"] = norm(c)
                _conv(shapes, f"{name}.msf.convs.{i}", c, out)
        for i in range(2):
            shapes[f"{name}.crp.norms.{i}.embed.weight"] = norm(out)
            _conv(shapes, f"{name}.crp.convs.{i}", out, out, bias=False)
        _rcu(shapes, f"{name}.output_convs", out, 3 if end else 1, norm)
    return shapes


def ncsnv2_authors_shapes(ngf, channels, levels):
    """NCSNv2's state dict (the 4-stage network of CIFAR-10 and CelebA), with its σ buffer."""
    a, b = ngf, 2 * ngf
    shapes = {"sigmas": (levels,)}
    _conv(shapes, "begin_conv", channels, a)
    _conv(shapes, "end_conv", a, channels)

    def norm(name, c):  # InstanceNorm2dPlus
        for p in ("alpha", "gamma", "beta"):
            shapes[f"{name}.{p}"] = (c,)

    norm("normalizer", a)

    def block(name, c_in, c_out, resample=None, dilation=None):
        mid = c_in if resample else c_out
        norm(f"{name}.normalize1", c_in)
        norm(f"{name}.normalize2", mid)
        _conv(shapes, f"{name}.conv1", c_in, mid)
        if resample and dilation is None:
            _conv(shapes, f"{name}.conv2.conv", mid, c_out)
            _conv(shapes, f"{name}.shortcut.conv", c_in, c_out, k=1)
        else:
            _conv(shapes, f"{name}.conv2", mid, c_out)
            if resample:
                _conv(shapes, f"{name}.shortcut", c_in, c_out)

    block("res1.0", a, a), block("res1.1", a, a)
    block("res2.0", a, b, "down"), block("res2.1", b, b)
    block("res3.0", b, b, "down", 2), block("res3.1", b, b, None, 2)
    block("res4.0", b, b, "down", 4), block("res4.1", b, b, None, 4)
    for name, ins, out, end in (("refine1", [b], b, False), ("refine2", [b, b], b, False),
                                ("refine3", [b, b], a, False), ("refine4", [a, a], a, True)):  # fmt: skip
        for i, c in enumerate(ins):
            _rcu(shapes, f"{name}.adapt_convs.{i}", c, 2)
            if len(ins) > 1:
                _conv(shapes, f"{name}.msf.convs.{i}", c, out)
        for i in range(2):
            _conv(shapes, f"{name}.crp.convs.{i}", out, out, bias=False)
        _rcu(shapes, f"{name}.output_convs", out, 3 if end else 1)
    return shapes


def random_state(shapes, gen):
    return {"module." + k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}


NCSN_SIGMAS = geometric_sigmas(1.0, 0.01, 10)


@pytest.mark.parametrize("preset, shape, ngf", [("mnist", (1, 28, 28), 64), ("cifar10", (3, 32, 32), 128)])
def test_ncsn_export_has_exactly_the_authors_keys_and_shapes(preset, shape, ngf):
    with torch.device("meta"):
        model = build_model("ncsn", shape=shape, sigmas=NCSN_SIGMAS, preset=preset)
    got = {k.removeprefix("module."): tuple(v.shape) for k, v in to_authors_state(model).items()}
    assert got == ncsn_authors_shapes(ngf, shape[0], 10)


@pytest.mark.parametrize("preset, levels", [("cifar10", 232), ("celeba", 500)])
def test_ncsnv2_export_has_exactly_the_authors_keys_and_shapes(preset, levels):
    with torch.device("meta"):
        model = build_model("ncsnv2", shape=(3, 32, 32), preset=preset)
    got = {k.removeprefix("module."): tuple(v.shape) for k, v in to_authors_state(model, sigmas=[1.0] * levels).items()}
    assert got == ncsnv2_authors_shapes(128, 3, levels)


def test_an_authors_state_dict_lands_where_their_layers_keep_it(tmp_path, gen):
    shapes = ncsn_authors_shapes(16, 1, 10)
    state = random_state(shapes, gen)
    torch.save([state, {"state": {}, "param_groups": []}], tmp_path / "checkpoint_5000.pth")  # NCSN: [model, optim]
    summary = import_checkpoint(tmp_path / "checkpoint_5000.pth", tmp_path / "model.pt", arch="ncsn", preset="tiny",
                                shape=(1, 28, 28), sigmas=NCSN_SIGMAS)  # fmt: skip
    assert summary["ema"] is False and summary["levels"] == 10
    model, ckpt = load_score_model(tmp_path / "model.pt", None)
    ours = model.state_dict()
    pairs = {  # their key -> ours, one per renaming rule
        "begin_conv.weight": "conv_in.weight", "normalizer.embed.weight": "norm_out.embed.weight",
        "res2.0.conv2.conv.weight": "res2.0.conv2.weight", "res2.0.shortcut.conv.bias": "res2.0.shortcut.bias",
        "res3.0.shortcut.weight": "res3.0.shortcut.weight", "res1.1.normalize2.embed.weight": "res1.1.norm2.embed.weight",
        "refine2.adapt_convs.1.2_1_norm.embed.weight": "refine2.adapt.1.norms.1.0.embed.weight",
        "refine4.output_convs.3_2_conv.weight": "refine4.out.convs.2.1.weight",
        "refine3.msf.convs.0.bias": "refine3.msf.convs.0.bias", "refine1.crp.norms.1.embed.weight": "refine1.crp.norms.1.embed.weight",
    }  # fmt: skip
    for theirs, mine in pairs.items():
        assert torch.equal(ours[mine], state["module." + theirs]), theirs
    assert ckpt["ema"] is None and ckpt["model_config"]["channel_var"] == "unbiased"


def test_round_trip_gives_the_outputs_of_the_exported_model(tmp_path, gen):
    levels = geometric_sigmas(50.0, 0.01, 12)
    original = build_model("ncsnv2", shape=(3, 16, 16), preset="tiny", generator=gen)
    ema = build_model("ncsnv2", shape=(3, 16, 16), preset="tiny", generator=gen)
    shadow = {k.removeprefix("module."): v for k, v in to_authors_state(ema).items()}  # EMAHelper: no prefix
    states = [to_authors_state(original, sigmas=levels), {}, 7, 12345, shadow]  # NCSNv2's layout
    torch.save(states, tmp_path / "checkpoint.pth")
    code = main(["import-checkpoint", "--checkpoint", str(tmp_path / "checkpoint.pth"), "--out", str(tmp_path / "model.pt"),
                 "--arch", "ncsnv2", "--preset", "tiny", "--shape", "3,16,16"])  # fmt: skip
    assert code == 0
    x = torch.rand(4, 3, 16, 16, generator=gen)
    sigma = torch.tensor([levels[0], levels[3], levels[7], levels[-1]])
    raw, ckpt = load_score_model(tmp_path / "model.pt", None, weights="raw")
    averaged, _ = load_score_model(tmp_path / "model.pt", None, weights="ema")
    with torch.no_grad():
        torch.testing.assert_close(raw(x, sigma), original(x, sigma), rtol=0, atol=0)
        torch.testing.assert_close(averaged(x, sigma), ema(x, sigma), rtol=0, atol=0)
    assert ckpt["step"] == 12345 and ckpt["sigmas"].tolist() == pytest.approx(levels, rel=1e-7)


def test_ncsn_round_trip_and_refusals(tmp_path, gen):
    original = build_model("ncsn", shape=(1, 8, 8), sigmas=NCSN_SIGMAS, preset="tiny", generator=gen)
    torch.save([to_authors_state(original), {}], tmp_path / "c.pth")
    import_checkpoint(tmp_path / "c.pth", tmp_path / "m.pt", arch="ncsn", preset="tiny", shape=(1, 8, 8), sigmas=NCSN_SIGMAS)
    model, _ = load_score_model(tmp_path / "m.pt", None)
    x, sigma = torch.rand(3, 1, 8, 8, generator=gen), torch.tensor([1.0, 0.1, 0.01])
    with torch.no_grad():
        torch.testing.assert_close(model(x, sigma), original(x, sigma), rtol=0, atol=0)
    with pytest.raises(ScorebenchError, match="holds no σ list"):
        import_checkpoint(tmp_path / "c.pth", tmp_path / "m2.pt", arch="ncsn", preset="tiny", shape=(1, 8, 8))
    with pytest.raises(ScorebenchError, match="shape"):  # ngf 16 weights into the mnist preset (ngf 64)
        import_checkpoint(tmp_path / "c.pth", tmp_path / "m2.pt", arch="ncsn", preset="mnist", shape=(1, 8, 8),
                          sigmas=NCSN_SIGMAS)  # fmt: skip
    state = to_authors_state(original)
    state.pop("module.refine4.output_convs.3_2_conv.weight")
    torch.save([state, {}], tmp_path / "broken.pth")
    with pytest.raises(ScorebenchError, match=r"missing \['refine4.output_convs.3_2_conv.weight'\]"):
        import_checkpoint(tmp_path / "broken.pth", tmp_path / "m2.pt", arch="ncsn", preset="tiny", shape=(1, 8, 8),
                          sigmas=NCSN_SIGMAS)  # fmt: skip
    v2 = build_model("ncsnv2", shape=(3, 8, 8), preset="tiny", generator=gen)
    torch.save([to_authors_state(v2, sigmas=[1.0, 0.1]), {}], tmp_path / "v2.pth")
    with pytest.raises(ScorebenchError, match="differs from the one given"):
        import_checkpoint(tmp_path / "v2.pth", tmp_path / "m3.pt", arch="ncsnv2", preset="tiny", shape=(3, 8, 8),
                          sigmas=[1.0, 0.2])  # fmt: skip
    assert json.loads(json.dumps(model.config))["arch"] == "ncsn"
