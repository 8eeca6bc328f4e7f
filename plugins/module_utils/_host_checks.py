# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure hardware and resource checks for the validate_host module, and the report format.

Each check takes already-collected data (psutil results, version tuples ...) and returns a
result dict, so the rules are unit-tested without touching the machine.

A result has a name, a status and a severity:
- ok: the requirement is met (severity info);
- warn: a problem that does not block the deploy (severity warning), with a remediation;
- fail: a problem that blocks the deploy (severity critical), with a remediation;
- skip: the check could not or need not run here (severity info), with how to enable it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

OK = "ok"
FAIL = "fail"
WARN = "warn"
SKIP = "skip"

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"

_SEVERITY_OF = {OK: INFO, SKIP: INFO, WARN: WARNING, FAIL: CRITICAL}

GIB = 1024**3
MIB = 1024**2


def result(name, status, message, remediation=None):
    """One report line; the severity follows from the status."""
    return {
        "name": name,
        "status": status,
        "severity": _SEVERITY_OF[status],
        "message": message,
        "remediation": remediation if status != OK else None,
    }


def ok(name, message):
    return result(name, OK, message)


def fail(name, message, remediation):
    return result(name, FAIL, message, remediation)


def warn(name, message, remediation):
    return result(name, WARN, message, remediation)


def skip(name, message, remediation=None):
    return result(name, SKIP, message, remediation)


def version_tuple(text):
    """'20.10.24+dfsg1' -> (20, 10, 24); '22.04' -> (22, 4); stops at the first non-number."""
    parts = []
    for piece in str(text).replace("-", ".").replace("+", ".").split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def check_python(version_info, minimum):
    have = tuple(version_info[:2])
    want = version_tuple(minimum)[:2]
    text = "%d.%d" % have
    if have >= want:
        return ok("python", "Python %s (>= %s)" % (text, minimum))
    return fail(
        "python",
        "Python %s is older than the required %s" % (text, minimum),
        "Install Python %s or newer on the host and point ansible_python_interpreter at it"
        % minimum,
    )


def check_cpu(cores, architecture, minimum, allowed_architectures):
    if cores >= minimum:
        cores_result = ok("cpu_cores", "%d CPU cores (>= %d)" % (cores, minimum))
    else:
        cores_result = fail(
            "cpu_cores",
            "%d CPU cores, %d required" % (cores, minimum),
            "Run on a host with at least %d cores, or lower gekko_validation_min_cpu_cores "
            "for this environment" % minimum,
        )
    if architecture in allowed_architectures:
        arch_result = ok("cpu_architecture", "architecture %s" % architecture)
    else:
        arch_result = fail(
            "cpu_architecture",
            "architecture %s is not one of %s" % (architecture, ", ".join(allowed_architectures)),
            "Deploy to an x86_64 or aarch64 host",
        )
    return [cores_result, arch_result]


def check_memory(total_bytes, available_bytes, minimum_mb):
    total_mb = total_bytes // MIB
    if total_mb >= minimum_mb:
        return ok(
            "memory",
            "%d MiB total, %d MiB available (>= %d MiB)"
            % (total_mb, available_bytes // MIB, minimum_mb),
        )
    return fail(
        "memory",
        "%d MiB of memory, %d MiB required" % (total_mb, minimum_mb),
        "Add memory to the host or lower gekko_validation_min_memory_mb for this environment",
    )


def check_memory_available(available_bytes, minimum_mb):
    """Memory free right now: low availability slows the deploy but does not block it."""
    available_mb = available_bytes // MIB
    if available_mb >= minimum_mb:
        return ok("memory_available", "%d MiB available (>= %d MiB)" % (available_mb, minimum_mb))
    return warn(
        "memory_available",
        "only %d MiB of memory available, %d MiB wanted" % (available_mb, minimum_mb),
        "Stop memory-hungry processes on the host (see 'ps aux --sort=-rss | head') before "
        "deploying, or lower gekko_validation_min_memory_available_mb",
    )


def check_disk(path, total_bytes, free_bytes, minimum_gb):
    free_gb = free_bytes / float(GIB)
    capacity = "%.1f of %.1f GiB free on %s" % (free_gb, total_bytes / float(GIB), path)
    if free_gb >= minimum_gb:
        return ok("disk:%s" % path, "%s (>= %s GiB)" % (capacity, minimum_gb))
    return fail(
        "disk:%s" % path,
        "%s, %s GiB required" % (capacity, minimum_gb),
        "Free space on %s (e.g. 'docker system prune') or grow the volume" % path,
    )


def check_port(port, listener, owned=False):
    """listener: None when the port is free, else {'pid', 'process'}.

    owned: the port belongs to one of the platform's own running containers, which a
    redeploy replaces in place.
    """
    name = "port:%d" % port
    if listener is None:
        return ok(name, "port %d is free" % port)
    if owned:
        return ok(name, "port %d is held by the platform's own container" % port)
    owner = "%s (pid %s)" % (
        listener.get("process") or "an unidentified process",
        listener.get("pid"),
    )
    return fail(
        name,
        "port %d is already in use by %s" % (port, owner),
        "Stop %s or choose another port for this service in the inventory" % owner,
    )


def check_command(name, path):
    if path:
        return ok("command:%s" % name, "%s found at %s" % (name, path))
    return fail(
        "command:%s" % name,
        "required command %s is not installed" % name,
        "Install the package that provides %s (apt-get install %s)" % (name, name),
    )


def memory_demand(services, to_bytes):
    """Per consumer: bytes of memory limit times instances, biggest first.

    services: [{'name', 'memory' (a Docker size such as 512m), 'instances'}];
    to_bytes: the size parser (Ansible's human_to_bytes).
    """
    demand = [
        (s["name"], to_bytes(str(s["memory"])) * int(s.get("instances") or 1)) for s in services
    ]
    return sorted(demand, key=lambda item: (-item[1], item[0]))


def check_resource_fit(demand, total_bytes, headroom_mb):
    """The services' memory limits plus a headroom for the OS must fit in the host's memory."""
    needed_mb = sum(size for dummy, size in demand) // MIB
    total_mb = total_bytes // MIB
    if needed_mb + headroom_mb <= total_mb:
        return ok(
            "resource_fit",
            "services need %d MiB + %d MiB headroom of %d MiB" % (needed_mb, headroom_mb, total_mb),
        )
    biggest = ", ".join("%s %d MiB" % (name, size // MIB) for name, size in demand[:3])
    return fail(
        "resource_fit",
        "services need %d MiB + %d MiB headroom, the host has %d MiB"
        % (needed_mb, headroom_mb, total_mb),
        "Lower the memory limits or instances of the biggest consumers (%s) in the inventory "
        "(gekko_services[].memory, gekko_container_memory, gekko_datastore_memory), move "
        "services to another host, or add %d MiB of memory"
        % (biggest, needed_mb + headroom_mb - total_mb),
    )


def summarize(checks):
    def count(status):
        return len([c for c in checks if c["status"] == status])

    failed = [c for c in checks if c["status"] == FAIL]
    return {
        "passed": count(OK),
        "failed": len(failed),
        "warnings": count(WARN),
        "skipped": count(SKIP),
        "ok": not failed,
        "problems": [
            "%s: %s. Fix: %s" % (c["name"], c["message"], c["remediation"]) for c in failed
        ],
        "warning_lines": [
            "%s: %s. Fix: %s" % (c["name"], c["message"], c["remediation"])
            for c in checks
            if c["status"] == WARN
        ],
    }
