# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compatibility rules for the gpu_facts module and the backend it settles on.

Pure functions over the facts _gpu collects, so each rule is unit-tested without a GPU.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Linux x86_64 driver shipped with each CUDA toolkit release (its GA version): a driver at least
# this new supports every feature of that release. NVIDIA CUDA Toolkit Release Notes, table
# "CUDA Toolkit and Corresponding Driver Versions".
TOOLKIT_DRIVER = {
    (11, 0): "450.51.05",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
# Minor version compatibility (CUDA 11 and later): anything built with CUDA major.x runs, with a
# limited feature set (no PTX JIT of newer code), on a driver at least this new. NVIDIA "CUDA
# Compatibility" guide, table "CUDA Toolkit 11.x, 12.x, and 13.x Driver Version Ranges".
MINOR_COMPAT_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

DRIVER_DOWNLOAD = "https://www.nvidia.com/Download/index.aspx"

_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")


def version_tuple(text):
    parts = []
    for part in str(text or "").split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts)


def conflict(check, severity, message, remediation):
    """severity: error (the GPU cannot be used, the backend falls back) or warning."""
    return {"check": check, "severity": severity, "message": message, "remediation": remediation}


def toolkit_driver(cuda):
    """The GA driver of a CUDA release, or of the closest earlier listed release."""
    wanted = version_tuple(cuda)[:2]
    known = [v for v in TOOLKIT_DRIVER if v[0] == wanted[0] and v <= wanted]
    return TOOLKIT_DRIVER[max(known)] if known else None


def check_cuda_runtime(torch_cuda, driver_version, driver_cuda):
    """The CUDA runtime torch was built with against what the installed driver supports.

    driver_cuda is the highest CUDA version the driver reports (nvidia-smi header / NVML).
    """
    runtime = version_tuple(torch_cuda)[:2]
    if not runtime:
        return []
    supported = version_tuple(driver_cuda)[:2]
    if supported and runtime <= supported:
        return []
    driver = version_tuple(driver_version)
    if not driver and not supported:
        return []  # nothing to compare against; other checks report the missing driver
    full = toolkit_driver(torch_cuda)
    upgrade = "Upgrade the NVIDIA driver to %s or newer (%s), or install a torch build for " % (
        full or "a release supporting CUDA %s" % torch_cuda,
        DRIVER_DOWNLOAD,
    ) + "CUDA %s or older" % (driver_cuda or "the driver's version")
    minimum = MINOR_COMPAT_DRIVER.get(runtime[0])
    if driver:
        usable = minimum is not None and driver >= version_tuple(minimum)
    else:
        usable = bool(supported) and supported[0] == runtime[0] and minimum is not None
    where = "driver %s (CUDA %s)" % (driver_version or "unknown", driver_cuda or "unknown")
    if usable:
        return [
            conflict(
                "cuda_runtime",
                "warning",
                "torch was built with CUDA %s, newer than %s; it runs through CUDA minor version "
                "compatibility, without PTX JIT and features of the newer release"
                % (torch_cuda, where),
                upgrade,
            )
        ]
    return [
        conflict(
            "cuda_runtime",
            "error",
            "torch was built with CUDA %s, which %s cannot run (CUDA %d.x needs driver %s or "
            "newer)" % (torch_cuda, where, runtime[0], minimum or "of that release"),
            upgrade,
        )
    ]


def _arch(entry):
    match = _ARCH.match(entry)
    if not match:
        return None
    kind, major, minor, suffix = match.groups()
    return kind, (int(major), int(minor)), suffix


def capability_supported(capability, arch_list):
    """Whether torch's kernels run on a GPU of this compute capability.

    Cubins (sm_XY) run on the same major with an equal or higher minor; PTX (compute_XY) is
    JIT-compiled for any newer GPU; arch-specific targets (sm_90a) run only on that exact GPU.
    """
    wanted = version_tuple(capability)[:2]
    for entry in arch_list or []:
        parsed = _arch(entry)
        if not parsed or len(wanted) < 2:
            continue
        kind, built, suffix = parsed
        if suffix == "a" and built != wanted:
            continue
        if kind == "compute" and built <= wanted:
            return True
        if kind == "sm" and built[0] == wanted[0] and built[1] <= wanted[1]:
            return True
    return False


def check_capabilities(devices, arch_list, torch_version):
    if not arch_list:
        return []
    problems = []
    for device in devices:
        capability = device.get("compute_capability")
        if capability and not capability_supported(capability, arch_list):
            problems.append(
                conflict(
                    "compute_capability",
                    "error",
                    "GPU %s (%s) has compute capability %s, which torch %s was not built for "
                    "(%s)"
                    % (
                        device.get("index"),
                        device.get("name"),
                        capability,
                        torch_version,
                        " ".join(arch_list),
                    ),
                    "Install a torch build whose arch list includes sm_%s (see "
                    "https://pytorch.org/get-started/previous-versions/), or use a supported GPU"
                    % capability.replace(".", ""),
                )
            )
    return problems


def check_driver_error(error):
    """A conflict for nvidia-smi / NVML failing to talk to the driver."""
    if error is None:
        return []
    if error.kind == "version_mismatch":
        return [
            conflict(
                "nvidia_driver",
                "error",
                "the NVIDIA kernel module and user-space libraries differ (driver/library "
                "version mismatch): %s" % error.detail,
                "Reboot the host (or unload and reload the nvidia kernel modules) so the kernel "
                "module matches the installed driver libraries",
            )
        ]
    if error.kind == "driver_not_loaded":
        return [
            conflict(
                "nvidia_driver",
                "error",
                "the NVIDIA driver is not loaded: %s" % error.detail,
                "Install the NVIDIA driver (gekko_gpu_manage_drivers: true) and reboot; with "
                "Secure Boot, enrol the module signing key",
            )
        ]
    return [
        conflict(
            "nvidia_driver",
            "error",
            error.detail,
            "Run nvidia-smi on the host and fix the error it reports",
        )
    ]


def check_memory(devices, memory_fraction):
    """Warn when other processes hold so much GPU memory that the fraction cannot be allocated."""
    if not memory_fraction:
        return []
    problems = []
    for device in devices:
        total, free = device.get("memory_total_mb"), device.get("memory_free_mb")
        if total and free is not None and free < total * memory_fraction:
            problems.append(
                conflict(
                    "gpu_memory",
                    "warning",
                    "GPU %s has %d MiB free of %d MiB, less than the %.0f%% the inference "
                    "service will reserve"
                    % (device.get("index"), free, total, memory_fraction * 100),
                    "Stop other processes using the GPU (nvidia-smi lists them) or lower "
                    "gekko_gpu_memory_fraction",
                )
            )
    return problems


def _mps_ready(platform_facts):
    version = version_tuple(platform_facts.get("mac_ver"))
    return version >= (12, 3) and platform_facts.get("machine") == "arm64"


def check_torch(devices, torch, platform_facts):
    """Conflicts between what the driver shows and what torch can use."""
    if not torch.get("probed"):
        return []
    problems = []
    if devices and not torch.get("cuda_available"):
        if not torch.get("cuda"):
            message = "torch %s is a CPU-only build, but %d NVIDIA GPU(s) are present" % (
                torch.get("version"),
                len(devices),
            )
            remediation = "Install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
        else:
            message = "torch %s (CUDA %s) cannot initialise CUDA%s" % (
                torch.get("version"),
                torch.get("cuda"),
                ": " + "; ".join(torch["warnings"]) if torch.get("warnings") else "",
            )
            remediation = "Fix the driver problem torch reports, then run the facts again"
        problems.append(conflict("torch_cuda", "error", message, remediation))
    if platform_facts.get("system") == "Darwin" and not torch.get("mps_available"):
        if not _mps_ready(platform_facts):
            reason = (
                "MPS needs macOS 12.3 or newer on Apple silicon (arm64); this is macOS %s on %s"
                % (
                    platform_facts.get("mac_ver") or "unknown",
                    platform_facts.get("machine"),
                )
            )
            remediation = "Run inference on an Apple silicon Mac with macOS 12.3 or newer"
        else:
            reason = "torch %s reports MPS as unavailable (built: %s)" % (
                torch.get("version"),
                torch.get("mps_built"),
            )
            remediation = (
                "Install a torch build with MPS support (pip install torch on arm64 macOS)"
            )
        problems.append(conflict("mps", "warning", reason, remediation))
    return problems


def check_driver_present(nvidia_pci_devices, source):
    """NVIDIA hardware on the PCI bus that no driver answers for."""
    if not nvidia_pci_devices or source != "none":
        return []
    return [
        conflict(
            "nvidia_driver",
            "error",
            "%d NVIDIA GPU(s) on the PCI bus but no NVIDIA driver (neither nvidia-smi nor NVML "
            "is available)" % nvidia_pci_devices,
            "Install the NVIDIA driver (set gekko_gpu_manage_drivers: true, or apt-get install "
            "nvidia-driver) and reboot",
        )
    ]


def decide(devices, torch, platform_facts, conflicts):
    """(backend, fallback_reason): cuda, mps or cpu, and why not a GPU when cpu."""
    errors = [c for c in conflicts if c["severity"] == "error"]
    if errors:
        return "cpu", "GPU unusable: " + "; ".join(c["message"] for c in errors)
    if devices:
        return "cuda", None
    if torch.get("probed") and torch.get("cuda_available") and torch.get("devices"):
        return "cuda", None  # no nvidia-smi/NVML here (e.g. a container), but torch sees GPUs
    if torch.get("mps_available"):
        return "mps", None
    if platform_facts.get("system") == "Darwin":
        if not torch.get("probed"):
            return "cpu", "no NVIDIA GPU, and torch is not available to check Apple MPS"
        return "cpu", "no NVIDIA GPU, and Apple MPS is not available"
    return "cpu", "no NVIDIA GPU or Apple MPS device found"
