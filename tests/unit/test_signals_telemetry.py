"""GPU memory gauges of the signals service: exported only where inference runs on CUDA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gekko.signals.device import DeviceChoice
from gekko.signals.telemetry import InferenceMetrics, NvmlCollector

GIB = 1024**3


def memory(registry: CollectorRegistry, kind: str, device: str) -> float | None:
    return registry.get_sample_value(f"gekko_gpu_memory_{kind}_bytes", {"device": device})


def test_cuda_inference_exports_the_device_memory_at_scrape_time():
    free = {"cuda:1": 30 * GIB}
    asked: list[str] = []

    def mem_get_info(device: str) -> tuple[int, int]:
        asked.append(device)
        return free[device], 80 * GIB

    registry = CollectorRegistry()
    InferenceMetrics(registry, DeviceChoice("cuda:1", "cuda:1"), mem_get_info)
    assert memory(registry, "used", "cuda:1") == 50 * GIB
    assert memory(registry, "total", "cuda:1") == 80 * GIB
    free["cuda:1"] = 8 * GIB  # read again on the next scrape, not cached
    assert memory(registry, "used", "cuda:1") == 72 * GIB
    assert set(asked) == {"cuda:1"}  # never another device (that would create a context there)


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_without_cuda_there_are_no_gpu_memory_series(device):
    def mem_get_info(_: str) -> tuple[int, int]:
        raise AssertionError("must not be asked")

    registry = CollectorRegistry()
    InferenceMetrics(registry, DeviceChoice("auto", device), mem_get_info)
    assert b"gekko_gpu_memory" not in generate_latest(registry)


def test_a_device_that_cannot_be_read_is_left_out_of_the_scrape():
    def mem_get_info(_: str) -> tuple[int, int]:
        raise RuntimeError("CUDA error: device-side assert triggered")

    registry = CollectorRegistry()
    InferenceMetrics(registry, DeviceChoice("auto", "cuda:0"), mem_get_info)
    text = generate_latest(registry)
    assert b"gekko_inference_device_info" in text
    assert b'gekko_gpu_memory_used_bytes{device="cuda:0"}' not in text


def test_nvml_exports_utilisation_only_so_memory_has_one_source():
    handle = object()
    nvml = SimpleNamespace(
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda _: handle,
        nvmlDeviceGetUtilizationRates=lambda _: SimpleNamespace(gpu=37),
    )
    registry = CollectorRegistry()
    registry.register(NvmlCollector(nvml))
    InferenceMetrics(registry, DeviceChoice("cuda", "cuda:0"), lambda _: (GIB, 2 * GIB))
    assert registry.get_sample_value("gekko_gpu_utilization_ratio", {"gpu": "0"}) == 0.37
    text = generate_latest(registry).decode()
    assert text.count("# TYPE gekko_gpu_memory_used_bytes gauge") == 1
    assert memory(registry, "used", "cuda:0") == GIB
