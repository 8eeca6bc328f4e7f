"""Reading GPUs from nvidia-smi, NVML and the torch probe, over recorded outputs."""

from types import SimpleNamespace

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _gpu as gpu

from . import gpu_samples as samples


def fake_smi(outputs):
    """run(argv) answering each nvidia-smi call from {first argument or '': (rc, out, err)}."""
    calls = []

    def run(argv):
        calls.append(argv)
        key = argv[1].split("=")[0] if len(argv) > 1 else ""
        if key == "--query-gpu" and "compute_cap" not in argv[1]:
            key = "--query-gpu-legacy"
        return outputs[key]

    run.calls = calls
    return run


def test_one_gpu_row_becomes_a_device_with_memory_in_mib():
    (device,) = gpu.parse_smi_csv(samples.SMI_ONE_A100)
    assert device == {
        "index": 0,
        "name": "NVIDIA A100-SXM4-40GB",
        "uuid": "GPU-4bc2f6b4-5ce0-7ac6-2d2f-a1b7e1a0c3d2",
        "memory_total_mb": 40960,
        "memory_used_mb": 4,
        "memory_free_mb": 40337,
        "utilization_percent": 0,
        "compute_capability": "8.0",
        "driver_version": "535.104.05",
    }


def test_two_gpus_and_values_the_board_does_not_report():
    first, second = gpu.parse_smi_csv(samples.SMI_TWO_4090)
    assert [first["index"], second["index"]] == [0, 1]
    assert first["utilization_percent"] == 37
    assert second["utilization_percent"] is None  # [N/A]
    assert second["compute_capability"] == "8.9"


def test_driver_cuda_version_from_the_header_and_from_dash_q():
    assert gpu.parse_cuda_version(samples.SMI_HEADER_535) == "12.2"
    assert gpu.parse_cuda_version(samples.SMI_HEADER_550) == "12.4"
    assert gpu.parse_cuda_version(samples.SMI_Q_470) == "11.4"
    assert gpu.parse_cuda_version("no version here") is None


def test_read_smi_queries_devices_then_the_header():
    run = fake_smi(
        {"--query-gpu": (0, samples.SMI_TWO_4090, ""), "": (0, samples.SMI_HEADER_550, "")}
    )
    devices, cuda = gpu.read_smi(run, "/usr/bin/nvidia-smi")
    assert len(devices) == 2 and cuda == "12.4"
    assert run.calls[0][1:] == gpu.SMI_QUERY


def test_old_driver_without_compute_cap_is_queried_again_without_it():
    run = fake_smi(
        {
            "--query-gpu": (2, samples.SMI_UNKNOWN_COMPUTE_CAP, ""),
            "--query-gpu-legacy": (0, samples.SMI_ONE_T4_470.rsplit(",", 1)[0] + "\n", ""),
            "": (0, samples.SMI_Q_470, ""),
        }
    )
    (device,), cuda = gpu.read_smi(run, "nvidia-smi")
    assert device["name"] == "Tesla T4" and device["compute_capability"] is None
    assert cuda == "11.4"


@pytest.mark.parametrize(
    "rc, text, kind",
    [
        (18, samples.SMI_MISMATCH, "version_mismatch"),
        (9, samples.SMI_NO_DRIVER, "driver_not_loaded"),
        (255, "Unable to determine the device handle for GPU0000:00:04.0: Unknown Error", "failed"),
    ],
)
def test_failing_nvidia_smi_is_classified(rc, text, kind):
    run = fake_smi({"--query-gpu": (rc, text, "")})
    with pytest.raises(gpu.GpuError) as raised:
        gpu.read_smi(run, "nvidia-smi")
    assert raised.value.kind == kind
    assert text.strip().splitlines()[0] in raised.value.detail


def test_driver_without_gpus_is_not_an_error():
    run = fake_smi({"--query-gpu": (6, samples.SMI_NO_DEVICES, "")})
    assert gpu.read_smi(run, "nvidia-smi") == ([], None)


class FakeNVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNVML:
    """The part of pynvml (nvidia-ml-py) gpu_facts uses, for two H100s on driver 550."""

    NVMLError = FakeNVMLError

    def __init__(self, init_error=None):
        self.init_error = init_error
        self.shut_down = False

    def nvmlInit(self):
        if self.init_error:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"  # older nvidia-ml-py releases return bytes

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle:08d}-0000-0000-0000-000000000000"

    def nvmlDeviceGetMemoryInfo(self, handle):
        mib = 1024 * 1024
        return SimpleNamespace(total=81559 * mib, used=(handle + 1) * 1000 * mib, free=70000 * mib)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle == 1:
            raise FakeNVMLError(3)  # NVML_ERROR_NOT_SUPPORTED
        return SimpleNamespace(gpu=12, memory=3)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return (9, 0)


def test_nvml_reads_every_device_and_shuts_down():
    nvml = FakeNVML()
    devices, driver, cuda = gpu.read_nvml(nvml)
    assert driver == "550.54.15" and cuda == "12.4"
    assert [d["compute_capability"] for d in devices] == ["9.0", "9.0"]
    assert devices[0]["memory_total_mb"] == 81559 and devices[1]["memory_used_mb"] == 2000
    assert devices[0]["utilization_percent"] == 12 and devices[1]["utilization_percent"] is None
    assert nvml.shut_down


@pytest.mark.parametrize(
    "code, kind",
    [
        (18, "version_mismatch"),
        (9, "driver_not_loaded"),
        (12, "library_not_found"),
        (999, "failed"),
    ],
)
def test_nvml_init_failures_are_classified(code, kind):
    with pytest.raises(gpu.GpuError) as raised:
        gpu.read_nvml(FakeNVML(init_error=code))
    assert raised.value.kind == kind


def test_torch_probe_output_is_read_past_other_lines():
    facts = gpu.parse_torch_probe(0, "some import noise\n" + samples.torch_probe(), "")
    assert facts["probed"] and facts["cuda"] == "12.1" and facts["devices"][0]["index"] == 0


def test_torch_probe_without_torch_or_failing_is_not_probed():
    missing = gpu.parse_torch_probe(0, samples.TORCH_NOT_INSTALLED, "")
    assert not missing["probed"] and "No module named 'torch'" in missing["error"]
    crashed = gpu.parse_torch_probe(1, "", "Segmentation fault")
    assert crashed == {"probed": False, "error": "Segmentation fault"}


def test_the_probe_script_is_valid_python_that_reports_a_missing_torch(tmp_path):
    # Run the real probe with an interpreter that cannot import torch.
    import subprocess
    import sys

    blocker = tmp_path / "torch.py"
    blocker.write_text("raise ImportError('no torch here')\n")
    done = subprocess.run(
        [sys.executable, "-c", gpu.TORCH_PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        check=False,
    )
    facts = gpu.parse_torch_probe(done.returncode, done.stdout, done.stderr)
    assert facts["probed"] is False
    assert facts["error"] == "ImportError: no torch here"
    assert facts["platform"]["system"] == "Linux"


def test_the_probe_reads_a_real_torch_when_one_is_installed():
    torch = pytest.importorskip("torch")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", gpu.TORCH_PROBE], capture_output=True, text=True, check=False
    )
    facts = gpu.parse_torch_probe(done.returncode, done.stdout, done.stderr)
    assert facts["probed"] and facts["version"] == torch.__version__
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert len(facts["devices"]) == torch.cuda.device_count()
