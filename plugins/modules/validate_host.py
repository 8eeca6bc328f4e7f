#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: validate_host
short_description: Check that a host can run the Gekko platform before anything changes
version_added: 0.1.0
description:
  - Checks Python version, CPU cores and architecture, memory, free disk space per path,
    free TCP ports and required commands on the target host.
  - Returns every check with a status, a severity and a remediation step, and fails with one
    line per problem when any check fails and O(fail_on_error=true).
  - Reads the host only; it never changes anything.
author:
  - Gekko platform team (@gekko-platform)
requirements:
  - psutil (Debian package python3-psutil) on the managed host
attributes:
  check_mode:
    support: full
    description: The module only reads the host, so check mode runs every check.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
options:
  min_python:
    description: Lowest accepted Python version on the host, as C(MAJOR.MINOR).
    type: str
    default: "3.11"
  min_cpu_cores:
    description: Lowest accepted number of logical CPU cores.
    type: int
    default: 2
  allowed_architectures:
    description: CPU architectures the platform images are built for.
    type: list
    elements: str
    default: [x86_64, aarch64, arm64]
  min_memory_mb:
    description: Lowest accepted total memory in MiB.
    type: int
    default: 4096
  disk_paths:
    description: Paths whose file systems must have O(min_disk_free_gb) free.
    type: list
    elements: path
    default: [/var/lib]
  min_disk_free_gb:
    description: Free space required on each of O(disk_paths), in GiB.
    type: float
    default: 10
  required_ports:
    description:
      - TCP ports the platform will listen on. Each must be free or listed in O(owned_ports).
    type: list
    elements: int
    default: []
  owned_ports:
    description:
      - Ports held by the platform's own running containers; a redeploy replaces them in place,
        so they count as available.
    type: list
    elements: int
    default: []
  required_commands:
    description: Commands that must be on the PATH.
    type: list
    elements: str
    default: []
  fail_on_error:
    description: Fail the task when a check fails. With V(false) the report is only returned.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Validate the host with production minimums
  gekko.platform.validate_host:
    min_memory_mb: 16384
    min_disk_free_gb: 100
    disk_paths: [/var/lib/docker]
    required_ports: [8000, 5432, 6379]

- name: Only report, never fail
  gekko.platform.validate_host:
    fail_on_error: false
  register: validation
"""

RETURN = r"""
checks:
  description: Every check that ran.
  returned: always
  type: list
  elements: dict
  sample:
    - check: memory
      status: fail
      severity: error
      message: 2048 MiB of memory, 4096 MiB required
      remediation: Add memory to the host or lower gekko_validation_min_memory_mb
summary:
  description: Counts of passed, failed and warning checks, and one line per problem.
  returned: always
  type: dict
  sample: {passed: 9, failed: 0, warnings: 0, ok: true, problems: []}
ansible_facts:
  description: The host's measured resources, as C(gekko_host).
  returned: always
  type: dict
  contains:
    gekko_host:
      description: cpu_cores, architecture, memory_total_mb, memory_available_mb, python, disks.
      type: dict
      returned: always
"""

import os
import platform
import shutil
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.gekko.platform.plugins.module_utils import _host_checks as checks

PSUTIL_IMPORT_ERROR = None
try:
    import psutil
except ImportError:
    PSUTIL_IMPORT_ERROR = traceback.format_exc()


def _listeners(ports):
    wanted = set(ports)
    found = {}
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or conn.laddr.port not in wanted:
            continue
        name = None
        if conn.pid:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                name = None
        found[conn.laddr.port] = {"pid": conn.pid, "process": name}
    return found


def _existing_parent(path):
    # A path the deploy has not created yet is judged by the file system it will live on.
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "/"


def run_checks(params):
    results = [checks.check_python(sys.version_info, params["min_python"])]
    results.extend(
        checks.check_cpu(
            psutil.cpu_count(logical=True) or 1,
            platform.machine(),
            params["min_cpu_cores"],
            params["allowed_architectures"],
        )
    )
    memory = psutil.virtual_memory()
    results.append(checks.check_memory(memory.total, memory.available, params["min_memory_mb"]))
    disks = {}
    for path in params["disk_paths"]:
        free = psutil.disk_usage(_existing_parent(path)).free
        disks[path] = {"free_gb": round(free / float(checks.GIB), 1)}
        results.append(checks.check_disk(path, free, params["min_disk_free_gb"]))
    listeners = _listeners(params["required_ports"]) if params["required_ports"] else {}
    for port in params["required_ports"]:
        results.append(
            checks.check_port(port, listeners.get(port), owned=port in params["owned_ports"])
        )
    for command in params["required_commands"]:
        results.append(checks.check_command(command, shutil.which(command)))
    facts = {
        "cpu_cores": psutil.cpu_count(logical=True),
        "architecture": platform.machine(),
        "memory_total_mb": memory.total // checks.MIB,
        "memory_available_mb": memory.available // checks.MIB,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "disks": disks,
    }
    return results, facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            min_python=dict(type="str", default="3.11"),
            min_cpu_cores=dict(type="int", default=2),
            allowed_architectures=dict(
                type="list", elements="str", default=["x86_64", "aarch64", "arm64"]
            ),
            min_memory_mb=dict(type="int", default=4096),
            disk_paths=dict(type="list", elements="path", default=["/var/lib"]),
            min_disk_free_gb=dict(type="float", default=10),
            required_ports=dict(type="list", elements="int", default=[]),
            owned_ports=dict(type="list", elements="int", default=[]),
            required_commands=dict(type="list", elements="str", default=[]),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if PSUTIL_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib("psutil") + " Fix: apt-get install python3-psutil "
            "(or pip install psutil) for the host's ansible_python_interpreter.",
            exception=PSUTIL_IMPORT_ERROR,
        )

    results, facts = run_checks(module.params)
    summary = checks.summarize(results)
    output = dict(
        changed=False, checks=results, summary=summary, ansible_facts={"gekko_host": facts}
    )
    if not summary["ok"] and module.params["fail_on_error"]:
        module.fail_json(
            msg="Host validation failed with %d problem(s):\n- %s"
            % (summary["failed"], "\n- ".join(summary["problems"])),
            **output,
        )
    module.exit_json(**output)


if __name__ == "__main__":
    main()
