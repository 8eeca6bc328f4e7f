"""The gpu_facts module end to end over recorded nvidia-smi, NVML and torch-probe outputs."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.gekko.platform.plugins.modules import gpu_facts

from . import gpu_samples as samples
from .test_gpu_detect import FakeNVML

LINUX = {"system": "Linux", "machine": "x86_64", "mac_ver": None}
PARAMS = dict(
    require="any",
    torch_python="/opt/gekko/bin/python",
    nvidia_smi="nvidia-smi",
    use_nvml=True,
    memory_fraction=0,
    timeout=60,
)


class FakeHost:
    """What the probe reads: commands on the PATH, their outputs, NVML, PCI devices."""

    def __init__(self, smi=None, header=None, torch=None, nvml=None, pci=0, host=None, hook=True):
        self.smi, self.header, self.torch_out = smi, header, torch
        self.nvml, self.pci, self.host = nvml, pci, host or LINUX
        self.params = dict(PARAMS)
        self.bins = {"nvidia-container-runtime-hook": "/usr/bin/nvidia-container-runtime-hook"}
        if not hook:
            self.bins = {}
        if smi is not None:
            self.bins["nvidia-smi"] = "/usr/bin/nvidia-smi"

    def get_bin_path(self, name):
        return self.bins.get(name)


class FakeProbe(gpu_facts.Probe):
    def run(self, argv):
        host = self.module
        if argv[1:2] == ["-c"]:
            if host.torch_out is None:
                return 1, "", f"{argv[0]}: not found"
            return 0, host.torch_out, ""
        if len(argv) == 1:
            return 0, host.header, ""
        return host.smi

    def load_nvml(self):
        return self.module.nvml

    def platform(self):
        return self.module.host

    def nvidia_pci_devices(self):
        return self.module.pci

    def container_toolkit(self):
        return self.module.get_bin_path("nvidia-container-runtime-hook")


def gather(host, memory_fraction=0):
    return gpu_facts.gather(FakeProbe(host), memory_fraction)


def test_one_gpu_with_a_matching_torch_is_cuda():
    facts = gather(
        FakeHost(
            smi=(0, samples.SMI_ONE_A100, ""),
            header=samples.SMI_HEADER_535,
            torch=samples.torch_probe(),
            pci=1,
        )
    )
    assert facts["backend"] == "cuda" and facts["fallback_reason"] is None
    assert facts["source"] == "nvidia-smi"
    assert facts["driver_version"] == "535.104.05" and facts["cuda_driver_version"] == "12.2"
    assert [d["name"] for d in facts["devices"]] == ["NVIDIA A100-SXM4-40GB"]
    assert facts["torch"]["cuda"] == "12.1" and facts["conflicts"] == []
    assert facts["container_toolkit"] == "/usr/bin/nvidia-container-runtime-hook"


def test_two_gpus_are_both_listed():
    torch = samples.torch_probe(
        version="2.5.1+cu124",
        cuda="12.4",
        devices=[
            {"index": 0, "name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
            {"index": 1, "name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
        ],
    )
    facts = gather(
        FakeHost(smi=(0, samples.SMI_TWO_4090, ""), header=samples.SMI_HEADER_550, torch=torch)
    )
    assert facts["backend"] == "cuda"
    assert [d["index"] for d in facts["devices"]] == [0, 1]
    assert facts["conflicts"] == []


def test_driver_library_mismatch_falls_back_to_cpu_with_a_reboot_remediation():
    facts = gather(FakeHost(smi=(18, samples.SMI_MISMATCH, ""), torch=samples.torch_probe(), pci=1))
    assert facts["backend"] == "cpu"
    assert "version mismatch" in facts["fallback_reason"]
    (problem,) = [c for c in facts["conflicts"] if c["check"] == "nvidia_driver"]
    assert "Reboot" in problem["remediation"]


def test_missing_nvidia_smi_on_a_host_without_nvidia_hardware_is_plain_cpu():
    facts = gather(FakeHost(torch=samples.TORCH_CPU_BUILD))
    assert facts["backend"] == "cpu" and facts["source"] == "none"
    assert facts["fallback_reason"] == "no NVIDIA GPU or Apple MPS device found"
    assert facts["conflicts"] == [] and facts["devices"] == []
    assert facts["torch"]["version"] == "2.13.0+cpu"


def test_torch_is_not_probed_by_default_where_only_the_cpu_can_serve():
    host = FakeHost(torch=samples.TORCH_CPU_BUILD)
    host.params["torch_python"] = None
    facts = gather(host)
    assert facts["backend"] == "cpu"
    assert facts["torch"]["probed"] is False
    assert "no NVIDIA GPU or Apple MPS" in facts["torch"]["error"]


def test_torch_is_probed_by_default_where_an_nvidia_card_is_on_the_bus(monkeypatch):
    monkeypatch.setattr(gpu_facts.importlib.util, "find_spec", lambda name: object())
    host = FakeHost(torch=samples.TORCH_CPU_BUILD, pci=1)
    host.params["torch_python"] = None
    facts = gather(host)
    assert facts["torch"]["version"] == "2.13.0+cpu"


def test_missing_nvidia_smi_with_an_nvidia_card_on_the_bus_asks_for_the_driver():
    facts = gather(FakeHost(torch=None, pci=2))
    assert facts["backend"] == "cpu"
    assert "2 NVIDIA GPU(s) on the PCI bus" in facts["fallback_reason"]
    assert facts["torch"]["probed"] is False


def test_nvml_is_used_when_importable():
    facts = gather(
        FakeHost(nvml=FakeNVML(), torch=samples.torch_probe(version="2.5.1+cu124", cuda="12.4"))
    )
    assert facts["source"] == "nvml" and facts["backend"] == "cuda"
    assert facts["driver_version"] == "550.54.15" and facts["cuda_driver_version"] == "12.4"
    assert len(facts["devices"]) == 2


def test_nvml_without_its_library_falls_back_to_nvidia_smi():
    facts = gather(
        FakeHost(
            nvml=FakeNVML(init_error=12),
            smi=(0, samples.SMI_ONE_A100, ""),
            header=samples.SMI_HEADER_535,
        )
    )
    assert facts["source"] == "nvidia-smi" and facts["backend"] == "cuda"


def test_driver_too_old_for_torchs_cuda_runtime_falls_back_to_cpu():
    facts = gather(
        FakeHost(
            smi=(0, samples.SMI_ONE_T4_470, ""),
            header=samples.SMI_Q_470,
            torch=samples.TORCH_DRIVER_TOO_OLD,
        )
    )
    assert facts["backend"] == "cpu"
    checks = dict((c["check"], c) for c in facts["conflicts"])
    assert checks["cuda_runtime"]["severity"] == "error"
    assert "550.54.14" in checks["cuda_runtime"]["remediation"]
    assert "too old" in checks["torch_cuda"]["message"]  # torch's own warning is kept
    assert facts["devices"][0]["name"] == "Tesla T4"  # still listed, just not used


def test_unsupported_compute_capability_falls_back_to_cpu():
    k80 = (
        "0, Tesla K80, GPU-6f2a1b3c-1111-2222-3333-444455556666, 11441, 0, 11379, 0, "
        "470.82.01, 3.7\n"
    )
    torch = samples.torch_probe(
        version="2.5.1+cu118",
        cuda="11.8",
        devices=[{"index": 0, "name": "Tesla K80", "compute_capability": "3.7"}],
    )
    facts = gather(FakeHost(smi=(0, k80, ""), header=samples.SMI_Q_470, torch=torch))
    assert facts["backend"] == "cpu"
    assert "compute capability 3.7" in facts["fallback_reason"]


def test_mps_on_apple_silicon():
    facts = gather(
        FakeHost(
            torch=samples.TORCH_APPLE_M2,
            host={"system": "Darwin", "machine": "arm64", "mac_ver": "14.4.1"},
            hook=False,
        )
    )
    assert facts["backend"] == "mps" and facts["fallback_reason"] is None
    assert facts["devices"] == [{"index": 0, "name": "Apple MPS (arm64)"}]
    assert facts["nvidia_pci_devices"] == 0 and facts["container_toolkit"] is None


def test_macos_without_torch_is_cpu_and_says_why():
    facts = gather(
        FakeHost(torch=None, host={"system": "Darwin", "machine": "arm64", "mac_ver": "14.4.1"})
    )
    assert facts["backend"] == "cpu"
    assert "torch is not available to check Apple MPS" in facts["fallback_reason"]


def run_main(monkeypatch, capsys, host, **args):
    monkeypatch.setattr(gpu_facts, "Probe", lambda module: FakeProbe(host))
    with patch_module_args(args), pytest.raises(SystemExit):
        gpu_facts.main()
    return json.loads(capsys.readouterr().out)


def test_require_gpu_fails_with_the_reason_and_every_fix(monkeypatch, capsys):
    host = FakeHost(smi=(18, samples.SMI_MISMATCH, ""), torch=samples.torch_probe(), pci=1)
    result = run_main(monkeypatch, capsys, host, require="gpu")
    assert result["failed"]
    assert result["msg"].startswith("A GPU is required but none is usable: GPU unusable")
    assert "Fix: Reboot the host" in result["msg"]
    assert result["ansible_facts"]["gekko_gpu"]["backend"] == "cpu"


def test_require_any_accepts_the_cpu_fallback(monkeypatch, capsys):
    result = run_main(monkeypatch, capsys, FakeHost(torch=samples.TORCH_CPU_BUILD))
    assert not result.get("failed") and result["changed"] is False
    assert result["ansible_facts"]["gekko_gpu"]["backend"] == "cpu"
