"""Shared test settings: float64 checks where the math needs it, few threads on the 2-core CI machine."""

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Small models: a second thread only adds contention. On a busy 2-core machine two OpenMP threads
# spin against other processes: a tiny-MLP DSM loop measured 5-150 steps/s with 2 threads against
# ~500 with 1 (batch 1024, load average 4).
torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded CPU generator, so every stochastic test is reproducible."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def ring8():
    """The 8-mode ring toy (exact scores at every σ), sized for quick training tests."""
    from scorebench.data import load_dataset

    return load_dataset("gmm_ring8", n_train=4000, n_test=1000)


@pytest.fixture(scope="module")
def schedule():
    """NCSN's schedule for the ring: 10 geometric levels 5 → 0.1, λ = σ²."""
    from scorebench.noise import make_schedule

    return make_schedule("geometric", sigma_max=5.0, sigma_min=0.1, levels=10, weighting="sigma2")
