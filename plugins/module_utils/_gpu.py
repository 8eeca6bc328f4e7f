# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU detection for the gpu_facts module: nvidia-smi, NVML and a torch probe.

Parsers take the tools' text or objects and return plain dicts, so every format is unit-tested
with recorded outputs on hosts that have no GPU.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

SMI_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "driver_version",
    "compute_cap",
)
SMI_QUERY = [
    "--query-gpu=" + ",".join(SMI_FIELDS),
    "--format=csv,noheader,nounits",
]
# Drivers older than 510 do not know compute_cap; the query is retried without it.
SMI_UNKNOWN_FIELD = "is not a valid field to query"

NVML_RM_VERSION_MISMATCH = 18  # NVML_ERROR_LIB_RM_VERSION_MISMATCH in nvml.h
NVML_LIBRARY_NOT_FOUND = 12
NVML_DRIVER_NOT_LOADED = 9

_CUDA_VERSION = re.compile(r"CUDA Version\s*:?\s*([0-9]+\.[0-9]+)")
_MIB = 1024 * 1024


class GpuError(Exception):
    """nvidia-smi or NVML exists but cannot talk to the driver."""

    def __init__(self, kind, detail):
        super(GpuError, self).__init__(detail)
        self.kind = kind  # version_mismatch | driver_not_loaded | library_not_found | failed
        self.detail = detail


def _number(text, kind=int):
    """nvidia-smi prints [N/A] or [Not Supported] for values a GPU does not report."""
    text = (text or "").strip()
    if not text or text.startswith("["):
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def parse_smi_csv(text, fields=SMI_FIELDS):
    """Rows of `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` as device dicts."""
    devices = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            raise ValueError("unexpected nvidia-smi line: %r" % line[:120])
        row = dict((field, values[i]) for i, field in enumerate(fields))
        devices.append(
            {
                "index": _number(row["index"]),
                "name": row["name"],
                "uuid": row["uuid"],
                "memory_total_mb": _number(row["memory.total"]),
                "memory_used_mb": _number(row["memory.used"]),
                "memory_free_mb": _number(row["memory.free"]),
                "utilization_percent": _number(row["utilization.gpu"]),
                "compute_capability": row.get("compute_cap") or None,
                "driver_version": row["driver_version"],
            }
        )
    return devices


def parse_cuda_version(text):
    """The driver's highest supported CUDA version from `nvidia-smi` or `nvidia-smi -q`."""
    match = _CUDA_VERSION.search(text or "")
    return match.group(1) if match else None


def classify_smi_failure(rc, output):
    """A GpuError for a failing nvidia-smi, from its exit code and text."""
    text = (output or "").strip()
    lowered = text.lower()
    if "version mismatch" in lowered:
        return GpuError("version_mismatch", text)
    if "couldn't communicate with the nvidia driver" in lowered or "driver not loaded" in lowered:
        return GpuError("driver_not_loaded", text)
    if "no devices were found" in lowered:
        return None  # the driver is fine, it just has no GPU to show
    return GpuError("failed", "nvidia-smi exited with %s: %s" % (rc, text or "no output"))


def read_smi(run, smi_path):
    """(devices, cuda_driver_version) from nvidia-smi; run(argv) -> (rc, stdout, stderr)."""
    fields = SMI_FIELDS
    rc, out, err = run([smi_path] + SMI_QUERY)
    if rc != 0 and SMI_UNKNOWN_FIELD in (out + err):
        fields = SMI_FIELDS[:-1]
        rc, out, err = run([smi_path, "--query-gpu=" + ",".join(fields), SMI_QUERY[1]])
    if rc != 0:
        error = classify_smi_failure(rc, out + err)
        if error is None:
            return [], None
        raise error
    devices = parse_smi_csv(out, fields)
    rc, header, _err = run([smi_path])
    return devices, parse_cuda_version(header) if rc == 0 else None


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def cuda_version_from_int(value):
    """NVML and cudaDriverGetVersion encode 12.4 as 12040."""
    if not value:
        return None
    return "%d.%d" % (value // 1000, (value % 1000) // 10)


def nvml_error(nvml, exc):
    code = getattr(exc, "value", None)
    if code == NVML_RM_VERSION_MISMATCH:
        return GpuError("version_mismatch", "NVML: %s" % exc)
    if code == NVML_LIBRARY_NOT_FOUND:
        return GpuError("library_not_found", "NVML: %s" % exc)
    if code == NVML_DRIVER_NOT_LOADED:
        return GpuError("driver_not_loaded", "NVML: %s" % exc)
    return GpuError("failed", "NVML: %s" % exc)


def read_nvml(nvml):
    """(devices, driver_version, cuda_driver_version) through pynvml (nvidia-ml-py)."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc) from exc
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version_from_int(nvml.nvmlSystemGetCudaDriverVersion())
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except nvml.NVMLError:
                utilization = None  # not supported on some boards
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            devices.append(
                {
                    "index": index,
                    "name": _text(nvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
                    "memory_total_mb": memory.total // _MIB,
                    "memory_used_mb": memory.used // _MIB,
                    "memory_free_mb": memory.free // _MIB,
                    "utilization_percent": utilization,
                    "compute_capability": "%d.%d" % (major, minor),
                    "driver_version": driver,
                }
            )
        return devices, driver, cuda
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc) from exc
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


# Runs under the interpreter that serves inference (gpu_facts' torch_python) and prints one JSON
# document; warnings such as "CUDA initialization: The NVIDIA driver on your system is too old"
# are captured, because they explain why CUDA is unavailable.
TORCH_PROBE = r"""
import json, platform, warnings
out = {"platform": {"system": platform.system(), "machine": platform.machine(),
                    "mac_ver": platform.mac_ver()[0]}}
try:
    import torch
except Exception as exc:
    out["error"] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps(out)); raise SystemExit(0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out.update(version=torch.__version__, cuda=torch.version.cuda,
               cuda_available=torch.cuda.is_available(), devices=[], arch_list=[])
    if out["cuda_available"]:
        out["arch_list"] = torch.cuda.get_arch_list()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["devices"].append({"index": i, "name": p.name,
                                   "memory_total_mb": p.total_memory // 1048576,
                                   "compute_capability": "%d.%d" % torch.cuda.get_device_capability(i)})
    mps = getattr(torch.backends, "mps", None)
    out["mps_built"] = bool(mps and mps.is_built())
    out["mps_available"] = bool(mps and mps.is_available())
out["warnings"] = [str(w.message) for w in caught]
print(json.dumps(out))
"""


def parse_torch_probe(rc, stdout, stderr):
    """The torch facts from the probe's output; `error` says why torch could not be read."""
    lines = [line for line in (stdout or "").splitlines() if line.strip().startswith("{")]
    if rc != 0 or not lines:
        return {"probed": False, "error": ((stderr or stdout or "").strip()[-500:] or "rc=%s" % rc)}
    try:
        data = json.loads(lines[-1])
    except ValueError as exc:
        return {"probed": False, "error": "unreadable probe output: %s" % exc}
    data["probed"] = "error" not in data
    data.setdefault("devices", [])
    data.setdefault("arch_list", [])
    data.setdefault("warnings", [])
    return data
