"""Driver / CUDA runtime / compute capability rules of gpu_facts, and the backend choice."""

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _gpu as gpu
from ansible_collections.gekko.platform.plugins.module_utils import _gpu_compat as compat

LINUX = {"system": "Linux", "machine": "x86_64", "mac_ver": None}
APPLE_SILICON = {"system": "Darwin", "machine": "arm64", "mac_ver": "14.4.1"}
A100 = {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}


def test_runtime_within_the_drivers_cuda_version_passes():
    assert compat.check_cuda_runtime("12.1", "535.104.05", "12.2") == []
    assert compat.check_cuda_runtime("12.2", "535.104.05", "12.2") == []


def test_newer_minor_release_runs_through_minor_version_compatibility_with_a_warning():
    (problem,) = compat.check_cuda_runtime("12.4", "535.104.05", "12.2")
    assert problem["severity"] == "warning"
    assert "minor version compatibility" in problem["message"]
    # The driver that ships with CUDA 12.4 is the remediation.
    assert "550.54.14" in problem["remediation"]


def test_driver_too_old_for_the_runtimes_major_version_is_an_error():
    (problem,) = compat.check_cuda_runtime("12.4", "470.82.01", "11.4")
    assert problem["severity"] == "error" and problem["check"] == "cuda_runtime"
    assert "CUDA 12.4" in problem["message"] and "470.82.01" in problem["message"]
    assert "525.60.13" in problem["message"]  # CUDA 12.x minimum driver
    assert "550.54.14" in problem["remediation"]


def test_cuda_13_needs_a_580_driver():
    (problem,) = compat.check_cuda_runtime("13.0", "575.51.03", "12.9")
    assert problem["severity"] == "error"
    assert "580.65.06" in problem["remediation"]


def test_cuda_11_on_a_driver_below_the_11x_minimum_is_an_error():
    (problem,) = compat.check_cuda_runtime("11.8", "450.51.06", "11.0")
    assert problem["severity"] == "error"
    assert compat.check_cuda_runtime("11.8", "450.80.02", "11.0")[0]["severity"] == "warning"


def test_without_the_driver_version_the_drivers_cuda_version_decides():
    assert compat.check_cuda_runtime("12.4", None, "12.2")[0]["severity"] == "warning"
    assert compat.check_cuda_runtime("12.4", None, "11.8")[0]["severity"] == "error"


def test_cpu_build_or_unknown_driver_has_nothing_to_compare():
    assert compat.check_cuda_runtime(None, "535.104.05", "12.2") == []
    assert compat.check_cuda_runtime("12.1", None, None) == []


def test_unlisted_minor_release_uses_the_closest_earlier_driver():
    assert compat.toolkit_driver("12.7") == "560.28.03"
    assert compat.toolkit_driver("10.2") is None


@pytest.mark.parametrize(
    "capability, arch_list, supported",
    [
        ("8.0", ["sm_70", "sm_80", "sm_90"], True),
        # sm_86 cubins run on an 8.9 GPU (same major, higher minor).
        ("8.9", ["sm_75", "sm_80", "sm_86", "sm_90"], True),
        # PTX is JIT-compiled for newer GPUs.
        ("12.0", ["sm_80", "sm_90", "compute_90"], True),
        ("12.0", ["sm_80", "sm_90"], False),
        # Too old: torch dropped Kepler.
        ("3.7", ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], False),
        # Arch-specific targets only run on that exact GPU.
        ("9.0", ["sm_90a"], True),
        ("10.0", ["sm_90a"], False),
        ("10.3", ["sm_100", "sm_120"], True),
    ],
)
def test_compute_capability_against_torchs_arch_list(capability, arch_list, supported):
    assert compat.capability_supported(capability, arch_list) is supported


def test_unsupported_compute_capability_is_an_error_naming_the_gpu():
    k80 = {"index": 1, "name": "Tesla K80", "compute_capability": "3.7"}
    (problem,) = compat.check_capabilities([A100, k80], ["sm_50", "sm_80"], "2.5.1+cu121")
    assert problem["severity"] == "error"
    assert "Tesla K80" in problem["message"] and "3.7" in problem["message"]
    assert "sm_37" in problem["remediation"]


def test_driver_library_mismatch_says_reboot():
    (problem,) = compat.check_driver_error(
        gpu.GpuError(
            "version_mismatch", "Failed to initialize NVML: Driver/library version mismatch"
        )
    )
    assert problem["severity"] == "error"
    assert "Reboot" in problem["remediation"]


def test_driver_not_loaded_points_at_driver_management():
    (problem,) = compat.check_driver_error(gpu.GpuError("driver_not_loaded", "no driver"))
    assert "gekko_gpu_manage_drivers" in problem["remediation"]


def test_gpu_on_the_pci_bus_without_a_driver_is_an_error():
    (problem,) = compat.check_driver_present(1, "none")
    assert problem["severity"] == "error" and "gekko_gpu_manage_drivers" in problem["remediation"]
    assert compat.check_driver_present(1, "nvidia-smi") == []
    assert compat.check_driver_present(0, "none") == []


def test_gpu_memory_held_by_other_processes_is_a_warning():
    busy = dict(A100, memory_total_mb=40960, memory_free_mb=8000)
    (problem,) = compat.check_memory([busy], 0.8)
    assert problem["severity"] == "warning" and "8000 MiB free" in problem["message"]
    assert compat.check_memory([dict(busy, memory_free_mb=40000)], 0.8) == []
    assert compat.check_memory([busy], 0) == []


def test_cpu_only_torch_with_a_gpu_present_is_an_error():
    torch = {"probed": True, "version": "2.5.1+cpu", "cuda": None, "cuda_available": False}
    (problem,) = compat.check_torch([A100], torch, LINUX)
    assert problem["severity"] == "error" and "CPU-only build" in problem["message"]


def test_mps_unavailable_on_an_intel_mac_explains_the_requirement():
    torch = {"probed": True, "version": "2.2.2", "mps_built": True, "mps_available": False}
    intel = {"system": "Darwin", "machine": "x86_64", "mac_ver": "13.6"}
    (problem,) = compat.check_torch([], torch, intel)
    assert problem["severity"] == "warning"
    assert "12.3" in problem["message"] and "arm64" in problem["message"]


def test_backend_prefers_cuda_then_mps_then_cpu():
    torch = {"probed": True, "cuda_available": True, "devices": [A100], "mps_available": False}
    assert compat.decide([A100], torch, LINUX, []) == ("cuda", None)
    mps = {"probed": True, "cuda_available": False, "mps_available": True}
    assert compat.decide([], mps, APPLE_SILICON, []) == ("mps", None)
    backend, reason = compat.decide([], {"probed": False}, LINUX, [])
    assert backend == "cpu" and reason == "no NVIDIA GPU or Apple MPS device found"


def test_torch_seeing_gpus_without_nvidia_smi_still_gives_cuda():
    torch = {"probed": True, "cuda_available": True, "devices": [A100]}
    assert compat.decide([], torch, LINUX, [])[0] == "cuda"


def test_an_error_conflict_falls_back_to_cpu_with_its_message():
    problems = compat.check_cuda_runtime("12.4", "470.82.01", "11.4")
    backend, reason = compat.decide([A100], {"probed": True}, LINUX, problems)
    assert backend == "cpu"
    assert reason.startswith("GPU unusable: torch was built with CUDA 12.4")


def test_warnings_do_not_make_the_gpu_unusable():
    problems = compat.check_cuda_runtime("12.4", "535.104.05", "12.2")
    assert compat.decide([A100], {"probed": True}, LINUX, problems) == ("cuda", None)
