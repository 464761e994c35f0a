"""Which device and precision a job runs on, and a description of it for provenance.

One code path serves CPU and CUDA (nanoGPT's habit): the device is resolved once from a name,
mixed precision is a context manager that does nothing where it is off, and the device is
written into every result so timings can be compared only between like machines.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext

import torch

from scorebench.errors import ScorebenchError

AMP_MODES = ("auto", "bf16", "off")


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
