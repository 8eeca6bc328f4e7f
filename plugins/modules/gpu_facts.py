#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Find the GPU a host can run inference on, and why not when it cannot
version_added: 0.1.0
description:
  - Detects NVIDIA GPUs through NVML (the C(pynvml) module of nvidia-ml-py) when it is importable,
    otherwise through C(nvidia-smi), with name, UUID, memory, utilization, compute capability,
    the driver version and the highest CUDA version the driver supports.
  - Probes torch under O(torch_python) for its version, the CUDA runtime it was built with,
    C(torch.cuda.is_available()), its devices, compute capabilities and arch list, and Apple MPS
    (C(torch.backends.mps), macOS 12.3 or newer on Apple silicon).
  - Checks that the driver can run torch's CUDA runtime (NVIDIA's minimum driver per CUDA
    release, including minor version compatibility), that each GPU's compute capability is in
    torch's arch list, and that nvidia-smi or NVML can talk to the driver. Each problem is
    reported with a severity and a remediation step.
  - Settles on a backend, C(cuda), C(mps) or C(cpu). A problem of severity C(error) makes the
    GPU unusable and the backend falls back to C(cpu), with the reason in C(fallback_reason).
  - Reads the host only; it never changes anything.
author:
  - Gekko platform team (@gekko-platform)
requirements:
  - nvidia-ml-py (optional; without it nvidia-smi is used)
attributes:
  check_mode:
    support: full
    description: The module only reads the host, so check mode gathers every fact.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  require:
    description:
      - V(gpu) fails the task when no usable GPU is found, with the reason and the remediation
        of every problem. V(any) accepts the CPU fallback.
    type: str
    default: any
    choices: [any, gpu]
  torch_python:
    description:
      - Python interpreter that runs inference, used to probe torch.
      - When unset, the module's own interpreter is used if it can import torch and the host
        has an NVIDIA GPU (or an NVIDIA card on the bus, or a driver error) or is a Mac;
        otherwise the probe is skipped and C(torch.probed) is false.
    type: path
  nvidia_smi:
    description: Name or path of nvidia-smi.
    type: str
    default: nvidia-smi
  use_nvml:
    description: Read NVIDIA GPUs through NVML when C(pynvml) is importable.
    type: bool
    default: true
  memory_fraction:
    description:
      - Share of each GPU's memory the inference service will reserve; a warning is reported
        when other processes leave less than that free. V(0) skips the check.
    type: float
    default: 0
  timeout:
    description: Seconds each probe command (nvidia-smi, the torch probe) may run.
    type: int
    default: 60
"""

EXAMPLES = r"""
- name: Read the GPU facts, accepting a CPU fallback
  gekko.platform.gpu_facts:
    torch_python: /opt/gekko/venv/bin/python

- name: Fail when this inference host has no usable GPU
  gekko.platform.gpu_facts:
    require: gpu
    memory_fraction: 0.8

- name: Show the backend
  ansible.builtin.debug:
    msg: "{{ ansible_facts.gekko_gpu.backend }} {{ ansible_facts.gekko_gpu.fallback_reason or '' }}"
"""

RETURN = r"""
ansible_facts:
  description: The GPU facts, as C(gekko_gpu).
  returned: always
  type: dict
  contains:
    gekko_gpu:
      description:
        - C(backend) (cuda, mps or cpu), C(devices) (every GPU found, also when the backend
          fell back to cpu, with index, name, uuid, memory_total_mb, memory_used_mb,
          memory_free_mb, utilization_percent, compute_capability),
          C(driver_version), C(cuda_driver_version) (highest CUDA the driver supports),
          C(source) (nvml, nvidia-smi, torch or none), C(nvidia_pci_devices),
          C(container_toolkit) (path of nvidia-container-runtime-hook, needed for GPUs in
          Docker containers, or null), C(torch) (probed, version, cuda, cuda_available, devices,
          arch_list, mps_built, mps_available, warnings, error), C(platform) (system, machine,
          mac_ver), C(conflicts) and C(fallback_reason) (null unless the backend is cpu).
      type: dict
      returned: always
      sample:
        backend: cuda
        devices:
          - index: 0
            name: NVIDIA A100-SXM4-40GB
            uuid: GPU-4bc2f6b4-5ce0-7ac6-2d2f-a1b7e1a0c3d2
            memory_total_mb: 40960
            memory_used_mb: 4
            memory_free_mb: 40502
            utilization_percent: 0
            compute_capability: "8.0"
        driver_version: 535.104.05
        cuda_driver_version: "12.2"
        conflicts: []
        fallback_reason: null
conflicts:
  description: Every problem found, with check, severity (error or warning), message and
    remediation. Errors made the GPU unusable.
  returned: always
  type: list
  elements: dict
  sample:
    - check: cuda_runtime
      severity: error
      message: torch was built with CUDA 12.4, which driver 470.82.01 (CUDA 11.4) cannot run
      remediation: Upgrade the NVIDIA driver to 550.54.14 or newer
"""

import glob
import importlib.util
import os
import platform
import subprocess
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gekko.platform.plugins.module_utils import _gpu as gpu
from ansible_collections.gekko.platform.plugins.module_utils import _gpu_compat as compat

NVIDIA_PCI_VENDOR = "0x10de"
PCI_DISPLAY_CLASS = "0x03"  # VGA (0300) and 3D (0302) controllers


class Probe(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params

    def run(self, argv):
        """(rc, stdout, stderr); a missing binary is rc 127 and a hang is cut at the timeout."""
        try:
            # An argument list, no shell: the paths come from the task's own options.
            done = subprocess.run(  # noqa: S603
                argv, capture_output=True, text=True, timeout=self.params["timeout"], check=False
            )
        except FileNotFoundError:
            return 127, "", "%s: not found" % argv[0]
        except subprocess.TimeoutExpired:
            return 124, "", "%s timed out after %ss" % (argv[0], self.params["timeout"])
        return done.returncode, done.stdout, done.stderr

    def nvidia(self):
        """(devices, driver, cuda, source, error) from NVML, else nvidia-smi."""
        nvml = self.load_nvml() if self.params["use_nvml"] else None
        if nvml is not None:
            try:
                devices, driver, cuda = gpu.read_nvml(nvml)
                return devices, driver, cuda, "nvml", None
            except gpu.GpuError as exc:
                if exc.kind != "library_not_found":
                    return [], None, None, "nvml", exc
        smi = self.module.get_bin_path(self.params["nvidia_smi"])
        if not smi:
            return [], None, None, "none", None
        try:
            devices, cuda = gpu.read_smi(self.run, smi)
        except gpu.GpuError as exc:
            return [], None, None, "nvidia-smi", exc
        driver = devices[0]["driver_version"] if devices else None
        return devices, driver, cuda, "nvidia-smi", None

    @staticmethod
    def load_nvml():
        try:
            import pynvml
        except ImportError:
            return None
        return pynvml

    def torch(self, gpu_possible=True):
        python = self.params["torch_python"]
        if not python:
            if not gpu_possible:
                # Importing torch takes seconds on every deploy, and tells nothing on a host
                # where inference can only run on the CPU.
                return {
                    "probed": False,
                    "error": "not probed: no NVIDIA GPU or Apple MPS on this host "
                    "(set torch_python to probe it anyway)",
                }
            if importlib.util.find_spec("torch") is None:
                return {"probed": False, "error": "torch is not importable by %s" % sys.executable}
            python = sys.executable
        rc, out, err = self.run([python, "-c", gpu.TORCH_PROBE])
        return gpu.parse_torch_probe(rc, out, err)

    @staticmethod
    def platform():
        return {
            "system": platform.system(),
            "machine": platform.machine(),
            "mac_ver": platform.mac_ver()[0] or None,
        }

    def container_toolkit(self):
        # Docker's nvidia device driver (device_requests) calls this hook of the NVIDIA
        # Container Toolkit; without it a container asking for a GPU fails to start.
        return self.module.get_bin_path("nvidia-container-runtime-hook")

    @staticmethod
    def nvidia_pci_devices():
        count = 0
        for path in glob.glob("/sys/bus/pci/devices/*"):
            try:
                with open(os.path.join(path, "vendor")) as vendor:
                    with open(os.path.join(path, "class")) as klass:
                        if vendor.read().strip() == NVIDIA_PCI_VENDOR and klass.read().startswith(
                            PCI_DISPLAY_CLASS
                        ):
                            count += 1
            except (IOError, OSError):
                continue
        return count


def gather(probe, memory_fraction):
    """The gekko_gpu facts (pure apart from the probe's reads)."""
    devices, driver, cuda, source, error = probe.nvidia()
    host = probe.platform()
    pci = probe.nvidia_pci_devices() if host.get("system") == "Linux" else 0
    torch = probe.torch(bool(devices or pci or error) or host.get("system") == "Darwin")
    conflicts = compat.check_driver_error(error)
    conflicts += compat.check_driver_present(pci, source)
    conflicts += compat.check_torch(devices, torch, host)
    if torch.get("cuda_available"):
        conflicts += compat.check_cuda_runtime(torch.get("cuda"), driver, cuda)
        conflicts += compat.check_capabilities(
            devices or torch["devices"], torch["arch_list"], torch.get("version")
        )
    elif torch.get("cuda") and (devices or cuda):
        conflicts += compat.check_cuda_runtime(torch.get("cuda"), driver, cuda)
    conflicts += compat.check_memory(devices, memory_fraction)
    if not devices and torch.get("cuda_available"):
        devices, source = torch["devices"], "torch"
    backend, reason = compat.decide(devices, torch, host, conflicts)
    if backend == "mps":
        devices = [{"index": 0, "name": "Apple MPS (%s)" % host.get("machine")}]
    return {
        "backend": backend,
        "devices": devices,
        "driver_version": driver,
        "cuda_driver_version": cuda,
        "source": source,
        "nvidia_pci_devices": pci,
        "container_toolkit": probe.container_toolkit(),
        "torch": torch,
        "platform": host,
        "conflicts": conflicts,
        "fallback_reason": reason,
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            require=dict(type="str", default="any", choices=["any", "gpu"]),
            torch_python=dict(type="path"),
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            use_nvml=dict(type="bool", default=True),
            memory_fraction=dict(type="float", default=0),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    facts = gather(Probe(module), module.params["memory_fraction"])
    output = dict(changed=False, conflicts=facts["conflicts"], ansible_facts={"gekko_gpu": facts})
    if module.params["require"] == "gpu" and facts["backend"] == "cpu":
        fixes = ["%s. Fix: %s" % (c["message"], c["remediation"]) for c in facts["conflicts"]]
        module.fail_json(
            msg="A GPU is required but none is usable: %s%s"
            % (facts["fallback_reason"], "".join("\n- " + line for line in fixes)),
            **output,
        )
    module.exit_json(**output)


if __name__ == "__main__":
    main()
