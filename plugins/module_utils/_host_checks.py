# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure host checks for the validate_host module.

Each check takes already-collected data (psutil results, version tuples ...) and returns a
result dict, so the rules are unit-tested without touching the machine.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

PASS = "pass"
FAIL = "fail"
WARN = "warn"

GIB = 1024**3
MIB = 1024**2


def result(name, status, message, severity="info", remediation=None):
    return {
        "check": name,
        "status": status,
        "severity": severity if status != PASS else "info",
        "message": message,
        "remediation": remediation if status != PASS else None,
    }


def check_python(version_info, minimum):
    have = tuple(version_info[:2])
    want = tuple(int(p) for p in str(minimum).split(".")[:2])
    text = "%d.%d" % have
    if have >= want:
        return result("python", PASS, "Python %s (>= %s)" % (text, minimum))
    return result(
        "python",
        FAIL,
        "Python %s is older than the required %s" % (text, minimum),
        severity="critical",
        remediation="Install Python %s or newer on the host and point "
        "ansible_python_interpreter at it" % minimum,
    )


def check_cpu(cores, architecture, minimum, allowed_architectures):
    checks = []
    if cores >= minimum:
        checks.append(result("cpu_cores", PASS, "%d CPU cores (>= %d)" % (cores, minimum)))
    else:
        checks.append(
            result(
                "cpu_cores",
                FAIL,
                "%d CPU cores, %d required" % (cores, minimum),
                severity="error",
                remediation="Run on a host with at least %d cores, or lower "
                "gekko_validation_min_cpu_cores for this environment" % minimum,
            )
        )
    if architecture in allowed_architectures:
        checks.append(result("cpu_architecture", PASS, "architecture %s" % architecture))
    else:
        checks.append(
            result(
                "cpu_architecture",
                FAIL,
                "architecture %s is not one of %s"
                % (architecture, ", ".join(allowed_architectures)),
                severity="critical",
                remediation="Deploy to an x86_64 or aarch64 host",
            )
        )
    return checks


def check_memory(total_bytes, available_bytes, minimum_mb):
    total_mb = total_bytes // MIB
    if total_mb >= minimum_mb:
        return result(
            "memory",
            PASS,
            "%d MiB total, %d MiB available (>= %d MiB)"
            % (total_mb, available_bytes // MIB, minimum_mb),
        )
    return result(
        "memory",
        FAIL,
        "%d MiB of memory, %d MiB required" % (total_mb, minimum_mb),
        severity="error",
        remediation="Add memory to the host or lower gekko_validation_min_memory_mb "
        "for this environment",
    )


def check_disk(path, free_bytes, minimum_gb):
    free_gb = free_bytes / float(GIB)
    if free_gb >= minimum_gb:
        return result(
            "disk:%s" % path, PASS, "%.1f GiB free on %s (>= %s GiB)" % (free_gb, path, minimum_gb)
        )
    return result(
        "disk:%s" % path,
        FAIL,
        "%.1f GiB free on %s, %s GiB required" % (free_gb, path, minimum_gb),
        severity="error",
        remediation="Free space on %s (e.g. 'docker system prune') or grow the volume" % path,
    )


def check_port(port, listener, owned=False):
    """listener: None when the port is free, else {'pid', 'process'}.

    owned: the port belongs to one of the platform's own running containers, which a
    redeploy replaces in place.
    """
    if listener is None:
        return result("port:%d" % port, PASS, "port %d is free" % port)
    owner = "%s (pid %s)" % (
        listener.get("process") or "an unidentified process",
        listener.get("pid"),
    )
    if owned:
        return result(
            "port:%d" % port, PASS, "port %d is held by the platform's own container" % port
        )
    return result(
        "port:%d" % port,
        FAIL,
        "port %d is already in use by %s" % (port, owner),
        severity="error",
        remediation="Stop %s or choose another port for this service in the inventory" % owner,
    )


def check_command(name, path):
    if path:
        return result("command:%s" % name, PASS, "%s found at %s" % (name, path))
    return result(
        "command:%s" % name,
        FAIL,
        "required command %s is not installed" % name,
        severity="error",
        remediation="Install the package that provides %s (apt-get install %s)" % (name, name),
    )


def summarize(checks):
    failed = [c for c in checks if c["status"] == FAIL]
    return {
        "passed": len([c for c in checks if c["status"] == PASS]),
        "failed": len(failed),
        "warnings": len([c for c in checks if c["status"] == WARN]),
        "ok": not failed,
        "problems": [
            "%s: %s. Fix: %s" % (c["check"], c["message"], c["remediation"]) for c in failed
        ],
    }
