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
  - "Hardware: CPU cores and architecture, memory total and available, capacity and free space
    of the file system under each configured path, free TCP ports and required commands."
  - "Software: the platform (Linux, or macOS 12 or newer) and the distribution's version,
    Python, the Docker engine's version and whether it answers, PostgreSQL and Redis when their
    endpoints are given (a protocol-level probe, without logging in), and required Debian
    packages."
  - "Network: DNS resolution of the given names, by the system resolver or named servers first
    and then by fallback servers; reachability of endpoints (C(host:port) or URLs); an optional
    bandwidth probe against a URL."
  - "Resource allocation: the services' memory limits times their instances, plus a headroom,
    must fit in the host's memory."
  - Returns every check with a name, a status (V(ok), V(warn), V(fail) or V(skip)), a severity
    (V(critical), V(warning) or V(info)), a message and, unless it passed, a remediation step.
    Fails with one line per critical problem when O(fail_on_error=true).
  - Reads the host only; it never changes anything. The Docker engine is asked for its version,
    PostgreSQL gets an SSLRequest and Redis a PING, nothing more.
author:
  - Gekko platform team (@gekko-platform)
requirements:
  - psutil (Debian package python3-psutil) on the managed host
  - the Docker SDK for Python (python3-docker) on the managed host, for the Docker check
  - dnspython (python3-dnspython) on the managed host, for O(dns_servers) and
    O(dns_fallback_servers); without it only the system resolver is asked, with a warning
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
  min_memory_available_mb:
    description:
      - Memory that should be available right now, in MiB. Less is a warning, not a failure.
    type: int
    default: 512
  disk_paths:
    description:
      - Paths whose file systems must have O(min_disk_free_gb) free. A path that does not exist
        yet is judged by the file system it will be created on.
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
  owned_by:
    description:
      - A deployment (its C(gekko.platform/deployment) label; a container without one belongs to
        V(gekko)) whose running containers' ports also count as owned, read from the engine at
        O(docker_host) in the same call (not with O(docker_required=skip)); omitted, only
        O(owned_ports) count.
      - An application container holds the port in its C(gekko.platform/slot) label, a
        component named in O(component_ports) (the datastores) holds that port. No engine
        answering (a first deploy) owns none.
    type: str
  component_ports:
    description: Ports of the components that carry no slot label, by C(gekko.platform/component).
    type: dict
    default: {}
  required_commands:
    description: Commands that must be on the PATH.
    type: list
    elements: str
    default: []
  os_min_versions:
    description:
      - Supported distributions (the C(ID) of C(/etc/os-release), or V(macos)) and the lowest
        version of each. Another Linux distribution is a warning; a system other than Linux or
        macOS, or an older version, fails. macOS needs 12 unless listed otherwise.
    type: dict
    default: {debian: "11", ubuntu: "22.04", macos: "12"}
  docker_required:
    description:
      - V(required) fails when the Docker engine does not answer.
      - V(optional) only warns, for a deploy that installs and starts the engine itself.
      - V(skip) does not ask the engine.
      - An engine that answers with a version older than O(min_docker_version) fails either way.
    type: str
    choices: [required, optional, skip]
    default: optional
  docker_host:
    description: Where the engine listens, as the Docker SDK's C(base_url).
    type: str
    default: unix:///var/run/docker.sock
  min_docker_version:
    description: Lowest accepted Docker engine version.
    type: str
    default: "20.10"
  postgres_endpoint:
    description:
      - C(host:port) of a PostgreSQL server that must answer (port 5432 when left out).
        Not checked when empty.
    type: str
  redis_endpoint:
    description:
      - C(host:port) of a Redis server that must answer (port 6379 when left out).
        Not checked when empty.
    type: str
  required_packages:
    description:
      - Debian packages that must be installed (checked with C(dpkg-query)). Skipped with an
        info line on hosts without dpkg.
    type: list
    elements: str
    default: []
  dns_names:
    description: Names that must resolve.
    type: list
    elements: str
    default: []
  dns_servers:
    description:
      - DNS servers to ask first, as C(address) or C(address:port). Empty means the host's
        system resolver.
    type: list
    elements: str
    default: []
  dns_fallback_servers:
    description:
      - DNS servers asked in turn when the first resolver fails, as C(address) or
        C(address:port). A name that resolves only through a fallback is a warning.
    type: list
    elements: str
    default: []
  endpoints:
    description:
      - Endpoints that must be reachable. C(host:port) must accept a TCP connection; a URL
        (C(http://...) or C(https://...)) must answer with an HTTP status below 500.
    type: list
    elements: str
    default: []
  bandwidth_url:
    description:
      - A URL to download for the bandwidth probe (serve a file of a few MiB). No probe when
        empty.
    type: str
  min_bandwidth_mbit:
    description: Lowest accepted download rate from O(bandwidth_url), in Mbit/s.
    type: float
    default: 10
  bandwidth_max_mb:
    description: Stop the bandwidth download after this many MiB.
    type: float
    default: 10
  service_memory:
    description:
      - Memory limits of what will run on this host. Their sum times instances, plus
        O(memory_headroom_mb), must fit in the host's total memory.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The service (or container) name, used in the remediation.
        type: str
        required: true
      memory:
        description: Its memory limit as a Docker size, such as V(512m) or V(1g).
        type: str
        required: true
      instances:
        description: How many containers of it run on this host.
        type: int
        default: 1
  memory_headroom_mb:
    description: Memory kept for the OS, the engine and rollouts, in MiB.
    type: int
    default: 1024
  timeout:
    description: Seconds each network probe may take.
    type: float
    default: 5
  fail_on_error:
    description:
      - Fail the task when a critical check fails. With V(false) the report is only returned.
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
    docker_required: required
    required_packages: [ca-certificates]

- name: Check external datastores, DNS with fallback servers, an API and the bandwidth
  gekko.platform.validate_host:
    postgres_endpoint: db.internal:5432
    redis_endpoint: cache.internal:6379
    dns_names: [db.internal, api.exchange.example]
    dns_fallback_servers: [10.0.0.2, 10.0.0.3]
    endpoints: [https://api.exchange.example/health, db.internal:5432]
    bandwidth_url: https://mirror.internal/10MiB.bin
    min_bandwidth_mbit: 10

- name: Check that the services' memory limits fit
  gekko.platform.validate_host:
    service_memory:
      - {name: trading, memory: 1g, instances: 2}
      - {name: postgres, memory: 2g}
    memory_headroom_mb: 2048

- name: Only report, never fail
  gekko.platform.validate_host:
    fail_on_error: false
  register: validation
"""

RETURN = r"""
checks:
  description: Every check that ran, in order.
  returned: always
  type: list
  elements: dict
  sample:
    - name: memory
      status: fail
      severity: critical
      message: 2048 MiB of memory, 4096 MiB required
      remediation: Add memory to the host or lower gekko_validation_min_memory_mb
    - name: dns:db.internal
      status: warn
      severity: warning
      message: "db.internal -> 10.0.0.7 only through fallback 10.0.0.2 (system resolver: ...)"
      remediation: Repair the primary resolver (/etc/resolv.conf or gekko_validation_dns_servers)
summary:
  description:
    - Counts of passed, failed, warning and skipped checks, C(ok) (no critical failure), one line
      per failure in C(problems) and one per warning in C(warning_lines), each with its fix.
  returned: always
  type: dict
  sample:
    passed: 9
    failed: 0
    warnings: 1
    skipped: 0
    ok: true
    problems: []
    warning_lines: ["docker: the Docker engine does not answer: ... Fix: ..."]
ansible_facts:
  description: The host's measured environment, as C(gekko_host).
  returned: always
  type: dict
  contains:
    gekko_host:
      description:
        - C(os) (system, distribution, version, pretty_name), C(architecture), C(cpu_cores),
          C(memory_total_mb), C(memory_available_mb), C(python), C(disks) (per path
          C(total_gb), C(free_gb)), C(docker) (C(reachable), C(version), C(api_version)),
          C(dns) (per name C(addresses), C(answered_by)), C(bandwidth_mbit) and
          C(memory_demand_mb).
        - The name is not C(gekko_environment), which the inventory uses for the environment's
          name.
      type: dict
      returned: always
"""

import os
import platform
import shutil
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.formatters import human_to_bytes
from ansible_collections.gekko.platform.plugins.module_utils import _host_checks as checks
from ansible_collections.gekko.platform.plugins.module_utils import _net_checks as net
from ansible_collections.gekko.platform.plugins.module_utils import _probes as probes
from ansible_collections.gekko.platform.plugins.module_utils import _software_checks as software

PSUTIL_IMPORT_ERROR = None
try:
    import psutil
except ImportError:
    PSUTIL_IMPORT_ERROR = traceback.format_exc()

OS_RELEASE = "/etc/os-release"
DPKG_FORMAT = "${Package}\t${db:Status-Status}\t${Version}\n"


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


def _read_os_release():
    try:
        with open(OS_RELEASE) as handle:
            return software.parse_os_release(handle.read())
    except (IOError, OSError):
        return {}


def hardware(params, facts):
    results = [checks.check_python(sys.version_info, params["min_python"])]
    facts["python"] = "%d.%d.%d" % sys.version_info[:3]
    facts["cpu_cores"] = psutil.cpu_count(logical=True) or 1
    facts["architecture"] = platform.machine()
    results.extend(
        checks.check_cpu(
            facts["cpu_cores"],
            facts["architecture"],
            params["min_cpu_cores"],
            params["allowed_architectures"],
        )
    )
    memory = psutil.virtual_memory()
    facts["memory_total_mb"] = memory.total // checks.MIB
    facts["memory_available_mb"] = memory.available // checks.MIB
    results.append(checks.check_memory(memory.total, memory.available, params["min_memory_mb"]))
    results.append(
        checks.check_memory_available(memory.available, params["min_memory_available_mb"])
    )
    facts["disks"] = {}
    for path in params["disk_paths"]:
        usage = psutil.disk_usage(_existing_parent(path))
        facts["disks"][path] = {
            "total_gb": round(usage.total / float(checks.GIB), 1),
            "free_gb": round(usage.free / float(checks.GIB), 1),
        }
        results.append(checks.check_disk(path, usage.total, usage.free, params["min_disk_free_gb"]))
    listeners = _listeners(params["required_ports"]) if params["required_ports"] else {}
    for port in params["required_ports"]:
        results.append(
            checks.check_port(port, listeners.get(port), owned=port in params["owned_ports"])
        )
    for command in params["required_commands"]:
        results.append(checks.check_command(command, shutil.which(command)))
    return results


def resources(params, facts):
    if not params["service_memory"]:
        return []
    demand = checks.memory_demand(params["service_memory"], human_to_bytes)
    facts["memory_demand_mb"] = sum(size for dummy, size in demand) // checks.MIB
    total = facts["memory_total_mb"] * checks.MIB
    return [checks.check_resource_fit(demand, total, params["memory_headroom_mb"])]


def installed_packages(module):
    """{package: version} from dpkg, or None on hosts without it."""
    dpkg_query = module.get_bin_path("dpkg-query")
    if dpkg_query is None:
        return None
    wanted = module.params["required_packages"]
    # rc is 1 when some package is unknown: the missing ones are simply absent from the output.
    dummy, out, dummy = module.run_command([dpkg_query, "-W", "-f", DPKG_FORMAT] + wanted)
    return software.parse_dpkg_status(out)


def software_checks(module, facts):
    params = module.params
    facts["os"] = software.describe_os(platform.system(), _read_os_release(), platform.mac_ver()[0])
    results = [software.check_os(facts["os"], params["os_min_versions"])]

    answer = {}
    if params["docker_required"] != "skip":
        answer = probes.docker_version(params["docker_host"], params["timeout"])
    reachable = isinstance(answer, dict) and bool(answer)
    facts["docker"] = {
        "reachable": reachable,
        "version": answer.get("Version") if reachable else None,
        "api_version": answer.get("ApiVersion") if reachable else None,
    }
    results.append(
        software.check_docker(answer, params["docker_required"], params["min_docker_version"])
    )

    datastores = (
        ("postgres", params["postgres_endpoint"], 5432, probes.postgres_probe),
        ("redis", params["redis_endpoint"], 6379, probes.redis_probe),
    )
    for kind, endpoint, default_port, probe in datastores:
        if endpoint:
            host, port = net.split_host_port(endpoint, default_port)
            reply, error = probe(host, port, params["timeout"])
            results.append(software.check_datastore(kind, "%s:%d" % (host, port), reply, error))

    if params["required_packages"]:
        results.extend(
            software.check_packages(params["required_packages"], installed_packages(module))
        )
    return results


def _named_resolvers(servers, timeout):
    resolvers = []
    for server in servers:
        host, port = net.split_host_port(server, 53)
        resolvers.append((server, probes.dns_server_resolver(host, port, timeout)))
    return resolvers


def network(module, facts):
    params = module.params
    results = []
    facts["dns"] = {}
    if params["dns_names"]:
        named = params["dns_servers"] + params["dns_fallback_servers"]
        missing = bool(named) and probes.DNSPYTHON_IMPORT_ERROR is not None
        results.extend(net.check_dns_library(missing, named))
        if missing or not params["dns_servers"]:
            resolvers = [(net.SYSTEM_RESOLVER, probes.system_resolver)]
        else:
            resolvers = _named_resolvers(params["dns_servers"], params["timeout"])
        if not missing:
            resolvers += _named_resolvers(params["dns_fallback_servers"], params["timeout"])
        for name in params["dns_names"]:
            resolution = net.resolve_with_fallback(name, resolvers)
            facts["dns"][name] = {
                "addresses": resolution["addresses"],
                "answered_by": resolution["answered_by"],
            }
            results.append(net.check_dns(name, resolution))

    for target in params["endpoints"]:
        if "://" in target:
            status, dummy, dummy, error = probes.http_get(module, target, params["timeout"])
        else:
            host, port = net.split_host_port(target)
            status, error = None, "no port given: write host:port or a URL"
            if port is not None:
                dummy, error = probes.exchange(host, port, b"", params["timeout"])
        results.append(net.check_endpoint(target, status, error))

    facts["bandwidth_mbit"] = None
    if params["bandwidth_url"]:
        max_bytes = int(params["bandwidth_max_mb"] * checks.MIB)
        status, size, seconds, error = probes.http_get(
            module, params["bandwidth_url"], params["timeout"], max_bytes
        )
        if error is None and status >= 400:
            error = "HTTP %d" % status
        if error is None:
            facts["bandwidth_mbit"] = round(net.mbit_per_second(size, seconds), 1)
        results.append(
            net.check_bandwidth(
                params["bandwidth_url"], size, seconds, params["min_bandwidth_mbit"], error
            )
        )
    return results


def run_checks(module):
    facts = {}
    params = module.params
    if params["owned_by"] and params["docker_required"] != "skip":
        found = probes.deployment_ports(
            params["docker_host"], params["owned_by"], params["component_ports"], params["timeout"]
        )
        params["owned_ports"] = sorted(set(params["owned_ports"]) | found)
    results = hardware(module.params, facts)
    results.extend(resources(module.params, facts))
    results.extend(software_checks(module, facts))
    results.extend(network(module, facts))
    return results, facts


ARGUMENT_SPEC = dict(
    min_python=dict(type="str", default="3.11"),
    min_cpu_cores=dict(type="int", default=2),
    allowed_architectures=dict(type="list", elements="str", default=["x86_64", "aarch64", "arm64"]),
    min_memory_mb=dict(type="int", default=4096),
    min_memory_available_mb=dict(type="int", default=512),
    disk_paths=dict(type="list", elements="path", default=["/var/lib"]),
    min_disk_free_gb=dict(type="float", default=10),
    required_ports=dict(type="list", elements="int", default=[]),
    owned_ports=dict(type="list", elements="int", default=[]),
    owned_by=dict(type="str"),
    component_ports=dict(type="dict", default={}),
    required_commands=dict(type="list", elements="str", default=[]),
    os_min_versions=dict(type="dict", default={"debian": "11", "ubuntu": "22.04", "macos": "12"}),
    docker_required=dict(type="str", choices=["required", "optional", "skip"], default="optional"),
    docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
    min_docker_version=dict(type="str", default="20.10"),
    postgres_endpoint=dict(type="str"),
    redis_endpoint=dict(type="str"),
    required_packages=dict(type="list", elements="str", default=[]),
    dns_names=dict(type="list", elements="str", default=[]),
    dns_servers=dict(type="list", elements="str", default=[]),
    dns_fallback_servers=dict(type="list", elements="str", default=[]),
    endpoints=dict(type="list", elements="str", default=[]),
    bandwidth_url=dict(type="str"),
    min_bandwidth_mbit=dict(type="float", default=10),
    bandwidth_max_mb=dict(type="float", default=10),
    service_memory=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            memory=dict(type="str", required=True),
            instances=dict(type="int", default=1),
        ),
    ),
    memory_headroom_mb=dict(type="int", default=1024),
    timeout=dict(type="float", default=5),
    fail_on_error=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if PSUTIL_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib("psutil") + " Fix: apt-get install python3-psutil "
            "(or pip install psutil) for the host's ansible_python_interpreter.",
            exception=PSUTIL_IMPORT_ERROR,
        )

    results, facts = run_checks(module)
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
