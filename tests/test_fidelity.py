"""FID/KID/PRC through torch-fidelity with the offline digits feature net.

Checked against known behaviour, never against the code's own output:
- FID of two halves of the same data is far below FID of data against noise, and it rises
  step by step as data is blended into noise (Heusel et al. 2017, Fig. A8);
- a set against itself has precision = recall = 1 exactly (each point lies in its own k-NN
  ball), and FID = 0;
- identical inputs give identical numbers, a changed extractor never reuses cached features,
  and nothing touches the network (socket guard on the whole module).
"""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch_fidelity
from sklearn.datasets import load_digits
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from scorebench.errors import ScorebenchError
from scorebench.metrics import fidelity
from scorebench.metrics.feature_net import load_feature_net, save_feature_net, train_feature_net, weights_hash
from scorebench.metrics.fidelity import fidelity_metrics, reference_features, to_uint8_dataset


class NetworkAccess(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkAccess(f"network access attempted: {args[1:]!r}")


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Any connect or DNS lookup during these tests fails loudly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket.socket, "connect_ex", _refuse)
        mp.setattr(socket, "getaddrinfo", _refuse)
        yield


@pytest.fixture(scope="module")
def digits():
    """sklearn's bundled 8×8 digits as (1797, 1, 8, 8) float32 in [0, 1], with labels."""
    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(data.target)


@pytest.fixture(scope="module")
def halves(digits):
    """Two disjoint random halves: 'generated' (898) and 'reference' (899)."""
    images, _ = digits
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    return images[perm[:898]], images[perm[898:]]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """The digits feature net, trained once (about 2 s) and saved; returns (net, path).

    One thread: these tiny convs gain nothing from two, and on a busy 2-core machine the
    threads' spin-waits made training 20x slower.
    """
    images, labels = digits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = train_feature_net(images, labels, name="digits", epochs=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("featnet") / "digits.pt"
    save_feature_net(net, path)
    return net, path


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fidelity_cache")


@pytest.fixture(scope="module")
def reference(halves, trained, cache_root):
    """Cache name of the reference half's features."""
    return reference_features(halves[1], cache_root=cache_root, cache_name="digits", feature_net_path=trained[1])


def _values(rows):
    return {row["metric"]: row["value"] for row in rows}


def _fid(generated, ref, trained, cache_root, **kw):
    rows = fidelity_metrics(generated, ref, cache_root=cache_root, feature_net_path=trained[1], metrics=("fid",), **kw)
    return _values(rows)["fid"]


# --------------------------------------------------------------------------------------------
# feature net
# --------------------------------------------------------------------------------------------
def test_feature_net_classifies_held_out_digits(trained):
    net, _ = trained
    assert net.info["heldout_accuracy"] > 0.9  # chance is 0.1
    assert net.info["n_heldout"] == round(0.2 * 1797)


def test_feature_net_training_is_deterministic(digits):
    images, labels = digits[0][:300], digits[1][:300]
    first = train_feature_net(images, labels, steps=20, seed=3)
    again = train_feature_net(images, labels, steps=20, seed=3)
    other = train_feature_net(images, labels, steps=20, seed=4)
    assert weights_hash(first) == weights_hash(again)
    assert weights_hash(first) != weights_hash(other)


def test_feature_net_save_load_roundtrip_and_integrity(trained, digits, tmp_path):
    net, path = trained
    loaded = load_feature_net(path)
    x = digits[0][:16]
    assert torch.equal(loaded.features(x)["pool"], net.features(x)["pool"])
    assert loaded.weights_hash == weights_hash(net)
    assert loaded.info["heldout_accuracy"] == net.info["heldout_accuracy"]

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ScorebenchError, match="unreadable"):
        load_feature_net(truncated)

    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.bias"] = payload["state_dict"]["head.bias"] + 1.0
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(ScorebenchError, match="hash mismatch"):
        load_feature_net(edited)
    with pytest.raises(ScorebenchError, match="does not exist"):
        load_feature_net(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def test_to_uint8_dataset_clamps_and_rounds():
    images = torch.tensor([-0.3, 0.0, 0.2 / 255, 0.7 / 255, 0.5, 1.0, 1.4, float("nan")]).view(1, 1, 2, 4)
    dataset = to_uint8_dataset(images)
    assert dataset[0].dtype == torch.uint8 and dataset[0].shape == (1, 2, 4)
    assert dataset[0].flatten().tolist() == [0, 0, 0, 1, 128, 255, 255, 0]  # 127.5 rounds half to even
    rgb = to_uint8_dataset(images, channels=3)[0]
    assert rgb.shape == (3, 2, 4) and torch.equal(rgb[0], rgb[2])
    with pytest.raises(ScorebenchError, match="channels"):
        to_uint8_dataset(torch.zeros(2, 2, 4, 4), channels=3)


# --------------------------------------------------------------------------------------------
# must-show 1: FID orders data, blends and noise correctly
# --------------------------------------------------------------------------------------------
def test_fid_of_two_halves_is_far_below_fid_against_noise(halves, trained, cache_root, reference):
    generated, _ = halves
    noise = torch.rand(generated.shape, generator=torch.Generator().manual_seed(1))
    fid_data = _fid(generated, reference, trained, cache_root)
    fid_noise = _fid(noise, reference, trained, cache_root)
    assert 0 < fid_data < 0.1 * fid_noise  # seen: ~4 vs ~400, a ratio of ~0.01


def test_fid_falls_monotonically_as_noise_is_blended_into_data(halves, trained, cache_root, reference):
    """x = α·data + (1−α)·noise, Gaussian noise N(0.5, 0.5²) clipped to [0, 1] (Heusel et al. 2017)."""
    generated, _ = halves
    noise = 0.5 + 0.5 * torch.randn(generated.shape, generator=torch.Generator().manual_seed(2))
    fids = [_fid(a * generated + (1 - a) * noise, reference, trained, cache_root) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(hi > lo for hi, lo in zip(fids, fids[1:])), fids
    assert fids[-1] < 0.1 * fids[0]


# --------------------------------------------------------------------------------------------
# must-show 5: reproducible numbers
# --------------------------------------------------------------------------------------------
def test_evaluation_twice_gives_identical_numbers(halves, trained, tmp_path):
    generated, ref = halves[0][:300], halves[1]
    kwargs = dict(cache_root=tmp_path, cache_name="digits", feature_net_path=trained[1])
    first = fidelity_metrics(generated, ref, **kwargs)  # computes and caches the reference
    second = fidelity_metrics(generated, ref, **kwargs)  # loads it from the cache
    assert first == second
    assert [row["metric"] for row in first] == ["fid", "kid_mean", "kid_std", "precision", "recall", "f_score"]
    assert {row["extractor"] for row in first} == {"feature_net"}
    assert {(row["n_generated"], row["n_reference"]) for row in first} == {(300, 899)}
    assert all(math.isfinite(row["value"]) for row in first)


# --------------------------------------------------------------------------------------------
# small-sample behaviour
# --------------------------------------------------------------------------------------------
def test_kid_subset_size_adapts_to_50_samples(halves, trained, cache_root, reference):
    generated, _ = halves
    noise = torch.rand(generated[:50].shape, generator=torch.Generator().manual_seed(3))
    kw = dict(cache_root=cache_root, feature_net_path=trained[1], metrics=("kid",), kid_subsets=20)
    # torch-fidelity's default subset (1000) would raise with 50 samples; the adaptive one is 50.
    kid_data = _values(fidelity_metrics(generated[:50], reference, **kw))
    kid_noise = _values(fidelity_metrics(noise, reference, **kw))
    assert math.isfinite(kid_data["kid_mean"]) and kid_data["kid_std"] >= 0
    assert kid_data["kid_mean"] < 0.1 * kid_noise["kid_mean"]
    with pytest.raises(ScorebenchError, match="kid_subset_size=51"):
        fidelity_metrics(generated[:50], reference, kid_subset_size=51, **kw)


def test_precision_recall_of_a_set_against_itself_is_one(halves, trained, tmp_path):
    images = halves[1][:200]
    rows = fidelity_metrics(images, images, cache_root=tmp_path, feature_net_path=trained[1], metrics=("fid", "prc"))
    values = _values(rows)
    # each point is inside its own k-NN ball (distance 0), so every point is covered both ways
    assert values["precision"] == 1.0 and values["recall"] == 1.0 and values["f_score"] == pytest.approx(1.0)
    assert abs(values["fid"]) < 1e-3


def test_too_few_samples_raise_a_named_error(halves, trained, cache_root, reference):
    generated, _ = halves
    kw = dict(cache_root=cache_root, feature_net_path=trained[1])
    with pytest.raises(ScorebenchError, match=r"sampling\.n_samples.*FID/KID need at least 2"):
        fidelity_metrics(generated[:1], reference, metrics=("fid",), **kw)
    with pytest.raises(ScorebenchError, match=r"sampling\.n_samples.*prc_neighborhood=3"):
        fidelity_metrics(generated[:3], reference, metrics=("prc",), **kw)
    assert len(fidelity_metrics(generated[:4], reference, metrics=("prc",), **kw)) == 3  # 4 > k = 3 works
    with pytest.raises(ScorebenchError, match=r"sampling\.n_samples=2000"):
        fidelity_metrics(generated, reference, n_samples=2000, **kw)
    with pytest.raises(ScorebenchError, match=r"evaluation\.fid\.n_reference"):
        fidelity_metrics(generated[:10], generated[:3], metrics=("prc",), **kw)


# --------------------------------------------------------------------------------------------
# cache keys, feature order, offline Inception
# --------------------------------------------------------------------------------------------
def test_changed_weights_get_a_new_cache_key(halves, trained, tmp_path):
    images = halves[1][:300]
    net_b = load_feature_net(trained[1])
    net_b.body[0].weight.mul_(1.5)  # other weights, same architecture and name
    path_b = tmp_path / "digits_b.pt"
    save_feature_net(net_b, path_b)

    cache = tmp_path / "cache"
    name_a = reference_features(images, cache_root=cache, cache_name="digits", feature_net_path=trained[1])
    name_b = reference_features(images, cache_root=cache, cache_name="digits", feature_net_path=path_b)
    assert name_a != name_b

    # identical inputs after swapping the weights: FID ~0, so B never read A's cached features
    fid_b = _values(
        fidelity_metrics(
            images, images, cache_root=cache, cache_name="digits", feature_net_path=path_b, metrics=("fid",)
        )
    )
    assert abs(fid_b["fid"]) < 1e-3
    # ... while A's features really differ from B's (a stale reuse would have shown up)
    feats = {}
    for path in (trained[1], path_b):
        net = load_feature_net(path)
        feats[path] = net.features(to_uint8_dataset(images).images.float() / 255)["pool"]
    stale = fid_statistics_to_metric(*(fid_features_to_statistics(f) for f in feats.values()), False)
    assert stale[torch_fidelity.KEY_METRIC_FID] > 1.0
    # a cache name made with A is refused when B is the extractor
    with pytest.raises(ScorebenchError, match="another feature extractor"):
        fidelity_metrics(images, name_a, cache_root=cache, feature_net_path=path_b)


@pytest.mark.parametrize("order", [["logits", "pool"], ["pool", "logits"]])
def test_extractor_returns_features_in_requested_order(order, trained, halves):
    net, path = trained
    name = fidelity.register_feature_net(load_feature_net(path))
    assert name == f"scorebench-digits-{weights_hash(net)[:8]}"
    extractor = torch_fidelity.utils.create_feature_extractor(name, order, cuda=False, verbose=False)
    batch = to_uint8_dataset(halves[0][:20]).images
    out = extractor.convert_features_tuple_to_dict(extractor(batch))
    expected = net.features(batch.float() / 255)
    assert out["pool"].shape == (20, 128) and out["logits"].shape == (20, 10)
    for layer in order:
        assert torch.allclose(out[layer], expected[layer])


def test_network_guard_is_active():
    with pytest.raises(NetworkAccess):
        socket.create_connection(("example.com", 80), timeout=1)


def test_inception_without_local_weights_fails_fast(halves, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    images = halves[0][:10]
    with pytest.raises(ScorebenchError, match=r"evaluation\.fid\.inception_weights is not set"):
        fidelity_metrics(images, images, cache_root=tmp_path, extractor="inception")
    with pytest.raises(ScorebenchError, match=r"evaluation\.fid\.inception_weights: file .* does not exist"):
        fidelity_metrics(
            images, images, cache_root=tmp_path, extractor="inception", inception_weights=tmp_path / "nope.pth"
        )
    with pytest.raises(ScorebenchError, match="evaluation.fid.extractor"):
        fidelity_metrics(images, images, cache_root=tmp_path, extractor="vgg")


def test_inception_runs_offline_from_a_local_weights_file(halves, tmp_path):
    """Randomly initialised Inception weights stand in for the real file: the plumbing is what's tested
    (1 → 3 channels, upsampling to 299 px inside torch-fidelity, weights hash in the cache name).
    Conv weights are scaled by √6 (He gain over PyTorch's default bound) so features do not vanish."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        torch.manual_seed(0)
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        state = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    state = {k: v * math.sqrt(6) if v.dim() == 4 else v for k, v in state.items()}
    weights = tmp_path / "inception.pth"
    torch.save(state, weights)

    images = halves[1][:2]  # KID's minimum: Inception at 299 px is the costly part
    cache = tmp_path / "cache"
    kw = dict(cache_root=cache, extractor="inception", inception_weights=weights)
    # KID, not FID: FID's 2048² eigendecomposition takes 2-20 s on this 2-core CPU
    rows = fidelity_metrics(images, images, metrics=("kid",), **kw)
    assert rows[0]["extractor"] == "inception" and rows[0]["extractor_id"].startswith("inception-")
    assert math.isfinite(rows[0]["value"])
    (features_file,) = cache.glob("*-inception-v3-compat-features-2048.pt")
    assert rows[0]["extractor_id"] in features_file.name  # the weights hash is in the cache key
    cached = torch.load(features_file, weights_only=False)
    # the 1-channel digits reached Inception as 3 equal channels
    extractor = torch_fidelity.utils.create_feature_extractor(
        "inception-v3-compat", ["2048"], cuda=False, verbose=False, feature_extractor_weights_path=str(weights)
    )
    direct = extractor(to_uint8_dataset(images).images.repeat(1, 3, 1, 1))[0]
    assert cached.shape == (2, 2048) and torch.allclose(cached, direct, atol=1e-5)
    assert (cached[0] - cached[1]).abs().max() > 1e-3  # two different digits, distinct features
