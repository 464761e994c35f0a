"""LeanAdam (scorebench/optim.py) against torch's own Adam, multi-tensor and fused: the same
kernels, so the same parameters bit for bit, including across a state_dict round trip."""

import pytest
import torch

from scorebench.optim import LeanAdam, make_adam, set_implementation


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.SiLU(), torch.nn.Linear(16, 3))
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 3, generator=g)
    return net, x, y


def lr_at(step: int) -> float:
    return 1e-2 * (1 + step % 3)  # a changing learning rate, as the trainer's warm-up sets it


def continue_steps(net, opt, steps):
    """Optimiser steps with the indices `steps` on the problem's fixed batch."""
    _, x, y = problem()
    for i in steps:
        opt.param_groups[0]["lr"] = lr_at(i)
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def run(opt_factory, steps=25):
    net, _, _ = problem()
    opt = opt_factory(list(net.parameters()))
    continue_steps(net, opt, range(steps))
    return net, opt


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_lean_adam_equals_torch_adam_bit_for_bit(fused):
    ours, _ = run(lambda p: LeanAdam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, fused=fused))
    ref, _ = run(lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, foreach=not fused, fused=fused))
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    moved = problem()[0]
    assert not torch.equal(next(ours.parameters()), next(moved.parameters()))  # it did train


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_state_dict_round_trip_continues_exactly(fused):
    full, _ = run(lambda p: LeanAdam(p, lr=1e-2, fused=fused), steps=20)
    net, opt = run(lambda p: LeanAdam(p, lr=1e-2, fused=fused), steps=10)
    fresh = LeanAdam(list(net.parameters()), lr=1e-2, fused=fused)
    fresh.load_state_dict(opt.state_dict())
    continue_steps(net, fresh, range(10, 20))
    for a, b in zip(full.parameters(), net.parameters()):
        assert torch.equal(a, b)


def test_states_cross_between_ours_and_torchs_adam():
    """A checkpoint written with one implementation resumes under the other (fused_adam switches)."""
    full, _ = run(lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False), steps=20)
    for first, second in ((LeanAdam, torch.optim.Adam), (torch.optim.Adam, LeanAdam)):
        net, opt = run(lambda p: first(p, lr=1e-2), steps=10)
        fresh = second(list(net.parameters()), lr=1e-2)
        fresh.load_state_dict(opt.state_dict())
        set_implementation(fresh, "loop")
        continue_steps(net, fresh, range(10, 20))
        for a, b in zip(full.parameters(), net.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_foreign_state_is_refused():
    net, _, _ = problem()
    opt = LeanAdam(list(net.parameters()), lr=1e-3)
    with pytest.raises(ValueError, match="not the state of an Adam over these parameters"):
        opt.load_state_dict(torch.optim.Adam(list(net.parameters())[:2]).state_dict())


def test_make_adam_kinds():
    net, _, _ = problem()
    assert not make_adam(net.parameters(), lr=1e-3, beta1=0.9, kind="foreach").fused
    assert make_adam(net.parameters(), lr=1e-3, beta1=0.9, kind="fused").fused  # on the CPU: LeanAdam, no torch.optim
    assert isinstance(make_adam(net.parameters(), lr=1e-3, beta1=0.9, kind="loop"), torch.optim.Adam)
