"""Where tensors compute, and a clock that waits for them.

Shared by training, the path sweeps and the benchmarks (linpath.bench), so that a device name
means the same everywhere and every timing of CUDA work includes the work itself: kernels run
asynchronously, and a bare perf_counter would time only their launch."""

from __future__ import annotations

import time

import torch

from .errors import SettingsError


def pick_device(name: str, setting: str = "train.device") -> torch.device:
    """`auto`: CUDA when there is one, else the CPU. A CUDA device asked for where there is none is a
    settings error naming `setting`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"{setting}={name!r} but CUDA is not available here")
    return torch.device(name)


def fp32_precision_in_force(device: torch.device) -> str:
    """What the backend flags in force make of an fp32 matmul or convolution on `device`, read through
    torch's public `fp32_precision` switches (each reports its effective value, inherited from
    `torch.backends.fp32_precision` where it is left at "none"): "fp32" when every product of that device
    runs in IEEE fp32, else the reduced precisions in force ("tf32" on CUDA when cuBLAS or cuDNN may use
    TF32; "bf16" or "tf32" on a CPU where oneDNN may), joined by "+" when they differ."""
    b = torch.backends
    knobs = (b.cuda.matmul, b.cudnn.conv) if device.type == "cuda" else (b.mkldnn.matmul, b.mkldnn.conv)
    reduced = sorted({k.fp32_precision for k in knobs} - {"ieee", "none"})
    return "+".join(reduced) if reduced else "fp32"


def synced_time(device: torch.device) -> float:
    """perf_counter once the work queued on `device` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
