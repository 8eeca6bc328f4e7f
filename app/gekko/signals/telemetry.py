"""Inference metrics, and GPU utilisation/memory from NVML when GEKKO_GPU_METRICS is on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gekko.signals.device import DeviceChoice

log = logging.getLogger("gekko.signals.telemetry")

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry, choice: DeviceChoice) -> None:
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


def _per_gpu(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["gpu"])


class NvmlCollector(Collector):
    """GPU utilisation and memory per GPU, read from NVML at scrape time."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        utilisation = _per_gpu("gekko_gpu_utilization_ratio", "GPU busy over the last sample.")
        used = _per_gpu("gekko_gpu_memory_used_bytes", "GPU memory in use.")
        total = _per_gpu("gekko_gpu_memory_total_bytes", "GPU memory.")
        try:
            for index in range(self.nvml.nvmlDeviceGetCount()):
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                gpu = str(index)
                utilisation.add_metric([gpu], rates.gpu / 100.0)
                used.add_metric([gpu], float(memory.used))
                total.add_metric([gpu], float(memory.total))
        except Exception as exc:  # a GPU gone mid-scrape: report what was read, never fail it
            log.warning("NVML read failed: %s", exc)
        yield from (utilisation, used, total)


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
