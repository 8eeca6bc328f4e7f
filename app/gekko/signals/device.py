"""Where inference runs: GEKKO_INFERENCE_DEVICE resolved against what this host can use.

auto prefers CUDA, then Apple MPS, then CPU. An explicit device that is not usable (no CUDA
runtime, an index beyond the GPUs present, no MPS) falls back to CPU: the service keeps serving
and says why, in a log line, in /health and in a metric. The availability probes are
parameters, so the choice is testable without a GPU.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("gekko.signals.device")

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceChoice:
    requested: str
    device: str  # what torch runs on: cpu, cuda:N or mps
    fallback_reason: str | None = None

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(
    requested: str,
    cuda_count: Callable[[], int] = _cuda_count,
    mps_available: Callable[[], bool] = _mps_available,
) -> DeviceChoice:
    """Resolve auto|cpu|cuda|cuda:N|mps (already validated) to a usable device."""
    if requested == "cpu":
        return DeviceChoice(requested, "cpu")
    if requested == "auto":
        if cuda_count() > 0:
            return DeviceChoice(requested, "cuda:0")
        if mps_available():
            return DeviceChoice(requested, "mps")
        return DeviceChoice(requested, "cpu")
    if requested == "mps":
        if mps_available():
            return DeviceChoice(requested, "mps")
        return DeviceChoice(requested, "cpu", "MPS is not available on this host")
    match = _CUDA.match(requested)
    if match is None:
        raise ValueError(f"unknown device {requested!r}")
    index = int(match.group(1) or 0)
    count = cuda_count()
    if count == 0:
        return DeviceChoice(requested, "cpu", "CUDA is not available (no GPU or no CUDA runtime)")
    if index >= count:
        return DeviceChoice(
            requested, "cpu", f"cuda:{index} does not exist ({count} CUDA device(s) visible)"
        )
    return DeviceChoice(requested, f"cuda:{index}")


def valid_device_name(name: str) -> bool:
    return name in ("auto", "cpu", "mps") or _CUDA.match(name) is not None


def apply_memory_fraction(choice: DeviceChoice, fraction: float | None) -> None:
    """Cap this process's share of the GPU (several instances can share one GPU)."""
    if fraction is None or not choice.device.startswith("cuda"):
        return
    torch.cuda.set_per_process_memory_fraction(fraction, torch.device(choice.device))
    log.info("GPU memory fraction %.2f on %s", fraction, choice.device)


def limit_threads(threads: int) -> None:
    """Intra-op threads for torch; one inter-op thread (forwards are serialised anyway)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable once per process (e.g. a second app in tests)
        pass


def log_choice(choice: DeviceChoice) -> None:
    if choice.fell_back:
        log.warning(
            "inference device %s requested but not usable: %s; falling back to CPU",
            choice.requested,
            choice.fallback_reason,
        )
    else:
        log.info("inference device %s (requested %s)", choice.device, choice.requested)
