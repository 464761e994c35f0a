"""CUDA paths, checked on a GPU (skipped without one; `bench/gpu_checks.sh` runs them with the GPU benchmarks).

Every CUDA path has a CPU twin tested in CI; these check what only a GPU can show:
- the training loop does not sync the host between log steps (torch's sync debug mode counts
  every synchronising call; one per step would be ≥ STEPS of them);
- a sampler chain replayed as a CUDA graph draws the eager chain (same generator, same numbers);
- the packed model on the GPU is each member's network;
- bf16 autocast on the GPU stays within the CPU test's bf16 tolerances of fp32.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from scorebench.device import autocast
from scorebench.losses import make_loss
from scorebench.packed import PackedMLP
from scorebench.sampling import annealed_langevin
from scorebench.train import TrainSettings, train
from test_fast_path import BF16_GRAD_RTOL, BF16_LOSS_RTOL, mlp, tiny_unet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run bench/gpu_checks.sh on one)"),
]

STEPS, LOG_EVERY = 60, 30
MAX_SYNCS = 20  # set-up, two log steps, the checkpoint and the final files: measured counts go here


def test_training_does_not_sync_the_host_between_log_steps(tmp_path, schedule):
    data = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1)) * 2
    run = TrainSettings(steps=STEPS, batch_size=128, lr=1e-3, log_every=LOG_EVERY, checkpoint_every=STEPS,
                        device="cuda", compile="off", progress=False)  # fmt: skip
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(mlp(schedule), make_loss("dsm"), data, schedule, run, tmp_path)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) < MAX_SYNCS, f"{len(syncs)} host syncs in {STEPS} steps; first: {syncs[:3]}"


@pytest.mark.parametrize("denoise", [False, True])
def test_a_graphed_chain_draws_the_eager_chain(denoise, schedule):
    model = mlp(schedule).cuda().eval()
    sigmas = schedule.sigmas.cuda()
    chains = {}
    for mode in ("off", "on"):
        gen = torch.Generator(device="cuda").manual_seed(7)
        x0 = torch.randn(512, 2, device="cuda", generator=gen) * 5
        chains[mode] = annealed_langevin(model, x0, sigmas, n_steps=5, step_size=1e-3, generator=gen,
                                         denoise=denoise, cuda_graphs=mode)  # fmt: skip
    assert chains["on"].graphed and not chains["off"].graphed
    assert chains["on"].nfe == chains["off"].nfe
    torch.testing.assert_close(chains["on"].samples, chains["off"].samples, rtol=1e-5, atol=1e-5)


def test_the_packed_model_on_the_gpu_is_each_members_network(schedule):
    members = [mlp(schedule, seed) for seed in range(4)]
    packed = PackedMLP(members).cuda()
    x = torch.randn(4 * 64, 2, device="cuda")
    sigma = schedule.sigmas.cuda()[torch.randint(10, (4 * 64,), device="cuda")]
    out = packed(x, sigma)
    for k, member in enumerate(members):
        rows = slice(64 * k, 64 * (k + 1))
        torch.testing.assert_close(out[rows], member.cuda()(x[rows], sigma[rows]), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_the_gpu_stays_close_to_fp32():
    model = tiny_unet().cuda()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)).cuda()
    sigma = torch.linspace(0.1, 2.0, 16, device="cuda")
    results = {}
    for amp in ("off", "bf16"):
        model.zero_grad(set_to_none=True)
        with autocast(torch.device("cuda"), amp):
            loss = make_loss("dsm")(model, x, sigma, sigma**2,
                                    generator=torch.Generator(device="cuda").manual_seed(5)).float().mean()  # fmt: skip
        loss.backward()
        results[amp] = loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])
    (l0, g0), (l1, g1) = results["off"], results["bf16"]
    assert float((l1 - l0).abs() / l0.abs()) < BF16_LOSS_RTOL
    assert 0 < float((g1 - g0).norm() / g0.norm()) < BF16_GRAD_RTOL  # close, and bf16 really ran
