"""Recorded outputs, in the tools' real formats, for the GPU tests (no GPU on the test hosts).

nvidia-smi: `--query-gpu=...,compute_cap --format=csv,noheader,nounits` rows, its default
header table, and the messages it prints when the driver is broken. Torch probe: what
gpu_facts' TORCH_PROBE prints under a CUDA build, a CPU build and on Apple silicon.
"""

import json

SMI_ONE_A100 = (
    "0, NVIDIA A100-SXM4-40GB, GPU-4bc2f6b4-5ce0-7ac6-2d2f-a1b7e1a0c3d2, 40960, 4, 40337, 0, "
    "535.104.05, 8.0\n"
)

SMI_TWO_4090 = (
    "0, NVIDIA GeForce RTX 4090, GPU-1f5c3a4e-9b7d-4c2a-8e61-0d3b2f7a9c15, 24564, 1023, 23088, "
    "37, 550.54.14, 8.9\n"
    "1, NVIDIA GeForce RTX 4090, GPU-7e2d9b10-3a6f-4d58-b1c4-52e8f0a6d3b7, 24564, 18, 24093, "
    "[N/A], 550.54.14, 8.9\n"
)

SMI_HEADER_535 = """Tue Nov 14 10:21:33 2023
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
|-----------------------------------------+----------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |
|                                         |                      |               MIG M. |
|=========================================+======================+======================|
|   0  NVIDIA A100-SXM4-40GB          On  | 00000000:00:04.0 Off |                    0 |
| N/A   33C    P0              43W / 400W |      4MiB / 40960MiB |      0%      Default |
|                                         |                      |             Disabled |
+-----------------------------------------+----------------------+----------------------+

+---------------------------------------------------------------------------------------+
| Processes:                                                                            |
|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |
|        ID   ID                                                             Usage      |
|=======================================================================================|
|  No running processes found                                                           |
+---------------------------------------------------------------------------------------+
"""

SMI_HEADER_550 = SMI_HEADER_535.replace(
    "| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |",
    "| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |",
)

# `nvidia-smi -q` prints the same facts as "key : value" lines.
SMI_Q_470 = """
==============NVSMI LOG==============

Timestamp                                 : Mon Feb  7 09:12:44 2022
Driver Version                            : 470.82.01
CUDA Version                              : 11.4

Attached GPUs                             : 1
"""

SMI_ONE_T4_470 = (
    "0, Tesla T4, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, 15109, 0, 14960, 0, 470.82.01, 7.5\n"
)

# After a driver upgrade without a reboot (exit code 18).
SMI_MISMATCH = (
    "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.183\n"
)
# Kernel module not loaded (exit code 9).
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n\n"
)
# Drivers before 510 (exit code 2).
SMI_UNKNOWN_COMPUTE_CAP = 'Field "compute_cap" is not a valid field to query.\n\n'
SMI_NO_DEVICES = "No devices were found\n"


def torch_probe(**overrides):
    """TORCH_PROBE's JSON line for a CUDA 12.1 build on one A100, with overrides."""
    data = {
        "platform": {"system": "Linux", "machine": "x86_64", "mac_ver": ""},
        "version": "2.5.1+cu121",
        "cuda": "12.1",
        "cuda_available": True,
        "devices": [
            {
                "index": 0,
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_total_mb": 40326,
                "compute_capability": "8.0",
            }
        ],
        "arch_list": ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"],
        "mps_built": False,
        "mps_available": False,
        "warnings": [],
    }
    data.update(overrides)
    return json.dumps(data) + "\n"


# Recorded from TORCH_PROBE under torch 2.13.0+cpu on Debian bookworm x86_64.
TORCH_CPU_BUILD = (
    '{"platform": {"system": "Linux", "machine": "x86_64", "mac_ver": ""}, "version": '
    '"2.13.0+cpu", "cuda": null, "cuda_available": false, "devices": [], "arch_list": [], '
    '"mps_built": false, "mps_available": false, "warnings": []}\n'
)

TORCH_DRIVER_TOO_OLD = torch_probe(
    version="2.5.1+cu124",
    cuda="12.4",
    cuda_available=False,
    devices=[],
    arch_list=[],
    warnings=[
        "CUDA initialization: The NVIDIA driver on your system is too old (found version "
        "11040). Please update your GPU driver by downloading and installing a new version from "
        "the URL: http://www.nvidia.com/Download/index.aspx Alternatively, go to: "
        "https://pytorch.org to install a PyTorch version that has been compiled with your "
        "version of the CUDA driver."
    ],
)

TORCH_APPLE_M2 = torch_probe(
    platform={"system": "Darwin", "machine": "arm64", "mac_ver": "14.4.1"},
    version="2.5.1",
    cuda=None,
    cuda_available=False,
    devices=[],
    arch_list=[],
    mps_built=True,
    mps_available=True,
)

TORCH_NOT_INSTALLED = json.dumps(
    {
        "platform": {"system": "Linux", "machine": "x86_64", "mac_ver": ""},
        "error": "ModuleNotFoundError: No module named 'torch'",
    }
)
