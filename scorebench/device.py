"""Which device and precision a job runs on, and a description of it for provenance.

One code path serves CPU and CUDA (nanoGPT's habit): the device is resolved once from a name,
mixed precision is a context manager that does nothing where it is off, and the device is
written into every result so timings can be compared only between like machines.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from scorebench.errors import ScorebenchError
from scorebench.heap import heap_state

AMP_MODES = ("auto", "bf16", "off")
# Each part of the trainer's fast path is a switch: "auto" picks the fast choice where it is safe.
SWITCH_MODES = ("auto", "on", "off")
# The training set stays on the GPU (auto) when it takes at most this share of the free memory;
# the rest is left for activations, which for image nets at batch 128 are several GiB.
RESIDENT_FRACTION = 0.25


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device name into a `torch.device`, failing clearly when it is not there.

    Args:
        name: "auto" (CUDA when one is visible, else CPU; CUDA_VISIBLE_DEVICES is honoured by torch),
            "cpu", "cuda" or "cuda:N".

    Returns:
        The device to put the model and data on.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ScorebenchError(f"device: unknown {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ScorebenchError("device: 'cuda' was asked for but no CUDA GPU is visible; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ScorebenchError(
                f"device: {name!r} does not exist; {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
        return device
    raise ScorebenchError(f"device: unsupported {name!r}; choose auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, amp: str = "auto"):
    """The mixed-precision context for a forward pass (and the loss) on `device`.

    bf16 needs no loss scaling (its exponent range is fp32's), so there is no GradScaler.
    "auto" is bf16 on CUDA and fp32 on CPU (bf16 matmuls on most CPUs are slower, and fp32 keeps
    CPU runs bit-reproducible); "bf16" forces bf16 autocast on either; "off" is always fp32.

    Args:
        device: where the computation runs.
        amp: "auto" | "bf16" | "off".

    Returns:
        A context manager (a `nullcontext` when precision stays fp32).
    """
    if amp not in AMP_MODES:
        raise ScorebenchError(f"amp: unknown {amp!r}; choose one of {list(AMP_MODES)}")
    device = torch.device(device)
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): for timings, never inside a training step."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device, amp: str = "auto") -> str:
    """The precision `autocast(device, amp)` computes in: "bf16" or "fp32"."""
    on = amp == "bf16" or (amp == "auto" and torch.device(device).type == "cuda")
    return "bf16" if on else "fp32"


def switch_mode(value):
    """A switch as "auto" | "on" | "off"; YAML 1.1 reads unquoted on/off as booleans, so True/False
    mean on/off. Anything else comes back unchanged (the caller names the field in its error)."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


def _switch(mode: str, auto: bool) -> bool:
    return auto if mode == "auto" else mode == "on"


@dataclass(frozen=True)
class FastPath:
    """The trainer's fast path as resolved for one run (what actually ran, for provenance).

    Attributes:
        compile: the training forward goes through `torch.compile`.
        channels_last: model and image batches are NHWC (tensor cores read it without transposes).
        adam: "fused" (torch's fused kernel, one pass per tensor), "foreach" (a few multi-tensor
            kernels) or "loop" (torch's plain single-tensor Adam); see optim.make_adam.
        data_on_device: the training set is resident on the device (else each batch is gathered
            on the host into pinned memory and copied with non_blocking).
        precision: "bf16" (autocast) or "fp32".
    """

    compile: bool
    channels_last: bool
    adam: str
    data_on_device: bool
    precision: str

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_fast_path(
    device: torch.device,
    *,
    compile: str = "auto",
    channels_last: str = "auto",
    fused_adam: str = "auto",
    data_on_device: str = "auto",
    amp: str = "auto",
    sample_dim: int = 2,
    data_bytes: int = 0,
) -> FastPath:
    """Turn the switches (auto | on | off) into what a run on `device` does.

    auto means: compile on CUDA (on CPU it needs a C++ toolchain and pays off only for large nets);
    channels_last for 4-D image batches on CUDA; fused Adam (both devices have the kernel); the data set
    on the GPU when it takes at most RESIDENT_FRACTION of the free memory; bf16 on CUDA (`autocast`).
    "on" forces a part wherever it applies (channels_last only exists for 4-D batches); on the CPU
    the data set is always resident (host memory is the device's memory).

    Args:
        device: where the run computes.
        compile, channels_last, fused_adam, data_on_device: "auto" | "on" | "off" (booleans allowed).
        amp: "auto" | "bf16" | "off".
        sample_dim: dimensions of one batch (2 for vectors, 4 for (B, C, H, W) images).
        data_bytes: size of the training set, for the fits-in-memory test.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    modes = {"compile": compile, "channels_last": channels_last, "fused_adam": fused_adam,
             "data_on_device": data_on_device}  # fmt: skip
    for name, mode in modes.items():
        if switch_mode(mode) not in SWITCH_MODES:
            raise ScorebenchError(f"train.{name}: must be one of {list(SWITCH_MODES)}, got {mode!r}")
    modes = {k: switch_mode(v) for k, v in modes.items()}
    if modes["fused_adam"] == "auto":
        adam = "fused"
    else:
        adam = "fused" if modes["fused_adam"] == "on" else "loop"
    resident = True
    if cuda and modes["data_on_device"] != "on":
        free, _ = torch.cuda.mem_get_info(device)
        resident = modes["data_on_device"] == "auto" and data_bytes <= RESIDENT_FRACTION * free
    return FastPath(
        compile=_switch(modes["compile"], cuda),
        channels_last=sample_dim == 4 and _switch(modes["channels_last"], cuda),
        adam=adam,
        data_on_device=resident,
        precision=amp_dtype(device, amp),
    )


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_description(device: torch.device) -> dict:
    """A plain dict naming the hardware and software a run used (for results and model files).

    Args:
        device: the device the run used.

    Returns:
        {type, name, torch, cuda, cpu_count, ...}; CUDA adds capability and total memory in MiB.
    """
    device = torch.device(device)
    info = {
        "type": device.type,
        "name": _cpu_model(),
        "torch": str(torch.__version__),  # TorchVersion is a str subclass weights_only refuses
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "heap": heap_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            name=props.name,
            index=int(index),
            capability=f"{props.major}.{props.minor}",
            memory_mib=int(props.total_memory // 2**20),
            cpu=_cpu_model(),
        )
    return info
