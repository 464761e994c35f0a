"""Adam as torch's fused kernel or a handful of foreach kernels, for the CPU and eager runs.

Why not `torch.optim.Adam`: building any torch.optim optimiser imports `torch._dynamo`
(`Optimizer.add_param_group` is wrapped in `torch._disable_dynamo`), and its `step` pays that
machinery's per-call overhead; for a 2-D toy job both cost more than the optimiser's arithmetic.
`python bench/optim.py` (torch 2.14.1, one thread, 2 shared cores at load 4-6; medians of 3
alternating repeats) on the default study's toy cell, 3000 steps, process start to exit:
13.2 s with this class's fused kernel against 24.7 s with `torch.optim.Adam(fused=True)` (foreach:
14.6 s against 23.1 s); 2.7 against 4.4 ms per training step; the optimiser step of a 54-member
pack 0.41 against 0.86 ms. That is a default study's toy training jobs roughly halved.

This class calls the same kernels as torch's Adam (`fused=True`: `torch._fused_adam_`, which has a
CPU kernel since torch 2.4; else the multi-tensor kernels in torch's order; `tests/test_optim.py`
checks bit-equal parameters against both, so a torch release that changes them fails there), and
nothing else: no AMSGrad, no weight decay, one parameter group. On CUDA the trainer uses torch's
fused Adam (the dynamo import is noise next to a GPU job).
"""

from __future__ import annotations

import torch

from scorebench.errors import ScorebenchError


class LeanAdam:
    """Adam (Kingma & Ba 2015) over a list of parameters; the trainer's optimiser interface.

    Args:
        params: the parameters (one group).
        lr: learning rate (the trainer may set `param_groups[0]["lr"]` before each step).
        betas: (β1, β2).
        eps: added to the root of the second moment.
        fused: one fused kernel per tensor (torch.optim.Adam(fused=True)'s) instead of the
            multi-tensor kernels (torch.optim.Adam(foreach=True)'s).
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, *, fused: bool = False):
        self.params = [p for p in params]
        self.fused = bool(fused)
        self.param_groups = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        exp_avg = [self.exp_avg[i] for i in live]
        exp_avg_sq = [self.exp_avg_sq[i] for i in live]
        self.step_count += 1
        if self.fused:
            steps = [torch.tensor(float(self.step_count))] * len(params)  # the kernel reads, never writes, these
            torch._fused_adam_(
                params, grads, exp_avg, exp_avg_sq, [], steps, lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0,
                eps=eps, amsgrad=False, maximize=False,
            )  # fmt: skip
            return
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
        step = float(self.step_count)
        bias1, bias2_sqrt = 1 - beta1**step, (1 - beta2**step) ** 0.5
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, [bias2_sqrt] * len(params))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, [(lr / bias1) * -1] * len(params))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict:
        """torch.optim.Adam's state format, so a checkpoint resumes under either implementation."""
        group = self.param_groups[0]
        return {
            "state": {
                i: {"step": torch.tensor(float(self.step_count)), "exp_avg": m.detach().clone(),
                    "exp_avg_sq": v.detach().clone()}
                for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq))
            },
            "param_groups": [{**TORCH_GROUP_DEFAULTS, **group, "params": list(range(len(self.params)))}],
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Load a state written by this class or by torch.optim.Adam over the same parameters."""
        groups = state.get("param_groups") if isinstance(state, dict) else None
        if not groups or len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("not the state of an Adam over these parameters (one group, same count)")
        if groups[0].get("amsgrad") or groups[0].get("weight_decay"):
            raise ValueError("an Adam state with amsgrad or weight decay cannot be continued here")
        steps = set()
        for i, key in enumerate(groups[0]["params"]):
            entry = state["state"].get(key)
            if entry is None:  # torch keeps no state for a parameter that never had a gradient
                self.exp_avg[i].zero_(), self.exp_avg_sq[i].zero_()
                continue
            for dst, name in ((self.exp_avg[i], "exp_avg"), (self.exp_avg_sq[i], "exp_avg_sq")):
                if dst.shape != entry[name].shape:
                    raise ValueError(f"optimizer state of shape {tuple(entry[name].shape)} for a parameter of shape {tuple(dst.shape)}")
                dst.copy_(entry[name])
            steps.add(int(float(entry["step"])))
        self.step_count = max(steps, default=0)
        self.param_groups[0].update(betas=tuple(groups[0]["betas"]), eps=float(groups[0]["eps"]))


# The keys torch.optim.Adam's param group carries (load_state_dict takes the saved group's values).
TORCH_GROUP_DEFAULTS = {
    "weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
    "differentiable": False, "fused": None, "decoupled_weight_decay": False,
}  # fmt: skip


def set_implementation(opt, kind: str) -> None:
    """After loading a state (whose group flags name the implementation that saved it), make a torch
    Adam run as `kind` again."""
    if isinstance(opt, torch.optim.Adam):
        for group in opt.param_groups:
            group.update(fused=True if kind == "fused" else None, foreach=False)


def make_adam(params, *, lr: float, beta1: float, kind: str):
    """The trainer's Adam: kind "fused" (torch's fused kernel: through torch.optim on CUDA, through
    LeanAdam elsewhere), "foreach" (LeanAdam's multi-tensor kernels) or "loop" (torch's per-tensor
    loop, the plain reference path)."""
    params = list(params)
    betas = (beta1, 0.999)
    cuda = any(p.is_cuda for p in params)
    if kind == "foreach" or (kind == "fused" and not cuda):
        return LeanAdam(params, lr=lr, betas=betas, eps=1e-8, fused=kind == "fused")
    if kind in ("fused", "loop"):
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, fused=kind == "fused", foreach=False)
    raise ScorebenchError(f"adam: unknown kind {kind!r}; choose fused, foreach or loop")
