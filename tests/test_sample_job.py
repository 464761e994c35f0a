"""The sample job in chunks: a preempted run resumes to exactly the samples of an uninterrupted one.

The cell uses the oracle objective (the exact mixture score, no training), so the job is cheap and
its samples depend only on the sampler and the chunks' seeds. Preemption is a real SIGTERM that
the score function sends to this process during the first chunk.
"""

import json
import os
import signal

import numpy as np
import pytest
import torch

import scorebench.models.loading as loading
from scorebench.components import Components
from scorebench.errors import Preempted, ScorebenchError
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.ncsnv2_rules import ncsnv2_step_size
from scorebench.sampling import SAMPLERS, chain_starts
from scorebench.seeds import derive_seed
from scorebench.study import Study, validate_config

N, CHUNK = 50, 16  # four chunks: 16, 16, 16, 2

CONFIG = {
    "study": "chunks",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
    "objectives": {"oracle": {"kind": "oracle"}},
    "training": {"device": "cpu"},
    "sampling": {
        "n_samples": N,
        "batch_size": CHUNK,
        "snapshots": 3,
        "samplers": {
            "annealed": {"kind": "annealed_langevin", "n_steps": 4},
            "longer": {"kind": "annealed_langevin", "n_steps": 5},
        },
    },
}


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """Sample specs of one oracle cell and its model file."""
    study = Study(validate_config(json.loads(json.dumps(CONFIG))))
    c = study.cells[0]
    out = tmp_path_factory.mktemp("cell")
    train_job(study.train_spec(c), out)
    return {name: study.sample_spec(c, name) for name in ("annealed", "longer")}, out / "model.pt"


@pytest.fixture
def score_calls(monkeypatch):
    """Counts score evaluations of the job; `kill_at` sends SIGTERM to this process at that call."""
    state = {"calls": 0, "kill_at": None}
    real = loading.score_fn_on

    def counting(model, device, **kw):
        fn = real(model, device, **kw)

        def score(x, s):
            state["calls"] += 1
            if state["calls"] == state["kill_at"]:
                os.kill(os.getpid(), signal.SIGTERM)
            return fn(x, s)

        return score

    monkeypatch.setattr(loading, "score_fn_on", counting)
    return state


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_preempted_run_resumes_to_the_uninterrupted_samples(tmp_path, cell, score_calls):
    specs, model = cell
    spec = specs["annealed"]
    nfe = 3 * 4 + 1  # levels × steps + the denoising step
    full = sample_job(spec, model, tmp_path / "full.npz")
    assert score_calls["calls"] == 4 * nfe
    assert full["n_samples"] == N and full["chunk_size"] == CHUNK and full["n_chunks"] == 4 and full["nfe"] == nfe
    assert full["resumed_chunks"] == 0 and full["samples_per_s"] > 0

    out = tmp_path / "cut.npz"
    score_calls.update(calls=0, kill_at=2)  # SIGTERM in the middle of chunk 0: it finishes, then the job stops
    with pytest.raises(Preempted, match="SIGTERM after chunk 1/4"):
        sample_job(spec, model, out)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "cut.npz.chunks").iterdir()) == ["chunk_00000.npz", "chunks.json"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the job gave the handler back

    score_calls.update(calls=0, kill_at=None)
    meta = sample_job(spec, model, out)
    assert score_calls["calls"] == 3 * nfe  # chunk 0 was not drawn again
    assert meta["resumed_chunks"] == 1 and meta["n_samples"] == N
    assert not (tmp_path / "cut.npz.chunks").exists()
    a, b = load(tmp_path / "full.npz"), load(out)
    assert a["samples"].shape == (N, 2) and np.isfinite(a["samples"]).all()
    for key in ("samples", "snapshots", "snapshot_level", "snapshot_step"):
        assert np.array_equal(a[key], b[key]), key
    assert a["snapshots"].shape[1] == CHUNK  # snapshots follow the first chunk's chains


def test_chunks_are_the_sampler_run_with_per_chunk_seeds(tmp_path, cell):
    """Independent path: each block of the file is the sampler itself on that chunk's own generator."""
    specs, model = cell
    spec = specs["annealed"]
    sample_job(spec, model, tmp_path / "s.npz")
    samples = load(tmp_path / "s.npz")["samples"]
    c = Components(spec)
    device, dataset, schedule = c.device, c.dataset, c.schedule
    oracle, _ = c.trained_model(model, "ema")
    sigmas = schedule.sigmas.float()
    s64 = schedule.sigmas  # the default step_rule ncsnv2: Eq. 4 for σ_L, γ = (σ_1/σ_L)^(1/(L−1)) and T = 4
    eps = ncsnv2_step_size(float(s64[-1]), float(s64[0] / s64[-1]) ** (1 / (len(s64) - 1)), 4, "code")
    for k, start in enumerate(range(0, N, CHUNK)):
        m = min(CHUNK, N - start)
        g = torch.Generator().manual_seed(derive_seed(spec["seed"], "sample", "annealed", str(k)))
        x0 = chain_starts(
            dataset, m, kind="annealed_langevin", sigma_max=float(sigmas[0]), generator=g, device=device
        )
        ref = SAMPLERS["annealed_langevin"](oracle, x0, sigmas, n_steps=4, step_size=eps, generator=g, denoise=True)
        assert np.array_equal(samples[start : start + m], ref.samples.numpy()), k


def test_chunks_of_other_settings_are_not_reused(tmp_path, cell, score_calls):
    specs, model = cell
    out = tmp_path / "s.npz"
    score_calls.update(kill_at=1)
    with pytest.raises(Preempted):
        sample_job(specs["annealed"], model, out)  # leaves chunk 0 of the 4-step sampler
    score_calls.update(calls=0, kill_at=None)
    meta = sample_job(specs["longer"], model, out)
    assert meta["resumed_chunks"] == 0 and score_calls["calls"] == 4 * (3 * 5 + 1)
    fresh = sample_job(specs["longer"], model, tmp_path / "fresh.npz")
    assert np.array_equal(load(out)["samples"], load(tmp_path / "fresh.npz")["samples"])
    assert fresh["resumed_chunks"] == 0


def test_auto_batch_size_on_cpu_and_bad_values(tmp_path, cell):
    specs, model = cell
    spec = json.loads(json.dumps(specs["annealed"]))
    spec["sampling"]["batch_size"] = "auto"
    meta = sample_job(spec, model, tmp_path / "a.npz")
    assert meta["chunk_size"] == N and meta["n_chunks"] == 1  # the CPU default exceeds N
    assert load(tmp_path / "a.npz")["samples"].shape == (N, 2)
    spec["sampling"]["batch_size"] = "big"
    with pytest.raises(ScorebenchError, match="batch_size"):
        sample_job(spec, model, tmp_path / "b.npz")
    assert not (tmp_path / "b.npz").exists()


def test_switches_are_recorded_and_cuda_graphs_fall_back_on_cpu(tmp_path, cell):
    specs, model = cell
    spec = json.loads(json.dumps(specs["annealed"]))
    base = sample_job(spec, model, tmp_path / "a.npz")
    switches = ("amp", "channels_last", "cuda_graphs", "cuda_graphs_used")
    assert [base[k] for k in switches] == ["off", False, "off", False]
    spec["sampler"].update(amp="auto", channels_last=True, cuda_graphs="on")
    meta = sample_job(spec, model, tmp_path / "b.npz")
    # amp auto is fp32 on a CPU, channels_last applies to images only, graphs need CUDA: same samples
    assert [meta[k] for k in switches] == ["auto", False, "on", False]
    assert np.array_equal(load(tmp_path / "a.npz")["samples"], load(tmp_path / "b.npz")["samples"])
    stored = json.loads(str(load(tmp_path / "b.npz")["meta"]))
    assert stored["cuda_graphs"] == "on" and stored["chunk_size"] == CHUNK
