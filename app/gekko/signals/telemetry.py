"""Inference metrics; GPU memory from torch when inference runs on CUDA, and GPU utilisation
from NVML when GEKKO_GPU_METRICS is on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gekko.signals.device import DeviceChoice

log = logging.getLogger("gekko.signals.telemetry")

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


# torch.cuda.mem_get_info: (free, total) bytes of a whole device, every process on it counted.
MemGetInfo = Callable[[str], tuple[int, int]]


def _torch_mem_get_info(device: str) -> tuple[int, int]:
    return torch.cuda.mem_get_info(device)


class InferenceMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        choice: DeviceChoice,
        mem_get_info: MemGetInfo = _torch_mem_get_info,
    ) -> None:
        self.latency = Histogram(
            "gekko_inference_latency_seconds",
            "Time from a request's features being queued to its probabilities (batching "
            "wait plus forward).",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "gekko_inference_batch_size",
            "Requests served by one forward pass.",
            registry=registry,
            buckets=_BATCH_BUCKETS,
        )
        self.predictions = Counter(
            "gekko_inference_predictions_total",
            "Signals returned, by signal.",
            ["signal"],
            registry=registry,
        )
        device = Gauge(
            "gekko_inference_device_info",
            "The device inference runs on (1), the one requested, and whether it fell back to "
            "CPU because the requested one was not usable.",
            ["device", "requested", "fallback"],
            registry=registry,
        )
        device.labels(choice.device, choice.requested, str(choice.fell_back).lower()).set(1)
        if choice.device.startswith("cuda"):  # torch saw a CUDA device and inference uses it
            registry.register(CudaMemoryCollector([choice.device], mem_get_info))


class CudaMemoryCollector(Collector):
    """Memory of the CUDA devices inference runs on, read at scrape time (one cheap driver call
    per device). Only those: asking about another device would create a CUDA context there."""

    def __init__(self, devices: Sequence[str], mem_get_info: MemGetInfo) -> None:
        self.devices = tuple(devices)
        self.mem_get_info = mem_get_info

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "gekko_gpu_memory_used_bytes",
            "GPU memory in use on the device, by every process on it.",
            labels=["device"],
        )
        total = GaugeMetricFamily(
            "gekko_gpu_memory_total_bytes", "GPU memory of the device.", labels=["device"]
        )
        for device in self.devices:
            try:
                free, size = self.mem_get_info(device)
            except Exception as exc:  # a device gone mid-scrape: leave it out, never fail it
                log.warning("GPU memory of %s not readable: %s", device, exc)
                continue
            used.add_metric([device], float(size - free))
            total.add_metric([device], float(size))
        yield from (used, total)


def _per_gpu(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["gpu"])


class NvmlCollector(Collector):
    """GPU utilisation per GPU, read from NVML at scrape time (memory: CudaMemoryCollector)."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        utilisation = _per_gpu("gekko_gpu_utilization_ratio", "GPU busy over the last sample.")
        try:
            for index in range(self.nvml.nvmlDeviceGetCount()):
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                utilisation.add_metric([str(index)], rates.gpu / 100.0)
        except Exception as exc:  # a GPU gone mid-scrape: report what was read, never fail it
            log.warning("NVML read failed: %s", exc)
        yield utilisation


def register_gpu_metrics(registry: CollectorRegistry) -> bool:
    """Export GPU gauges if NVML works here; log why not otherwise. True when registered."""
    try:
        import pynvml  # nvidia-ml-py; imported only when asked for

        pynvml.nvmlInit()
    except Exception as exc:
        log.warning("GEKKO_GPU_METRICS is on but NVML is not usable (%s); no GPU metrics", exc)
        return False
    registry.register(NvmlCollector(pynvml))
    return True
