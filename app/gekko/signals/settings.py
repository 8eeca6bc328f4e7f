"""The signals service's own settings, from GEKKO_* variables, checked before it binds a port."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gekko.config import ConfigError, parse_bool
from gekko.signals.device import valid_device_name

MODEL_PATH_ENV = "GEKKO_SIGNAL_MODEL_PATH"
TRAIN_HINT = "train one with `gekko train-signal-model --out PATH`"


@dataclass(frozen=True)
class InferenceSettings:
    model_path: Path
    device: str = "auto"
    gpu_memory_fraction: float | None = None
    gpu_metrics: bool = False
    torch_threads: int = 1
    max_batch: int = 32
    max_wait_ms: float = 2.0
    warmup_passes: int = 5


def _number(env: Mapping[str, str], name: str, default: float, kind: type, low: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value >= low or value == float("inf"):
        raise ConfigError(f"{name} must be a {kind.__name__} >= {low:g}, got {raw!r}")
    return value


def default_threads() -> int:
    # Two at most: the host's cores are shared by every service, and a 64-wide MLP gains
    # nothing from more.
    return max(1, min(2, os.cpu_count() or 1))


def load_inference_settings(env: Mapping[str, str] | None = None) -> InferenceSettings:
    env = os.environ if env is None else env
    raw_path = env.get(MODEL_PATH_ENV, "").strip()
    if not raw_path:
        raise ConfigError(f"{MODEL_PATH_ENV} is required (the signal model file); {TRAIN_HINT}")
    model_path = Path(raw_path)
    if not model_path.is_file():
        raise ConfigError(f"{MODEL_PATH_ENV}={raw_path}: no such model file; {TRAIN_HINT}")

    device = (env.get("GEKKO_INFERENCE_DEVICE", "").strip() or "auto").lower()
    if not valid_device_name(device):
        raise ConfigError(
            f"GEKKO_INFERENCE_DEVICE must be auto, cpu, cuda, cuda:N or mps, got {device!r}"
        )
    fraction = None
    if env.get("GEKKO_GPU_MEMORY_FRACTION", "").strip():
        fraction = _number(env, "GEKKO_GPU_MEMORY_FRACTION", 1.0, float, 0.0)
        if not 0 < fraction <= 1:
            raise ConfigError(f"GEKKO_GPU_MEMORY_FRACTION must be in (0, 1], got {fraction:g}")
    try:
        gpu_metrics = parse_bool(env.get("GEKKO_GPU_METRICS", "") or "false")
    except ValueError:
        raise ConfigError("GEKKO_GPU_METRICS must be true or false") from None
    return InferenceSettings(
        model_path=model_path,
        device=device,
        gpu_memory_fraction=fraction,
        gpu_metrics=gpu_metrics,
        torch_threads=int(_number(env, "GEKKO_TORCH_THREADS", default_threads(), int, 1)),
        max_batch=int(_number(env, "GEKKO_INFERENCE_MAX_BATCH", 32, int, 1)),
        max_wait_ms=float(_number(env, "GEKKO_INFERENCE_MAX_WAIT_MS", 2.0, float, 0.0)),
        warmup_passes=int(_number(env, "GEKKO_INFERENCE_WARMUP_PASSES", 5, int, 0)),
    )
