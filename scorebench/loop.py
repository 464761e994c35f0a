"""The training loop's skeleton, shared by the per-cell trainer (train.py) and the packed one (packed.py).

Why one skeleton: both trainers keep the same books, and two copies drift. The skeleton owns the step
order (nanoGPT's: learning rate, forward and backward, clip, optimiser step, EMA, zero_grad), the
loss sums of a log window kept on the device and read only at log steps, the finiteness check, the
JSONL log records, the checkpoint cadence, preemption (`StopOnSignal`), the progress bar, wall time
over resumed segments, and resuming from the checkpoint when there is one.

What differs between the trainers is the model side, a `Stepper`: one cell's network or a pack of
stacked networks, how a step draws its batch and computes its loss, how gradients are clipped (one
global norm or one per member), what the checkpoint holds and how it is restored. A run has one
member (a cell) or several (a pack's cells); every log record and error names its member.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import torch
from tqdm import tqdm

from scorebench.checkpoint import save_atomic
from scorebench.errors import Preempted, ScorebenchError
from scorebench.signals import StopOnSignal

logger = logging.getLogger("scorebench")


def get_lr(step: int, settings) -> float:
    """Learning rate for the optimiser step with 0-based index `step` (linear warm-up, then constant)."""
    if settings.warmup and step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    return settings.lr


def training_set(data, who: str) -> torch.Tensor:
    """The (N, ...) float32 training tensor of `data` (a tensor, or a Dataset's `.train`)."""
    x_all = getattr(data, "train", data)
    if not torch.is_tensor(x_all) or x_all.dim() < 2 or x_all.shape[0] < 1:
        raise ScorebenchError(f"{who}: data must be a (N, ...) tensor or a Dataset with N >= 1 training samples")
    return x_all.to(dtype=torch.float32)


def make_ema(model: torch.nn.Module):
    """DiT's EMA: a deep copy of `model`, frozen and in eval mode, and its update function.

    Returns:
        (ema, update) where `update(decay)` sets ema ← decay·ema + (1 − decay)·model.
    """
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    return ema, ema_updater(ema, model)


def ema_updater(ema: torch.nn.Module, model: torch.nn.Module) -> Callable[[float], None]:
    """An EMA update over tensor lists gathered once (walking the modules every step costs more
    than the update itself for small networks): one foreach lerp for parameters, buffers copied.
    decay=0 makes the EMA an exact copy."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())

    @torch.no_grad()
    def update(decay: float) -> None:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    return update


def write_log(path: Path, records: list[dict]) -> None:
    """Write a JSONL log from records, atomically (on resume: drops lines a killed run wrote later)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)


@dataclass
class Progress:
    """Where a run stands: what a checkpoint carries for the loop, beside the model side's own state.

    Attributes:
        step: optimiser steps done.
        histories: each member's log records so far.
        wall_s: training wall time over all segments.
        window: the partial log window (`Window.state()`) when the checkpoint fell between log steps.
        resumed_from: the checkpoint step this segment started from, or None for a fresh run.
    """

    step: int = 0
    histories: list[list[dict]] = field(default_factory=list)
    wall_s: float = 0.0
    window: dict | None = None
    resumed_from: int | None = None


class StepLosses(NamedTuple):
    """What one step's forward pass reports to the loop's books.

    Attributes:
        cells: each sample's (member, level) cell in the flattened window tables, (rows,).
        per_sample: each sample's loss, float32, (rows,).
        loss: each member's mean loss, what was backpropagated; 0-d for a lone cell, (K,) for a pack.
        compile_s: set on the one step that compiled the forward: its seconds, left out of steps_per_s.
    """

    cells: torch.Tensor
    per_sample: torch.Tensor
    loss: torch.Tensor
    compile_s: float | None = None


class Stepper(Protocol):
    """The model side of a run (train.py's `_Cell`, packed.py's `_Pack`).

    Attributes:
        device: where the model, the batches and the window sums live.
        window_shape: the shape of the (member, level) loss tables: (L,) for a lone cell, (K, L_max) for a pack.
        sigma_levels: each member's σ levels, as its log records carry them (their count sizes loss_per_level).
        labels: how an error names each member ("" for a lone cell).
        opt: the optimiser (`param_groups`, `step`, `zero_grad`).
        ema_update: `ema_update(decay)`, see `ema_updater`.
    """

    device: torch.device
    window_shape: tuple[int, ...]
    sigma_levels: list[list[float]]
    labels: list[str]
    opt: object
    ema_update: Callable[[float], None]

    def resume(self, path: Path) -> Progress:
        """Restore model, EMA, optimiser and random streams from a checkpoint; refuse another run's."""

    def forward_backward(self) -> StepLosses:
        """Draw one step's batch, noise levels and noise; compute the loss; backpropagate it."""

    def clip(self, is_log: bool) -> torch.Tensor | None:
        """Clip the gradients; return each member's gradient norm (needed only when `is_log`)."""

    def params_finite(self) -> torch.Tensor:
        """Whether each member's parameters are all finite (bool, 0-d or (K,)), on the device."""

    def checkpoint(self, progress: Progress) -> dict:
        """The checkpoint dict: the model side's state and `progress`'s entries, in this trainer's format."""


class Window:
    """One log window's books, on the device: loss sums and sample counts per (member, level), each
    member's loss sum, and the first step whose loss was not finite (-1: none). Read only at log steps
    and before checkpoints, the loop's only host-device syncs."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, saved: dict | None = None):
        self.level_sum = torch.zeros(shape, device=device)
        self.level_count = torch.zeros(shape, device=device)
        self.loss_sum = torch.zeros(shape[:-1], device=device)
        self.first_bad = torch.full(shape[:-1], -1, dtype=torch.long, device=device)
        self.ones, self.steps = None, 0
        if saved:  # a checkpoint between log steps carries the partial window, so the log stays exact
            self.level_sum.copy_(saved["level_sum"])
            self.level_count.copy_(saved["level_count"])
            self.loss_sum.copy_(saved["loss_sum"])
            self.steps = int(saved["steps"])

    @torch.no_grad()
    def add(self, losses: StepLosses, step: int) -> None:
        if self.ones is None:
            self.ones = torch.ones_like(losses.per_sample)
        self.level_sum.view(-1).index_add_(0, losses.cells, losses.per_sample.detach())
        self.level_count.view(-1).index_add_(0, losses.cells, self.ones)
        loss = losses.loss.detach()
        self.loss_sum.add_(loss)
        self.first_bad.copy_(torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad))
        self.steps += 1

    def read(self) -> tuple[list[float], list[list[float]], list[list[float]]]:
        """Each member's mean loss, level sums and level counts (a sync point)."""
        levels = self.level_sum.shape[-1]
        losses = (self.loss_sum / self.steps).reshape(-1).tolist()
        return losses, self.level_sum.reshape(-1, levels).tolist(), self.level_count.reshape(-1, levels).tolist()

    def reset(self) -> None:
        self.level_sum.zero_()
        self.level_count.zero_()
        self.loss_sum.zero_()
        self.steps = 0

    def state(self) -> dict:
        return {"level_sum": self.level_sum.detach().cpu(), "level_count": self.level_count.detach().cpu(),
                "loss_sum": self.loss_sum.detach().cpu(), "steps": self.steps}  # fmt: skip


def _say(message: str) -> None:
    """To the log and to stdout (where a job's log and a test both see it)."""
    logger.info(message)
    print(message, flush=True)


def _start(model: Stepper, settings, checkpoint_path: Path, logs, what: str) -> Progress:
    """The checkpoint's progress (refusing one past `settings.steps`), or a fresh run's; each live
    log rewritten to match (dropping lines a killed run wrote after its checkpoint, or a stale log
    that has no checkpoint and so belongs to another run)."""
    progress = Progress(histories=[[] for _ in model.sigma_levels])
    if checkpoint_path.exists():
        progress = model.resume(checkpoint_path)
        if progress.step > settings.steps:
            raise ScorebenchError(f"checkpoint {checkpoint_path} is at step {progress.step}, past "
                                  f"train.steps={settings.steps}; raise train.steps or delete it")  # fmt: skip
        progress.resumed_from = progress.step
        _say(f"resumed {what}from step {progress.step} ({checkpoint_path})")
    for path, history in zip(logs or [], progress.histories):
        write_log(path, history)
    return progress


def _check_finite(model: Stepper, window: Window, step: int, checkpoint_path: Path, *, params: bool) -> None:
    """Stop on the first non-finite loss of the window (and, before a checkpoint, non-finite parameters).

    Sync point: one read of the window, and one of the parameters before a checkpoint."""
    problems = [f"{who}non-finite loss at step {bad}" for who, bad in
                zip(model.labels, window.first_bad.reshape(-1).tolist()) if bad >= 0]  # fmt: skip
    if not problems and params:
        problems = [f"{who}non-finite parameters after step {step}" for who, ok in
                    zip(model.labels, model.params_finite().reshape(-1).tolist()) if not ok]  # fmt: skip
    if problems:
        last = str(checkpoint_path) if checkpoint_path.exists() else "none written yet"
        raise ScorebenchError(f"training diverged: {problems[0]} (last good checkpoint: {last})")


def _records(model: Stepper, window: Window, grad_norm: torch.Tensor, *, step: int, lr: float,
             steps_per_s: float | None, wall_s: float, tail: dict) -> list[dict]:  # fmt: skip
    """Each member's log record of the window that ends at `step`.

    Sync point: with `_check_finite`, the loop's only reads (`.tolist()`) from the device."""
    losses, sums, counts = window.read()
    norms = grad_norm.reshape(-1).tolist()
    records = []
    for i, levels in enumerate(model.sigma_levels):
        per_level = [s / c if c > 0 else None for s, c in zip(sums[i][: len(levels)], counts[i])]
        records.append({
            "step": step, "loss": losses[i], "loss_per_level": per_level, "sigma_levels": list(levels), "lr": lr,
            "grad_norm": norms[i], "steps_per_s": steps_per_s, "wall_s": wall_s, **tail,
        })  # fmt: skip
    return records


def run(model: Stepper, settings, checkpoint_path, *, logs=None, name: str = "", desc: str = "train",
        record_extra: dict | None = None) -> Progress:  # fmt: skip
    """Train `model` up to `settings.steps`, resuming from `checkpoint_path` when it exists.

    Args:
        model: the model side (see `Stepper`).
        settings: a `scorebench.train.TrainSettings` (steps, lr, warmup, ema_decay, log_every,
            checkpoint_every, progress).
        checkpoint_path: the resume checkpoint, written every `checkpoint_every` steps, at the last
            step and on a stop signal.
        logs: each member's JSONL log, kept current during training (rewritten from the checkpoint's
            records on resume); None leaves writing `Progress.histories` to the caller.
        name: the run in messages ("pack p"; "" for a cell).
        desc: the progress bar's label.
        record_extra: fields every log record ends with (e.g. pack_size).

    Returns:
        The final `Progress` (step, histories, total wall time, resumed_from). With ema_decay 0 the
        EMA has been set to the raw weights.

    Raises:
        Preempted: SIGUSR1 or SIGTERM arrived; the checkpoint of the last finished step is written.
        ScorebenchError: a member's loss or parameters turned non-finite (naming the step and the last
            good checkpoint), or a checkpoint past `settings.steps` or of another run.
    """
    checkpoint_path, what = Path(checkpoint_path), f"{name} " if name else ""
    progress = _start(model, settings, checkpoint_path, logs, what)
    step, histories, wall_before = progress.step, progress.histories, progress.wall_s
    window = Window(model.window_shape, model.device, progress.window)
    # steps_per_s counts only steps timed in this segment, after compilation
    timed_steps, window_compile_s = 0, None
    t_start = t_window = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - t_start

    logger.info("training %son %s for steps %d..%d", what, model.device, step, settings.steps)
    bar = tqdm(
        total=settings.steps, initial=step, disable=not settings.progress, file=sys.stderr, desc=desc, leave=False,
        mininterval=0.1 if sys.stderr.isatty() else 30.0,  # a rule's log file gets a line every 30 s, not a flood
    )  # fmt: skip
    stop = StopOnSignal().install()
    try:
        while step < settings.steps:
            lr = get_lr(step, settings)
            for group in model.opt.param_groups:
                group["lr"] = lr
            losses = model.forward_backward()
            if losses.compile_s is not None:  # this step compiled: its time is not a step's
                window_compile_s, timed_steps, t_window = losses.compile_s, -1, time.perf_counter()
            step += 1
            is_log = step % settings.log_every == 0 or step == settings.steps
            grad_norm = model.clip(is_log)
            model.opt.step()
            if settings.ema_decay > 0:
                model.ema_update(settings.ema_decay)
            model.opt.zero_grad(set_to_none=True)
            window.add(losses, step)
            timed_steps += 1
            bar.update(1)

            if is_log:
                _check_finite(model, window, step, checkpoint_path, params=False)
                rate = timed_steps / max(time.perf_counter() - t_window, 1e-12) if timed_steps > 0 else None
                tail = dict(record_extra or {})
                if window_compile_s is not None:  # this window held the compiling step (not in steps_per_s)
                    tail["compile_s"] = window_compile_s
                records = _records(model, window, grad_norm, step=step, lr=lr, steps_per_s=rate, wall_s=wall(),
                                   tail=tail)  # fmt: skip
                for i, record in enumerate(records):
                    histories[i].append(record)
                    if logs:
                        with open(logs[i], "a", encoding="utf-8") as f:
                            f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{sum(r['loss'] for r in records) / len(records):.4g}")
                window.reset()
                window_compile_s, timed_steps, t_window = None, 0, time.perf_counter()
            if step % settings.checkpoint_every == 0 or step == settings.steps or stop.requested:
                _check_finite(model, window, step, checkpoint_path, params=True)  # never save a non-finite state
                save_atomic(model.checkpoint(Progress(step, histories, wall(), window.state())), checkpoint_path)
            if stop.requested and step < settings.steps:
                _say(f"checkpointed {what}at step {step} on signal {stop.name}")
                raise Preempted(
                    f"training stopped by {stop.name} at step {step}; rerun to resume from {checkpoint_path}"
                )
    finally:
        stop.restore()
        bar.close()

    if settings.ema_decay == 0:
        model.ema_update(0.0)
    return Progress(step, histories, wall(), None, progress.resumed_from)
