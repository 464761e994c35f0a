"""The training loop: one function over plain objects, resumable, the same on CPU and CUDA.

Loop order follows nanoGPT's train.py (forward under autocast, backward, clip, optimiser step,
zero_grad(set_to_none=True), `.item()` only at log steps); the EMA follows DiT (a deep copy with
requires_grad off, always in eval mode, updated after each optimiser step). Each step draws a
minibatch and one noise level per sample uniformly over the schedule's levels, which is NCSN's
objective (Song & Ermon 2019, eq. 6): (1/L) Σ_i λ(σ_i) ℓ(θ; σ_i), estimated per sample.

Reproducibility: every random draw of the loop comes from one `torch.Generator` whose state is
saved in the checkpoint, so a job killed after checkpoint k and resumed reaches exactly the
parameters of an uninterrupted run (bit-equal on CPU).

Fast path (each part a `TrainSettings` switch, resolved by `scorebench.device.resolve_fast_path`
and recorded in model.pt's `device.fast_path`): bf16 autocast, `torch.compile` of the training
forward (the compiled wrapper shares the model's parameters, so checkpoints do not depend on it; a
compile that fails at the first step, e.g. the double backward that exact/sliced losses need, warns
once and the step is redone in eager mode), channels_last image batches, fused Adam, the data set
resident on the GPU, device-side loss accumulators read only at log steps, a foreach EMA. None of
these shapes the trajectory's meaning, so a checkpoint resumes under any of them. On CUDA the
minibatch indices come from a CPU generator of their own (saved as `index_rng`), so a data set kept
on the host needs no device-to-host read per step; on the CPU the loop's one generator draws them.

Preemption: on SIGUSR1 or SIGTERM (SLURM's time-limit warning, `scancel`, a preempting job) the
loop finishes its current step, writes the resume checkpoint and stops with `Preempted`, so the
rerun that SLURM's requeue or Snakemake's retries start loses no work.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from scorebench.checkpoint import load_checkpoint, load_states, require_same, save_atomic
from scorebench.device import (
    AMP_MODES, SWITCH_MODES, FastPath, autocast, device_description, resolve_device, resolve_fast_path,
    switch_mode, synchronize,
)
from scorebench.errors import Preempted, ScorebenchError
from scorebench.optim import make_adam, set_implementation
from scorebench.schema import block_defaults
from scorebench.signals import StopOnSignal

logger = logging.getLogger("scorebench")

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
LOG_NAME = "train_log.jsonl"

CHECKPOINT_KEYS = ("model", "ema", "optimizer", "step", "settings", "model_config", "sigmas", "rng", "torch_rng")
MODEL_KEYS = ("model", "ema", "model_config", "step", "settings", "sigmas")

# Settings that shape the parameter trajectory: a resumed run must share them with its checkpoint.
# steps, logging, checkpoint cadence, device, progress and the fast path (amp, compile, channels_last,
# fused_adam, data_on_device) may change between segments.
TRAJECTORY_FIELDS = ("batch_size", "lr", "beta1", "ema_decay", "grad_clip", "seed", "warmup")

FAST_SWITCHES = ("compile", "channels_last", "fused_adam", "data_on_device")

# The schema's study-wide `training` defaults: a config and a direct caller get the same values.
_DEFAULT = block_defaults("training")


@dataclass
class TrainSettings:
    """How to train (not what: model, loss, data and schedule are passed in as objects).

    Defaults of the config's keys are the schema's (`training:` in config.schema.yaml); steps,
    batch_size and lr are required here so a direct caller states its budget.

    Attributes:
        steps: optimiser steps in total (a resumed run continues up to this count).
        batch_size: samples per step (drawn with replacement).
        lr: Adam learning rate after warm-up (NCSN: 1e-3; NCSNv2: 1e-4).
        beta1: Adam β1 (β2 is 0.999, ε 1e-8, as in NCSN/NCSNv2).
        ema_decay: EMA decay per step (NCSNv2 technique 5: 0.999); 0 disables (EMA = raw weights).
        grad_clip: max global gradient norm; None disables clipping.
        checkpoint_every: steps between resume checkpoints (one is also written at the last step).
        log_every: steps between log lines (the only host-device syncs of the loop).
        seed: seeds the loop's generator (minibatches, levels, perturbations).
        device: "auto" | "cpu" | "cuda" | "cuda:N".
        amp: "auto" (bf16 on CUDA, fp32 on CPU) | "bf16" | "off".
        progress: show a tqdm bar on stderr.
        warmup: steps of linear learning-rate warm-up (0: none).
        compile: "auto" (on for CUDA, off on CPU) | "on" | "off": torch.compile the training forward.
        channels_last: "auto" (on for 4-D image batches on CUDA) | "on" (any 4-D batch) | "off".
        fused_adam: "auto" | "on" (fused kernel, on CUDA and CPU) | "off" (for-loop Adam).
        data_on_device: "auto" (resident on the GPU when it fits) | "on" | "off" (pinned host batches).
    """

    steps: int
    batch_size: int
    lr: float
    beta1: float = _DEFAULT["beta1"]
    ema_decay: float = _DEFAULT["ema_decay"]
    grad_clip: float | None = _DEFAULT["grad_clip"]
    checkpoint_every: int = _DEFAULT["checkpoint_every"]
    log_every: int = _DEFAULT["log_every"]
    seed: int = 0  # not a config key: the cell's seed
    device: str = _DEFAULT["device"]
    amp: str = _DEFAULT["amp"]
    progress: bool = True  # not a config key: a terminal's progress bar
    warmup: int = _DEFAULT["warmup"]
    compile: str = _DEFAULT["compile"]
    channels_last: str = _DEFAULT["channels_last"]
    fused_adam: str = _DEFAULT["fused_adam"]
    data_on_device: str = _DEFAULT["data_on_device"]

    def __post_init__(self):
        def need(ok: bool, field: str, valid: str) -> None:
            if not ok:
                raise ScorebenchError(f"train.{field}: must be {valid}, got {getattr(self, field)!r}")

        need(_is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(_is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(_is_num(self.beta1) and 0 <= self.beta1 < 1, "beta1", "in [0, 1)")
        need(_is_num(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1) (0 disables)")
        need(self.grad_clip is None or (_is_num(self.grad_clip) and self.grad_clip > 0), "grad_clip", "> 0 or null")
        need(_is_int(self.checkpoint_every) and self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1")
        need(_is_int(self.log_every) and self.log_every >= 1, "log_every", "an integer >= 1")
        need(_is_int(self.seed), "seed", "an integer")
        need(_is_int(self.warmup) and self.warmup >= 0, "warmup", "an integer >= 0")
        need(self.amp in AMP_MODES, "amp", f"one of {list(AMP_MODES)}")
        for field in FAST_SWITCHES:
            setattr(self, field, switch_mode(getattr(self, field)))
            need(getattr(self, field) in SWITCH_MODES, field, f"one of {list(SWITCH_MODES)}")

    def as_dict(self) -> dict:
        """Plain dict (numbers, strings, None) for checkpoints loaded with weights_only=True."""
        return dataclasses.asdict(self)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TrainResult:
    """What a finished `train` call reports.

    Attributes:
        step: optimiser steps done in total.
        wall_s: training wall time over all segments (resumes add up).
        final_loss: mean loss over the last log window (NaN if none was logged).
        resumed_from: the checkpoint step this call started from, or None for a fresh run.
        device: the device trained on, e.g. "cpu" or "cuda:0".
    """

    step: int
    wall_s: float
    final_loss: float
    resumed_from: int | None
    device: str


def get_lr(step: int, settings: TrainSettings) -> float:
    """Learning rate for the optimiser step with 0-based index `step` (linear warm-up, then constant)."""
    if settings.warmup and step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    return settings.lr


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters (one foreach kernel); buffers are copied.

    decay=0 makes the EMA an exact copy (DiT starts its EMA this way).
    """
    _ema_pairs(ema, model)(decay)


def _ema_pairs(ema: torch.nn.Module, model: torch.nn.Module):
    """An EMA update over tensor lists gathered once (walking the modules every step costs more
    than the update itself for small networks)."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())

    @torch.no_grad()
    def step(decay: float) -> None:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    return step


def ema_model(model: torch.nn.Module, ema_state: dict) -> torch.nn.Module:
    """A separate copy of `model` holding the EMA weights, frozen and in eval mode (DiT style).

    Args:
        model: any instance of the trained architecture (its weights are not touched).
        ema_state: the `ema` state dict of a checkpoint or model file.

    Returns:
        The EMA model, for sampling and evaluation.
    """
    ema = copy.deepcopy(model)
    ema.load_state_dict(ema_state)
    ema.requires_grad_(False)
    return ema.eval()


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of the gradients, on the device (no sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def _write_log(path: Path, records: list[dict]) -> None:
    """Rewrite the JSONL log from the records a checkpoint holds (drops lines a killed run wrote later)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)


def _minibatches(x_all: torch.Tensor, batch: int, device: torch.device, fast: FastPath, index_gen):
    """A function drawing one training minibatch (B, *shape) on `device`, indices uniform with replacement.

    On CUDA the indices come from the CPU `index_gen`: a resident data set is indexed with a
    pinned, non_blocking copy of them, a host data set is gathered into pinned memory and copied
    with non_blocking, so neither reads anything back from the GPU (the loop stays sync-free).
    Pinned buffers come from torch's caching host allocator, which reuses one only after its copy ran.
    """
    n_data, shape = x_all.shape[0], tuple(x_all.shape[1:])
    layout = torch.channels_last if fast.channels_last else torch.contiguous_format
    if device.type == "cpu":
        x_cpu = x_all.contiguous(memory_format=layout)

        def gather() -> torch.Tensor:
            return x_cpu[torch.randint(n_data, (batch,), generator=index_gen)]

    elif fast.data_on_device:
        x_dev = x_all.to(device).contiguous(memory_format=layout)

        def gather() -> torch.Tensor:
            idx = torch.randint(n_data, (batch,), generator=index_gen, pin_memory=True)
            return x_dev[idx.to(device, non_blocking=True)]

    else:
        x_host = x_all.cpu().contiguous()

        def gather() -> torch.Tensor:
            idx = torch.randint(n_data, (batch,), generator=index_gen)
            staged = torch.index_select(x_host, 0, idx, out=torch.empty((batch, *shape), pin_memory=True))
            return staged.to(device, non_blocking=True)

    return lambda: gather().contiguous(memory_format=layout)  # a no-op where the layout already holds


def _rng_states(gen, index_gen) -> tuple:
    return gen.get_state(), index_gen.get_state(), torch.get_rng_state()


def _set_rng_states(gen, index_gen, states) -> None:
    gen.set_state(states[0])
    index_gen.set_state(states[1])
    torch.set_rng_state(states[2])


def _one_line(exc: Exception) -> str:
    """An exception as one short line (compiler errors span pages)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _resume(ckpt_path, model, ema, opt, gen, index_gen, config, settings, schedule, device):
    """Restore model, EMA, optimiser and RNG states in place; refuse a checkpoint of another run.

    Returns:
        (step, log history, wall seconds spent so far, log-window accumulators or None).
    """
    ck = load_checkpoint(ckpt_path, expect_keys=CHECKPOINT_KEYS)
    require_same(ck["model_config"], config, path=ckpt_path, label="model_config")
    require_same(ck["settings"], settings.as_dict(), path=ckpt_path, label="settings", fields=TRAJECTORY_FIELDS)
    if not torch.equal(ck["sigmas"].double(), schedule.sigmas.detach().cpu().double()):
        raise ScorebenchError(
            f"checkpoint {ckpt_path} is incompatible: schedule.sigmas differ from this run's; "
            "delete it to retrain from scratch"
        )
    if ck["step"] > settings.steps:
        raise ScorebenchError(
            f"checkpoint {ckpt_path} is at step {ck['step']}, past train.steps={settings.steps}; "
            "raise train.steps or delete it"
        )
    # load_state_dict copies in place, so tensor lists gathered before (EMA update) stay valid
    load_states({"model": model, "ema": ema, "optimizer": opt}, ck, path=ckpt_path)
    try:
        gen.set_state(ck["rng"])
    except (RuntimeError, TypeError):  # a CPU generator state cannot continue a CUDA stream, and back
        raise ScorebenchError(
            f"checkpoint {ckpt_path} holds a random-number state of another device type; resume it on the "
            f"device it was written on, or delete it to retrain from scratch (this run: {device})"
        ) from None
    if index_gen is not gen:
        if "index_rng" not in ck:
            raise ScorebenchError(
                f"checkpoint {ckpt_path} holds no index_rng (the minibatch stream of a CUDA run; it was "
                "written by an older scorebench): delete it to retrain from scratch"
            )
        index_gen.set_state(ck["index_rng"])
    torch.set_rng_state(ck["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in ck:
        torch.cuda.set_rng_state(ck["cuda_rng"], device)
    return int(ck["step"]), list(ck.get("history", [])), float(ck.get("wall_s", 0.0)), ck.get("window")


def train(model, loss_fn, data, schedule, settings: TrainSettings, out_dir) -> TrainResult:
    """Train a score model, resuming from `out_dir/checkpoint.pt` when it exists.

    Args:
        model: an nn.Module called as `model(x, sigma)`; its `.config` dict is saved so the file can
            rebuild it. It is moved to the resolved device and trained in place.
        loss_fn: `loss_fn(model, x, sigma, weight, *, generator) -> (B,)` (see scorebench.losses).
        data: training tensor (N, *shape), or a Dataset (its `.train` is used).
        schedule: a `scorebench.noise.Schedule`; each sample gets a level drawn uniformly.
        settings: a `TrainSettings`.
        out_dir: folder for checkpoint.pt, model.pt and train_log.jsonl.

    Returns:
        A `TrainResult`. Side effects: `out_dir/model.pt` = {model, ema, model_config, step, settings,
        sigmas, weights, wall_s (training wall time), device (with `fast_path`: what the last
        segment ran, compile_s and any compile_error)}, written atomically. Log lines of a window
        that compiled carry `compile_s`; that step is left out of `steps_per_s`.

    Raises:
        Preempted: SIGUSR1 or SIGTERM arrived; the checkpoint of the last finished step is written
            and a rerun resumes from it (see `StopOnSignal`).
        ScorebenchError: non-finite loss ("training diverged ..."), an unusable or incompatible
            checkpoint, bad settings or data.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    device = resolve_device(settings.device)

    x_all = getattr(data, "train", data)
    if not torch.is_tensor(x_all) or x_all.dim() < 2 or x_all.shape[0] < 1:
        raise ScorebenchError("train: data must be a (N, ...) tensor or a Dataset with N >= 1 training samples")
    x_all = x_all.to(dtype=torch.float32)
    fast = resolve_fast_path(
        device, compile=settings.compile, channels_last=settings.channels_last, fused_adam=settings.fused_adam,
        data_on_device=settings.data_on_device, amp=settings.amp, sample_dim=x_all.dim(),
        data_bytes=x_all.numel() * x_all.element_size(),
    )  # fmt: skip
    batch = settings.batch_size
    sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
    weights = schedule.weights.to(device=device, dtype=torch.float32)
    levels = sigmas.numel()
    config = dict(getattr(model, "config", None) or {})
    if not config:
        logger.warning("train: the model has no .config dict; model.pt will not be able to rebuild it")

    model.to(device).train()
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel per tensor instead of a Python loop of seven
    opt = make_adam(params, lr=settings.lr, beta1=settings.beta1, kind=fast.adam)
    ema_step = _ema_pairs(ema, model)
    gen = torch.Generator(device=device).manual_seed(settings.seed)
    index_gen = gen if device.type == "cpu" else torch.Generator().manual_seed(settings.seed)
    draw_batch = _minibatches(x_all, batch, device, fast, index_gen)
    # the compiled wrapper holds `model` itself: parameters, state_dict and checkpoints are the eager model's
    forward = torch.compile(model) if fast.compile else model

    step, history, wall_before, resumed_from, window = 0, [], 0.0, None, None
    if ckpt_path.exists():
        step, history, wall_before, window = _resume(
            ckpt_path, model, ema, opt, gen, index_gen, config, settings, schedule, device
        )
        set_implementation(opt, fast.adam)  # the saved state names the implementation that wrote it
        resumed_from = step
        _write_log(log_path, history)
        message = f"resumed from step {step} ({ckpt_path})"
        logger.info(message)
        print(message, flush=True)
    else:
        _write_log(log_path, [])  # a stale log without its checkpoint belongs to another run

    # device-side accumulators: read (synced) only at log steps and before checkpoints
    level_sum = torch.zeros(levels, device=device)
    level_count = torch.zeros(levels, device=device)
    window_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    ones = torch.ones(batch, device=device)
    window_steps, final_loss = 0, (history[-1]["loss"] if history else math.nan)
    if window:  # a checkpoint between log steps carries the partial log window, so the log stays exact
        level_sum.copy_(window["level_sum"])
        level_count.copy_(window["level_count"])
        window_sum.copy_(window["loss_sum"])
        window_steps = int(window["steps"])
    # steps_per_s counts only steps timed in this segment, after compilation
    timed_steps, compile_s, compile_error, window_compile_s = 0, None, None, None
    t_start = t_window = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    def check_finite(what: str) -> None:
        # sync point: one scalar read (two before a checkpoint); only at log steps and before saves
        bad = int(first_bad.item())
        if bad >= 0:
            problem = f"non-finite loss at step {bad}"
        elif what == "params" and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            problem = f"non-finite parameters after step {step}"
        else:
            return
        last = str(ckpt_path) if ckpt_path.exists() else "none written yet"
        raise ScorebenchError(f"training diverged: {problem} (last good checkpoint: {last})")

    def save_checkpoint() -> None:
        if settings.ema_decay == 0:
            ema_step(0.0)
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "settings": settings.as_dict(),
            "model_config": config,
            "sigmas": schedule.sigmas.detach().cpu().double(),
            "rng": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "wall_s": wall(),
            "window": {
                "level_sum": level_sum.detach().cpu(),
                "level_count": level_count.detach().cpu(),
                "loss_sum": window_sum.detach().cpu(),
                "steps": window_steps,
            },
        }
        if index_gen is not gen:
            state["index_rng"] = index_gen.get_state()
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        save_atomic(state, ckpt_path)

    def forward_backward(net):
        """One step's draws, loss and backward; returns (levels, per-sample loss, mean loss)."""
        x = draw_batch()
        level = torch.randint(levels, (batch,), generator=gen, device=device)
        with autocast(device, settings.amp):
            per_sample = loss_fn(net, x, sigmas[level], weights[level], generator=gen)
        if per_sample.shape != (batch,):
            raise ScorebenchError(f"train: loss_fn returned shape {tuple(per_sample.shape)}, expected ({batch},)")
        per_sample = per_sample.float()
        loss = per_sample.mean()
        loss.backward()
        return level, per_sample, loss

    logger.info("training on %s for steps %d..%d (fast path %s)", device, step, settings.steps, fast.as_dict())
    bar = tqdm(
        total=settings.steps, initial=step, disable=not settings.progress, file=sys.stderr, desc="train", leave=False,
        mininterval=0.1 if sys.stderr.isatty() else 30.0,  # a rule's log file gets a line every 30 s, not a flood
    )  # fmt: skip
    stop = StopOnSignal().install()
    try:
        while step < settings.steps:
            lr = get_lr(step, settings)
            for group in opt.param_groups:
                group["lr"] = lr
            if forward is not model and compile_s is None:  # the segment's first step compiles
                rng = _rng_states(gen, index_gen)
                t0 = time.perf_counter()
                try:
                    level, per_sample, loss = forward_backward(forward)
                except ScorebenchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager model still works
                    compile_error = _one_line(exc)
                    logger.warning("train: torch.compile failed at the first step (%s); continuing in eager mode",
                                   compile_error)  # fmt: skip
                    _set_rng_states(gen, index_gen, rng)
                    opt.zero_grad(set_to_none=True)
                    forward = model
                    level, per_sample, loss = forward_backward(forward)
                synchronize(device)  # once per segment: the compile step's time is all its own
                compile_s = window_compile_s = time.perf_counter() - t0
                t_window, timed_steps = time.perf_counter(), -1  # -1: this step is not timed
            else:
                level, per_sample, loss = forward_backward(forward)
            step += 1
            is_log = step % settings.log_every == 0 or step == settings.steps
            if settings.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            else:
                grad_norm = _grad_norm(params) if is_log else None
            opt.step()
            if settings.ema_decay > 0:
                ema_step(settings.ema_decay)
            opt.zero_grad(set_to_none=True)

            with torch.no_grad():
                per_sample = per_sample.detach()
                level_sum.index_add_(0, level, per_sample)
                level_count.index_add_(0, level, ones)
                window_sum.add_(loss.detach())
                first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad))
            window_steps += 1
            timed_steps += 1
            bar.update(1)

            if is_log:
                # sync point: the only .item()/.tolist() reads of the loop
                check_finite("loss")
                now = time.perf_counter()
                final_loss = float((window_sum / window_steps).item())
                sums, counts = level_sum.tolist(), level_count.tolist()
                record = {
                    "step": step,
                    "loss": final_loss,
                    "loss_per_level": [s / c if c > 0 else None for s, c in zip(sums, counts)],
                    "sigma_levels": schedule.sigmas.tolist(),
                    "lr": lr,
                    "grad_norm": float(grad_norm.item()),
                    "steps_per_s": timed_steps / max(now - t_window, 1e-12) if timed_steps > 0 else None,
                    "wall_s": wall(),
                }
                if window_compile_s is not None:  # this window held the compiling step (excluded above)
                    record["compile_s"], window_compile_s = window_compile_s, None
                history.append(record)
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{final_loss:.4g}")
                level_sum.zero_()
                level_count.zero_()
                window_sum.zero_()
                window_steps, timed_steps, t_window = 0, 0, time.perf_counter()
            if step % settings.checkpoint_every == 0 or step == settings.steps or stop.requested:
                check_finite("params")  # never write a non-finite state over the last good one
                save_checkpoint()
            if stop.requested and step < settings.steps:
                message = f"checkpointed at step {step} on signal {stop.name}"
                logger.info(message)
                print(message, flush=True)
                raise Preempted(
                    f"training stopped by {stop.name} at step {step}; rerun to resume from {ckpt_path}"
                )
    finally:
        stop.restore()
        bar.close()

    if settings.ema_decay == 0:
        ema_step(0.0)
    wall_s = wall()
    ran = dataclasses.replace(fast, compile=forward is not model).as_dict()
    # what this (last) segment ran: results carry it in their train_device column
    fast_path = {**ran, "compile_s": compile_s, "compile_error": compile_error}
    device_record = {**device_description(device), "fast_path": fast_path}
    save_atomic(
        model_file(model.state_dict(), ema.state_dict(), config, step, settings, schedule, wall_s, device_record),
        out_dir / MODEL_NAME,
    )
    logger.info("wrote %s (step %d, %.1f s)", out_dir / MODEL_NAME, step, wall_s)
    return TrainResult(step, wall_s, final_loss, resumed_from, str(device))


def model_file(model_state, ema_state, config, step, settings, schedule, wall_s, device_record, **extra) -> dict:
    """The contents of a finished run's model.pt (MODEL_KEYS and the rest), one layout for every
    trainer (train, packed.train_packed), so later jobs read any of them the same way."""
    return {
        "model": model_state, "ema": ema_state, "model_config": config, "step": step, "settings": settings.as_dict(),
        "sigmas": schedule.sigmas.detach().cpu().double(), "weights": schedule.weights.detach().cpu().double(),
        "wall_s": wall_s, "device": device_record, **extra,
    }  # fmt: skip


def load_model_file(path) -> dict:
    """Read a `model.pt` written by `train` (weights only), with the usual one-line errors."""
    return load_checkpoint(path, expect_keys=MODEL_KEYS)
