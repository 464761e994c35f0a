"""Packed training: many small cells of one dataset × objective trained in one process, as one model.

Why: an ablation over λ, L and seeds is dozens of tiny MLPs. Trained one job per cell, each pays a
process start, imports and a data load for a few seconds of work, and each step is too small to use
the machine. Packed, the K members' parameters are stacked on a leading axis and every layer is one
batched matrix product, so one step of the pack is one step of every member.

Each member is trained exactly as `scorebench.train.train` would train it alone, in meaning:
- its own initial weights (built from its own spec and seed), schedule, λ(σ) and `scale_by_sigma`;
- its own minibatch indices and noise levels, from its own generator seeded with its seed (so the
  same in any pack), drawn DRAW_BLOCK steps at a time (108 small draws a step cost a 54-member toy
  pack a tenth of its time); the perturbation noise and projections of the loss come from one pack
  generator. A pack of one draws step by step from the member's own generator, the calls of the
  unpacked loop, so it follows the unpacked run's random stream exactly;
- its own loss (the mean over its own minibatch), gradient, gradient-norm clipping, Adam state and
  EMA: the loss of the pack is the sum of the members' losses, and parameters are disjoint, so each
  member's gradient is that of its own loss; Adam and the EMA are element-wise.
Each member gets its own `model.pt` and `train_log.jsonl` in the unpacked format, so every later job
reads them unchanged. What differs, and is recorded: `pack` (size, members, wall time of the pack);
a member's `wall_s` is the pack's wall time divided by its size; `steps_per_s` in the log is the
pack's rate (every member advances one step per pack step).

The loop (step order, log windows, checkpoint cadence, preemption, resume) is `scorebench.loop`'s,
the same as `train`'s; this file is the pack's model side of it (`_Pack`) and the stacked model.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from scorebench import loop
from scorebench.checkpoint import load_checkpoint, load_states, save_atomic
from scorebench.device import autocast, device_description, resolve_device, resolve_fast_path
from scorebench.errors import ScorebenchError
from scorebench.loop import Progress, StepLosses, make_ema, training_set, write_log
from scorebench.optim import make_adam, set_implementation
from scorebench.tensors import as_sigma_batch
from scorebench.train import LOG_NAME, MODEL_NAME, TRAJECTORY_FIELDS, TrainSettings, model_file

logger = logging.getLogger("scorebench")

PACK_CHECKPOINT_KEYS = ("model", "ema", "optimizer", "step", "members", "settings", "rngs", "histories")


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names may not contain dots


def _wide_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b, batched; as (bᵀ aᵀ)ᵀ when the result would be only a few columns wide.

    Why: BLAS is slow at a product whose result has 2 columns (the gradient of a toy's output
    layer, (K, 64, 2)): measured here 6× slower than the same product computed transposed."""
    if b.shape[-1] < 8 <= a.shape[-2]:
        return torch.bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)
    return torch.bmm(a, b)


class _BatchedLinear(torch.autograd.Function):
    """base + h @ Wᵀ for K members at once: h (K, B, in), W (K, out, in), base (K, B or 1, out).

    The same function as `torch.baddbmm(base, h, W.transpose(1, 2))`, with a backward that takes each
    product in the orientation BLAS is fast at (`_wide_bmm`) and the weight gradient in the weight's
    own layout. The backward is built of differentiable operations, so exact and sliced score
    matching, which differentiate the network's input gradient again, train through it too.
    """

    @staticmethod
    def forward(ctx, base, h, weight):
        ctx.save_for_backward(h, weight)
        ctx.base_rows = base.shape[1]
        return torch.baddbmm(base, h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        grad_base = grad_h = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_base = grad if ctx.base_rows == grad.shape[1] else grad.sum(1, keepdim=True)
        if ctx.needs_input_grad[1]:
            grad_h = _wide_bmm(grad, weight.to(grad.dtype))
        if ctx.needs_input_grad[2]:
            grad_weight = _wide_bmm(grad.transpose(1, 2), h.to(grad.dtype))
        return grad_base, grad_h, grad_weight


class PackedMLP(nn.Module):
    """K `ScoreMLP`s of one architecture as one module: parameter `p` of shape S becomes (K, *S).

    Called like a member on a flat batch: `forward(x, sigma)` with x (K·B, *shape) and sigma (K·B,),
    rows k·B … (k+1)·B − 1 belonging to member k. The losses call it exactly as they call a member
    (autograd w.r.t. x included), so every objective trains packed without change. Each layer is one
    batched matrix product over the members (`_BatchedLinear`): measured here twice as fast as
    `torch.func.vmap` over `functional_call` (which dispatches a batched `linear`), and the step of a
    tiny MLP is all matrix products. Built with the members' σ tables, it also takes each row's σ
    level (`forward(..., level=)`, what the trainer passes) and looks the σ conditioning up instead
    of computing it per row. `unstack` gives each member's own state dict back.
    """

    def __init__(self, members: list[nn.Module], sigma_table: torch.Tensor | None = None):
        super().__init__()
        from scorebench.models.mlp import ScoreMLP

        if not members or not all(isinstance(m, ScoreMLP) for m in members):
            raise ScorebenchError("packed training: needs one or more networks of arch `mlp`")
        configs = [{k: v for k, v in m.config.items() if k != "scale_by_sigma"} for m in members]
        if any(c != configs[0] for c in configs):
            raise ScorebenchError("packed training: members must share one architecture (arch, preset, shape)")
        first = members[0]
        self.size, self.layers, self.shape = len(members), len(first.linears), first.shape
        self.member_configs = [dict(m.config) for m in members]
        self.param_names = [n for n, _ in first.named_parameters()]
        self.stacked = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in members]).clone())
             for n in self.param_names}
        )  # fmt: skip
        self.embed = copy.deepcopy(first.embed)  # fixed features, no parameters: the same in every member
        self.act = copy.deepcopy(first.act)
        scale = torch.tensor([bool(m.scale_by_sigma) for m in members])
        self.register_buffer("scale_by_sigma", scale, persistent=False)
        if sigma_table is not None:  # each member's σ levels, (K, L): embedded once, looked up per row
            if sigma_table.dim() != 2 or sigma_table.shape[0] != self.size:
                raise ScorebenchError(f"packed model: sigma_table must be (K={self.size}, L), got {tuple(sigma_table.shape)}")
            with torch.no_grad():
                table = self.embed(sigma_table.reshape(-1).float()).reshape(self.size, sigma_table.shape[1], -1)
            self.register_buffer("level_embedding", table, persistent=False)
        else:
            self.level_embedding = None

    def _weight(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Linear `name`'s weights, (K, out, in) as each member's nn.Linear holds them."""
        return self.stacked[_key(name + ".weight")].to(dtype)

    def _bias(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        return self.stacked[_key(name + ".bias")].unsqueeze(1).to(dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        """x (K·B, *shape), sigma (K·B,); `level` (K, B), optional: row b of member k is at σ level
        level[k, b] of the `sigma_table` the pack was built with (sigma must be those σ).

        Why `level`: in training every σ is one of a member's L levels, so each layer's conditioning
        cond(emb(σ)) + biases takes only L values per member. Computed once per level and looked up
        per row, it replaces a (K·B × E × hidden) product and its gradient by an L-row product, a
        gather and a scatter-add (a third of a toy pack's step). Same function, same gradients.
        """
        k = self.size
        if x.shape[0] % k:
            raise ScorebenchError(f"packed model: batch {x.shape[0]} is not a multiple of the pack size {k}")
        sigma = as_sigma_batch(sigma, x)
        h = x.reshape(k, x.shape[0] // k, -1)
        dt = h.dtype
        if level is None:
            emb, rows = self.embed(sigma).reshape(k, -1, self.embed.out_dim).to(dt), None
        elif self.level_embedding is None:
            raise ScorebenchError("packed model: `level` needs the pack's sigma_table at construction")
        else:
            emb = self.level_embedding.to(dt)
            rows = (level + torch.arange(k, device=level.device)[:, None] * emb.shape[1]).reshape(-1)
        linear = _BatchedLinear.apply
        for i in range(self.layers):
            # linear(h) + cond(emb) as two chained products, the first's result the second's base:
            # no separate (K, B, hidden) sum, and only one bias broadcast is materialised
            bias = self._bias(f"linears.{i}", dt) + self._bias(f"conds.{i}", dt)
            cond = linear(bias, emb, self._weight(f"conds.{i}", dt))  # (K, B or L, hidden)
            if rows is not None:
                cond = cond.reshape(-1, cond.shape[-1]).index_select(0, rows).reshape(k, -1, cond.shape[-1])
            h = self.act(linear(cond, h, self._weight(f"linears.{i}", dt)))
        out = linear(self._bias("out", dt), h, self._weight("out", dt))
        ss = sigma.reshape(k, -1, 1)
        out = out / torch.where(self.scale_by_sigma[:, None, None], ss, torch.ones_like(ss)).to(out.dtype)
        return out.reshape(x.shape)

    def unstack(self, k: int, state: dict | None = None) -> dict:
        """Member k's state dict (keys as in `ScoreMLP`), from this module's state or a saved one."""
        state = self.state_dict() if state is None else state
        return {n: state["stacked." + _key(n)][k].detach().clone() for n in self.param_names}


@dataclass
class PackMember:
    """One cell of a pack: its network (initial weights), schedule, settings and output folder."""

    name: str
    model: nn.Module
    schedule: object  # scorebench.noise.Schedule
    settings: TrainSettings
    out_dir: Path


def _check_members(members: list[PackMember]) -> TrainSettings:
    first = members[0].settings
    for m in members[1:]:
        for field in TRAJECTORY_FIELDS + ("steps", "log_every", "checkpoint_every", "device", "amp"):
            if field != "seed" and getattr(m.settings, field) != getattr(first, field):
                raise ScorebenchError(
                    f"packed training: member {m.name} has training.{field}={getattr(m.settings, field)!r}, "
                    f"but {members[0].name} has {getattr(first, field)!r}; a pack shares its training settings"
                )
    return first


DRAW_BLOCK = 32  # steps of minibatch indices and levels drawn per call in a pack of two or more


class _Draws:
    """Each member's minibatch indices and noise levels, `block` steps at a time from its own generator.

    Resumable at any step: `state()` is the generators' states at the start of the current block and
    the position in it; `restore` redraws that block and skips to the position.
    """

    def __init__(self, gens, n_data: int, levels: list[int], batch: int, block: int, device):
        self.gens, self.n_data, self.levels, self.batch, self.block = gens, n_data, levels, batch, block
        self.device, self.pos, self.start = device, block, None

    def _draw(self) -> None:
        self.start = [g.get_state() for g in self.gens]
        shape = (self.block, self.batch)
        idx, level = zip(*[
            (torch.randint(self.n_data, shape, generator=g, device=self.device),
             torch.randint(n, shape, generator=g, device=self.device))
            for n, g in zip(self.levels, self.gens)
        ])  # fmt: skip
        self.idx, self.level, self.pos = torch.stack(idx, 1), torch.stack(level, 1), 0  # (block, K, B)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B) indices and (K, B) level numbers for the next step."""
        if self.pos == self.block:
            self._draw()
        self.pos += 1
        return self.idx[self.pos - 1], self.level[self.pos - 1]

    def state(self) -> dict:
        if self.pos == self.block:  # nothing drawn ahead: the generators stand at the next step
            return {"rngs": [g.get_state() for g in self.gens], "pos": 0}
        return {"rngs": self.start, "pos": self.pos}

    def restore(self, state: dict) -> None:
        for g, s in zip(self.gens, state["rngs"]):
            g.set_state(s)
        self.pos = self.block
        if state["pos"]:
            self._draw()
            self.pos = state["pos"]


def _level_tables(members, device):
    """(K, L_max) σ and λ tables (padded with the last level) and the level counts."""
    levels = [m.schedule.sigmas.numel() for m in members]
    lmax = max(levels)

    def pad(v):
        v = v.detach().double().cpu()
        return torch.cat([v, v[-1:].expand(lmax - v.numel())])

    sig = torch.stack([pad(m.schedule.sigmas) for m in members]).to(device, torch.float32)
    lam = torch.stack([pad(m.schedule.weights) for m in members]).to(device, torch.float32)
    return sig, lam, levels


class _Pack:
    """A pack's side of the training loop (a `scorebench.loop.Stepper`): the stacked model, its EMA
    and Adam, each member's draws from its own generator and the pack's noise generator, per-member
    clipping, and the pack's resume checkpoint.

    Why a class: the loop asks the same model side for a step, a clip, a checkpoint and a resume;
    the objects they share (model, optimiser, generators, σ tables) live here once.
    """

    def __init__(self, members: list[PackMember], loss_fn, x_all, settings: TrainSettings, device, fast, *,
                 pack_name: str, noise_seed: int):  # fmt: skip
        k = len(members)
        self.settings, self.device, self.fast, self.loss_fn = settings, device, fast, loss_fn
        self.k, self.batch, self.x_all = k, settings.batch_size, x_all
        self.names = [m.name for m in members]
        self.sig_table, self.lam_table, levels = _level_tables(members, device)
        self.rows = torch.arange(k, device=device)[:, None]
        self.window_shape = (k, max(levels))
        self.sigma_levels = [m.schedule.sigmas.tolist() for m in members]
        self.labels = [f"cell {name} of pack {pack_name}: " for name in self.names]

        self.model = PackedMLP([m.model for m in members], sigma_table=self.sig_table).to(device).train()
        self.ema, self.ema_update = make_ema(self.model)
        self.params = list(self.model.parameters())
        self.opt = make_adam(self.params, lr=settings.lr, beta1=settings.beta1, kind=fast.adam)
        gens = [torch.Generator(device=device).manual_seed(m.settings.seed) for m in members]
        self.noise_gen = gens[0] if k == 1 else torch.Generator(device=device).manual_seed(int(noise_seed))
        self.draws = _Draws(gens, x_all.shape[0], levels, self.batch, 1 if k == 1 else DRAW_BLOCK, device)

    def forward_backward(self) -> StepLosses:
        """Each member's draws; the pack's loss is the sum of the members' mean losses."""
        idx, level = self.draws.next()
        x = self.x_all.index_select(0, idx.reshape(-1))
        sigma, weight = self.sig_table.gather(1, level), self.lam_table.gather(1, level)
        with autocast(self.device, self.settings.amp):
            at_levels = functools.partial(self.model, level=level)  # the losses call model(x̃, σ)
            per_sample = self.loss_fn(at_levels, x, sigma.reshape(-1), weight.reshape(-1), generator=self.noise_gen)
        per_sample = per_sample.float().reshape(self.k, self.batch)
        member_loss = per_sample.mean(1)
        member_loss.sum().backward()
        cells = (level + self.rows * self.window_shape[1]).reshape(-1)  # (member, level) in the flat tables
        return StepLosses(cells, per_sample.reshape(-1), member_loss)

    def clip(self, is_log: bool) -> torch.Tensor:
        return _clip_per_member(self.params, self.settings.grad_clip, self.k)

    def params_finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(p).flatten(1).all(1) for p in self.params]).all(0)

    def checkpoint(self, progress: Progress) -> dict:
        drawn = self.draws.state()
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
            "step": progress.step, "members": self.names, "settings": self.settings.as_dict(),
            "rngs": drawn["rngs"] + [self.noise_gen.get_state()], "draw_pos": drawn["pos"],
            "histories": progress.histories, "wall_s": progress.wall_s, "window": progress.window,
        }  # fmt: skip

    def resume(self, path: Path) -> Progress:
        ck = load_checkpoint(path, expect_keys=PACK_CHECKPOINT_KEYS)
        if ck["members"] != self.names or any(
            ck["settings"].get(f) != getattr(self.settings, f) for f in TRAJECTORY_FIELDS if f != "seed"
        ):
            raise ScorebenchError(
                f"checkpoint {path} belongs to another pack (members or training settings differ); "
                "delete it to retrain the pack from scratch"
            )
        load_states({"model": self.model, "ema": self.ema, "optimizer": self.opt}, ck, path=path)
        set_implementation(self.opt, self.fast.adam)
        self.draws.restore({"rngs": ck["rngs"][: self.k], "pos": int(ck.get("draw_pos", 0))})
        self.noise_gen.set_state(ck["rngs"][self.k])
        return Progress(int(ck["step"]), ck["histories"], float(ck.get("wall_s", 0.0)), ck.get("window"))


def train_packed(
    members: list[PackMember], loss_fn, data, checkpoint_path, *, pack_name: str = "pack", noise_seed: int = 0
) -> dict:
    """Train the members of a pack together; write each member's model.pt and train_log.jsonl.

    Args:
        members: the cells (same architecture and training settings; seeds, schedules may differ).
        loss_fn: the pack's objective, `loss_fn(model, x, sigma, weight, *, generator) -> (N,)`.
        data: training tensor (N, *shape) or a Dataset (its `.train`).
        checkpoint_path: the pack's resume checkpoint (killed runs resume from it).
        pack_name: for logs and errors.
        noise_seed: seeds the pack's generator of loss noise (unused for a pack of one, which uses the
            member's own generator).

    Returns:
        {"step", "wall_s", "size", "resumed_from"}.

    Raises:
        Preempted: on SIGTERM/SIGUSR1, after writing the checkpoint.
        ScorebenchError: a member's loss or parameters turned non-finite (naming the member), or an
            unusable checkpoint.
    """
    settings = _check_members(members)
    device = resolve_device(settings.device)
    x_all = training_set(data, "packed training").to(device)
    # packs are small MLPs: eager, vectors, data resident (moved above); Adam and precision as configured
    fast = resolve_fast_path(
        device, compile="off", data_on_device="on", fused_adam=settings.fused_adam, amp=settings.amp
    )
    pack = _Pack(members, loss_fn, x_all, settings, device, fast, pack_name=pack_name, noise_seed=noise_seed)
    k = len(members)
    done = loop.run(pack, settings, checkpoint_path, name=f"pack {pack_name}", desc=f"pack×{k}",
                    record_extra={"pack_size": k})  # fmt: skip

    state, ema_state = pack.model.state_dict(), pack.ema.state_dict()
    device_record = {**device_description(device), "fast_path": fast.as_dict()}
    summary = {"name": pack_name, "size": k, "members": pack.names, "wall_s": done.wall_s}
    for i, m in enumerate(members):
        m.out_dir.mkdir(parents=True, exist_ok=True)
        record = model_file(
            pack.model.unstack(i, state), pack.model.unstack(i, ema_state), pack.model.member_configs[i], done.step,
            m.settings, m.schedule, done.wall_s / k, device_record, pack=summary,
        )  # fmt: skip
        save_atomic(record, m.out_dir / MODEL_NAME)
        write_log(m.out_dir / LOG_NAME, done.histories[i])
    logger.info("pack %s: wrote %d models (step %d, %.1f s)", pack_name, k, done.step, done.wall_s)
    return {"step": done.step, "wall_s": done.wall_s, "size": k, "resumed_from": done.resumed_from}


def _clip_per_member(params: list[torch.Tensor], max_norm: float | None, k: int) -> torch.Tensor:
    """Each member's global gradient norm (K,), clipped per member as clip_grad_norm_ clips one model."""
    live = [p for p in params if p.grad is not None]
    grads = [p.grad.detach() for p in live]
    per_param = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1, dtype=torch.float32) for g in grads])
    norms = torch.linalg.vector_norm(per_param, dim=0)
    if max_norm is not None:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        # out of place: the two biases of a layer share one gradient tensor
        scaled = torch._foreach_mul(grads, [coef.reshape(k, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads])
        for p, g in zip(live, scaled):
            p.grad = g
    return norms


__all__ = ["PackMember", "PackedMLP", "train_packed"]
