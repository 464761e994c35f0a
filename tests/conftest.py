"""Shared test settings: float64 checks where the math needs it, few threads on the 2-core CI machine."""

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)  # small models: a second thread only adds contention


@pytest.fixture
def gen():
    """A seeded CPU generator, so every stochastic test is reproducible."""
    return torch.Generator().manual_seed(1234)
