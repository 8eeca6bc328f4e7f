"""Device selection, CPU fallback, and the signals service's settings."""

from __future__ import annotations

import pytest

from gekko.config import ConfigError
from gekko.signals.device import choose_device
from gekko.signals.settings import load_inference_settings


def no_gpu() -> int:
    return 0


def two_gpus() -> int:
    return 2


def no_mps() -> bool:
    return False


@pytest.mark.parametrize(
    ("requested", "device"),
    [("auto", "cpu"), ("cpu", "cpu")],
)
def test_without_accelerators_inference_runs_on_cpu(requested, device):
    choice = choose_device(requested, cuda_count=no_gpu, mps_available=no_mps)
    assert choice.device == device and not choice.fell_back


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("cuda", "CUDA is not available"),
        ("cuda:1", "CUDA is not available"),
        ("mps", "MPS is not available"),
    ],
)
def test_an_unusable_device_falls_back_to_cpu_with_the_reason(requested, reason):
    choice = choose_device(requested, cuda_count=no_gpu, mps_available=no_mps)
    assert choice.device == "cpu" and choice.requested == requested
    assert choice.fell_back and reason in choice.fallback_reason


def test_cuda_index_beyond_the_visible_gpus_falls_back():
    choice = choose_device("cuda:2", cuda_count=two_gpus, mps_available=no_mps)
    assert choice.device == "cpu" and "2 CUDA device(s) visible" in choice.fallback_reason


def test_auto_prefers_cuda_then_mps():
    assert choose_device("auto", cuda_count=two_gpus, mps_available=lambda: True).device == "cuda:0"
    assert choose_device("auto", cuda_count=no_gpu, mps_available=lambda: True).device == "mps"
    assert choose_device("cuda:1", cuda_count=two_gpus, mps_available=no_mps).device == "cuda:1"


def test_this_host_without_cuda_falls_back_for_real():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    choice = choose_device("cuda")
    assert choice.device == "cpu" and choice.fell_back


def settings(tmp_path, **env: str):
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    return load_inference_settings({"GEKKO_SIGNAL_MODEL_PATH": str(model), **env})


def test_settings_defaults(tmp_path):
    cfg = settings(tmp_path)
    assert (cfg.device, cfg.max_batch, cfg.max_wait_ms, cfg.gpu_metrics) == ("auto", 32, 2.0, False)
    assert 1 <= cfg.torch_threads <= 2 and cfg.gpu_memory_fraction is None


def test_settings_from_the_gpu_role_contract(tmp_path):
    cfg = settings(
        tmp_path,
        GEKKO_INFERENCE_DEVICE="CUDA:1",
        GEKKO_GPU_MEMORY_FRACTION="0.45",
        GEKKO_GPU_METRICS="true",
        GEKKO_TORCH_THREADS="3",
    )
    assert (cfg.device, cfg.gpu_memory_fraction, cfg.gpu_metrics) == ("cuda:1", 0.45, True)
    assert cfg.torch_threads == 3


def test_the_service_refuses_to_start_without_a_model(tmp_path):
    with pytest.raises(ConfigError, match="GEKKO_SIGNAL_MODEL_PATH is required.*train"):
        load_inference_settings({})
    with pytest.raises(ConfigError, match="no such model file.*gekko train-signal-model"):
        load_inference_settings({"GEKKO_SIGNAL_MODEL_PATH": str(tmp_path / "absent.pt")})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GEKKO_INFERENCE_DEVICE", "tpu"),
        ("GEKKO_GPU_MEMORY_FRACTION", "1.5"),
        ("GEKKO_GPU_MEMORY_FRACTION", "nan"),
        ("GEKKO_GPU_METRICS", "maybe"),
        ("GEKKO_INFERENCE_MAX_BATCH", "0"),
        ("GEKKO_INFERENCE_MAX_WAIT_MS", "-1"),
        ("GEKKO_TORCH_THREADS", "two"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        settings(tmp_path, **{name: value})
