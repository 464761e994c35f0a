"""One cell's training: one function over plain objects, resumable, the same on CPU and CUDA.

The loop itself (nanoGPT's order: forward under autocast, backward, clip, optimiser step,
zero_grad(set_to_none=True), `.item()` only at log steps; DiT's EMA, a deep copy with requires_grad
off, always in eval mode, updated after each optimiser step; log, checkpoints, preemption, resume)
is `scorebench.loop`'s, shared with packed training; this file is one cell's side of it. Each step
draws a minibatch and one noise level per sample uniformly over the schedule's levels, which is
NCSN's objective (Song & Ermon 2019, eq. 6): (1/L) Σ_i λ(σ_i) ℓ(θ; σ_i), estimated per sample.

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

Preemption (`scorebench.loop`): on SIGUSR1 or SIGTERM (SLURM's time-limit warning, `scancel`, a
preempting job) the loop finishes its current step, writes the resume checkpoint and stops with
`Preempted`, so the rerun that SLURM's requeue or Snakemake's retries start loses no work.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from scorebench import loop
from scorebench.checkpoint import load_checkpoint, load_states, require_same, save_atomic
from scorebench.device import (
    AMP_MODES, SWITCH_MODES, FastPath, autocast, device_description, resolve_device, resolve_fast_path,
    switch_mode, synchronize,
)
from scorebench.errors import ScorebenchError
from scorebench.loop import Progress, StepLosses, ema_updater, make_ema, training_set
from scorebench.optim import make_adam, set_implementation
from scorebench.schema import block_defaults

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


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters (one foreach kernel); buffers are copied.

    decay=0 makes the EMA an exact copy (DiT starts its EMA this way).
    """
    ema_updater(ema, model)(decay)


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


def _one_line(exc: Exception) -> str:
    """An exception as one short line (compiler errors span pages)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


class _Cell:
    """One cell's side of the training loop (a `scorebench.loop.Stepper`): its model, EMA and Adam,
    every draw from one generator, the compiled forward with its eager fallback, and checkpoint.pt.

    Why a class: the loop asks the same model side for a step, a clip, a checkpoint and a resume;
    the objects they share (model, optimiser, generators) live here once.
    """

    def __init__(self, model, loss_fn, x_all, schedule, settings: TrainSettings, device, fast: FastPath, config):
        self.settings, self.schedule, self.device, self.fast, self.config = settings, schedule, device, fast, config
        self.loss_fn, self.batch = loss_fn, settings.batch_size
        self.sigmas = schedule.sigmas.to(device=device, dtype=torch.float32)
        self.weights = schedule.weights.to(device=device, dtype=torch.float32)
        self.window_shape, self.sigma_levels, self.labels = (self.sigmas.numel(),), [schedule.sigmas.tolist()], [""]

        self.model = model.to(device).train()
        if fast.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ema, self.ema_update = make_ema(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel per tensor instead of a Python loop of seven
        self.opt = make_adam(self.params, lr=settings.lr, beta1=settings.beta1, kind=fast.adam)
        self.gen = torch.Generator(device=device).manual_seed(settings.seed)
        self.index_gen = self.gen if device.type == "cpu" else torch.Generator().manual_seed(settings.seed)
        self.draw_batch = _minibatches(x_all, self.batch, device, fast, self.index_gen)
        # the compiled wrapper holds `model` itself: parameters, state_dict and checkpoints are the eager model's
        self.forward = torch.compile(model) if fast.compile else model
        self.compile_s = self.compile_error = None

    def _forward_backward(self, net) -> StepLosses:
        x = self.draw_batch()
        level = torch.randint(self.sigmas.numel(), (self.batch,), generator=self.gen, device=self.device)
        with autocast(self.device, self.settings.amp):
            per_sample = self.loss_fn(net, x, self.sigmas[level], self.weights[level], generator=self.gen)
        if per_sample.shape != (self.batch,):
            raise ScorebenchError(f"train: loss_fn returned shape {tuple(per_sample.shape)}, expected ({self.batch},)")
        per_sample = per_sample.float()
        loss = per_sample.mean()
        loss.backward()
        return StepLosses(level, per_sample, loss)

    def forward_backward(self) -> StepLosses:
        """One step's draws, loss and backward; a segment's first compiled step is timed, and redone
        in eager mode from the same random state when the compiler fails."""
        if self.forward is self.model or self.compile_s is not None:
            return self._forward_backward(self.forward)
        states = self.gen.get_state(), self.index_gen.get_state(), torch.get_rng_state()
        t0 = time.perf_counter()
        try:
            losses = self._forward_backward(self.forward)
        except ScorebenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager model still works
            self.compile_error = _one_line(exc)
            logger.warning("train: torch.compile failed at the first step (%s); continuing in eager mode",
                           self.compile_error)  # fmt: skip
            self.gen.set_state(states[0])
            self.index_gen.set_state(states[1])
            torch.set_rng_state(states[2])
            self.opt.zero_grad(set_to_none=True)
            self.forward = self.model
            losses = self._forward_backward(self.forward)
        synchronize(self.device)  # once per segment: the compile step's time is all its own
        self.compile_s = time.perf_counter() - t0
        return losses._replace(compile_s=self.compile_s)

    def clip(self, is_log: bool) -> torch.Tensor | None:
        if self.settings.grad_clip is not None:
            return torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        return _grad_norm(self.params) if is_log else None

    def params_finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(p).all() for p in self.params]).all()

    def checkpoint(self, progress: Progress) -> dict:
        if self.settings.ema_decay == 0:
            self.ema_update(0.0)
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": progress.step,
            "settings": self.settings.as_dict(),
            "model_config": self.config,
            "sigmas": self.schedule.sigmas.detach().cpu().double(),
            "rng": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": progress.histories[0],
            "wall_s": progress.wall_s,
            "window": progress.window,
        }
        if self.index_gen is not self.gen:
            state["index_rng"] = self.index_gen.get_state()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def resume(self, path: Path) -> Progress:
        ck = load_checkpoint(path, expect_keys=CHECKPOINT_KEYS)
        require_same(ck["model_config"], self.config, path=path, label="model_config")
        require_same(ck["settings"], self.settings.as_dict(), path=path, label="settings", fields=TRAJECTORY_FIELDS)
        if not torch.equal(ck["sigmas"].double(), self.schedule.sigmas.detach().cpu().double()):
            raise ScorebenchError(
                f"checkpoint {path} is incompatible: schedule.sigmas differ from this run's; "
                "delete it to retrain from scratch"
            )
        # load_state_dict copies in place, so tensor lists gathered before (EMA update) stay valid
        load_states({"model": self.model, "ema": self.ema, "optimizer": self.opt}, ck, path=path)
        set_implementation(self.opt, self.fast.adam)  # the saved state names the implementation that wrote it
        try:
            self.gen.set_state(ck["rng"])
        except (RuntimeError, TypeError):  # a CPU generator state cannot continue a CUDA stream, and back
            raise ScorebenchError(
                f"checkpoint {path} holds a random-number state of another device type; resume it on the "
                f"device it was written on, or delete it to retrain from scratch (this run: {self.device})"
            ) from None
        if self.index_gen is not self.gen:
            if "index_rng" not in ck:
                raise ScorebenchError(
                    f"checkpoint {path} holds no index_rng (the minibatch stream of a CUDA run; it was "
                    "written by an older scorebench): delete it to retrain from scratch"
                )
            self.index_gen.set_state(ck["index_rng"])
        torch.set_rng_state(ck["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in ck:
            torch.cuda.set_rng_state(ck["cuda_rng"], self.device)
        return Progress(int(ck["step"]), [list(ck.get("history", []))], float(ck.get("wall_s", 0.0)), ck.get("window"))


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
    device = resolve_device(settings.device)
    x_all = training_set(data, "train")
    fast = resolve_fast_path(
        device, compile=settings.compile, channels_last=settings.channels_last, fused_adam=settings.fused_adam,
        data_on_device=settings.data_on_device, amp=settings.amp, sample_dim=x_all.dim(),
        data_bytes=x_all.numel() * x_all.element_size(),
    )  # fmt: skip
    config = dict(getattr(model, "config", None) or {})
    if not config:
        logger.warning("train: the model has no .config dict; model.pt will not be able to rebuild it")

    cell = _Cell(model, loss_fn, x_all, schedule, settings, device, fast, config)
    logger.info("fast path %s", fast.as_dict())
    done = loop.run(cell, settings, out_dir / CHECKPOINT_NAME, logs=[out_dir / LOG_NAME])

    ran = dataclasses.replace(fast, compile=cell.forward is not model).as_dict()
    # what this (last) segment ran: results carry it in their train_device column
    fast_path = {**ran, "compile_s": cell.compile_s, "compile_error": cell.compile_error}
    device_record = {**device_description(device), "fast_path": fast_path}
    save_atomic(
        model_file(model.state_dict(), cell.ema.state_dict(), config, done.step, settings, schedule, done.wall_s,
                   device_record),
        out_dir / MODEL_NAME,
    )  # fmt: skip
    logger.info("wrote %s (step %d, %.1f s)", out_dir / MODEL_NAME, done.step, done.wall_s)
    history = done.histories[0]
    final_loss = history[-1]["loss"] if history else math.nan
    return TrainResult(done.step, done.wall_s, final_loss, done.resumed_from, str(device))


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
