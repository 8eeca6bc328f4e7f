"""validate_host end to end over a faked host: psutil, platform, os-release and the probes."""

from collections import namedtuple

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _probes as probes
from ansible_collections.gekko.platform.plugins.modules import validate_host

MIB = 1024**2
GIB = 1024**3
Memory = namedtuple("Memory", "total available")
Disk = namedtuple("Disk", "total free")


class FakePsutil:
    CONN_LISTEN = "LISTEN"
    Error = Exception

    def __init__(self, cores=8, memory_mb=32768, available_mb=20000, free_gb=500):
        self.cores, self.memory_mb, self.available_mb, self.free_gb = (
            cores,
            memory_mb,
            available_mb,
            free_gb,
        )

    def cpu_count(self, logical=True):
        return self.cores

    def virtual_memory(self):
        return Memory(self.memory_mb * MIB, self.available_mb * MIB)

    def disk_usage(self, path):
        return Disk(1000 * GIB, self.free_gb * GIB)

    def net_connections(self, kind):
        return []


class FakeModule:
    """What run_checks uses of AnsibleModule: params, get_bin_path, run_command."""

    def __init__(self, **params):
        self.params = {
            name: spec.get("default") for name, spec in validate_host.ARGUMENT_SPEC.items()
        }
        self.params.update(params)
        self.commands = []

    def get_bin_path(self, name):
        return "/usr/bin/dpkg-query" if name == "dpkg-query" else None

    def run_command(self, args):
        self.commands.append(args)
        return 1, "tar\tinstalled\t1.34\n", "dpkg-query: no packages found matching nosuch\n"


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A Debian 12 x86_64 host with 8 cores, 32 GiB and 500 GiB free, engine 24.0.7."""
    fake = FakePsutil()
    monkeypatch.setattr(validate_host, "psutil", fake, raising=False)
    monkeypatch.setattr(validate_host.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(validate_host.platform, "system", lambda: "Linux")
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    monkeypatch.setattr(validate_host, "OS_RELEASE", str(os_release))
    monkeypatch.setattr(
        probes, "docker_version", lambda h, t: {"Version": "24.0.7", "ApiVersion": "1.43"}
    )
    return fake


def by_name(results):
    return {r["name"]: r for r in results}


def test_a_prod_sized_host_passes_and_reports_its_environment_as_facts(host):
    results, facts = validate_host.run_checks(
        FakeModule(min_memory_mb=16384, min_disk_free_gb=100, disk_paths=["/var/lib/docker"])
    )
    assert all(r["status"] == "ok" for r in results), results
    assert facts["os"]["distribution"] == "debian" and facts["os"]["version"] == "12"
    assert (facts["cpu_cores"], facts["architecture"]) == (8, "x86_64")
    assert (facts["memory_total_mb"], facts["memory_available_mb"]) == (32768, 20000)
    assert facts["disks"]["/var/lib/docker"] == {"total_gb": 1000.0, "free_gb": 500.0}
    assert facts["docker"] == {"reachable": True, "version": "24.0.7", "api_version": "1.43"}


def test_a_laptop_fails_the_prod_minimums_with_remediations(host):
    host.memory_mb, host.free_gb, host.cores = 8192, 40, 4
    results, dummy = validate_host.run_checks(
        FakeModule(min_memory_mb=16384, min_disk_free_gb=100, min_cpu_cores=8)
    )
    failed = {r["name"] for r in results if r["status"] == "fail"}
    assert failed == {"memory", "disk:/var/lib", "cpu_cores"}
    assert all(
        r["remediation"] and r["severity"] == "critical" for r in results if r["status"] == "fail"
    )


def test_service_limits_that_do_not_fit_fail_naming_the_biggest(host):
    host.memory_mb = 4096
    services = [
        {"name": "trading", "memory": "1g", "instances": 2},
        {"name": "users", "memory": "512m", "instances": 1},
        {"name": "postgres", "memory": "1g", "instances": 1},
    ]
    results, facts = validate_host.run_checks(FakeModule(service_memory=services))
    fit = by_name(results)["resource_fit"]
    assert facts["memory_demand_mb"] == 3584
    assert fit["status"] == "fail"
    assert fit["remediation"].index("trading 2048 MiB") < fit["remediation"].index("postgres")


def test_unreachable_engine_is_a_warning_when_the_deploy_installs_it(host, monkeypatch):
    monkeypatch.setattr(probes, "docker_version", lambda h, t: "No such file or directory")
    results, facts = validate_host.run_checks(FakeModule(docker_required="optional"))
    assert by_name(results)["docker"]["status"] == "warn"
    assert facts["docker"]["reachable"] is False


def test_missing_package_is_reported_from_dpkg(host):
    module = FakeModule(required_packages=["tar", "nosuch"])
    results, dummy = validate_host.run_checks(module)
    checks = by_name(results)
    assert checks["package:tar"]["status"] == "ok"
    assert checks["package:nosuch"]["status"] == "fail"
    assert module.commands[0][-2:] == ["tar", "nosuch"]


def test_dns_falls_back_from_a_dead_primary_to_the_fallback_server(host, monkeypatch):
    asked = []

    def fake_server(server, port, timeout):
        def resolve(name):
            asked.append((server, port, name))
            if server == "127.0.0.9":
                raise OSError("The DNS operation timed out")
            return ["10.1.2.3"]

        return resolve

    monkeypatch.setattr(probes, "DNSPYTHON_IMPORT_ERROR", None)
    monkeypatch.setattr(probes, "dns_server_resolver", fake_server)
    module = FakeModule(
        dns_names=["api.exchange.test"],
        dns_servers=["127.0.0.9:5353"],
        dns_fallback_servers=["127.0.0.1:5354"],
    )
    results, facts = validate_host.run_checks(module)
    assert asked == [
        ("127.0.0.9", 5353, "api.exchange.test"),
        ("127.0.0.1", 5354, "api.exchange.test"),
    ]
    assert by_name(results)["dns:api.exchange.test"]["status"] == "warn"
    assert facts["dns"]["api.exchange.test"] == {
        "addresses": ["10.1.2.3"],
        "answered_by": "127.0.0.1:5354",
    }


def test_without_dnspython_the_system_resolver_answers_and_a_warning_explains(host, monkeypatch):
    monkeypatch.setattr(probes, "DNSPYTHON_IMPORT_ERROR", "No module named 'dns'")
    monkeypatch.setattr(probes, "system_resolver", lambda name: ["127.0.0.1"])
    results, facts = validate_host.run_checks(
        FakeModule(dns_names=["localhost"], dns_fallback_servers=["10.0.0.2"])
    )
    checks = by_name(results)
    assert checks["dns_library"]["status"] == "warn"
    assert checks["dns:localhost"]["status"] == "ok"
    assert facts["dns"]["localhost"]["answered_by"] == "system resolver"


def test_an_endpoint_without_a_port_fails_saying_how_to_write_it(host):
    results, dummy = validate_host.run_checks(FakeModule(endpoints=["db.internal"]))
    result = by_name(results)["endpoint:db.internal"]
    assert result["status"] == "fail"
    assert "write host:port or a URL" in result["message"]


class FakeEngine:
    """docker.DockerClient as deployment_ports uses it: the running containers' labels."""

    running: list[dict] = []

    def __init__(self, base_url, timeout):
        self.api = self  # client.api.containers(): the SDK's low-level call

    def containers(self, filters):
        assert filters == {"label": "gekko.platform/component"}
        return FakeEngine.running

    def close(self):
        pass


Listener = namedtuple("Listener", "status laddr pid")
Address = namedtuple("Address", "port")


def test_a_redeploy_owns_the_ports_of_its_own_running_containers(host, monkeypatch):
    """The deployment's containers (read from the engine in the same call) hold their ports: a
    slot label for an application container, the component's port for a datastore, no
    deployment label meaning `gekko`. Another deployment's container holding a port fails."""
    FakeEngine.running = [
        {"Labels": {"gekko.platform/component": "trading", "gekko.platform/slot": "8003"}},
        {"Labels": {"gekko.platform/component": "odd", "gekko.platform/slot": "not-a-port"}},
        {"Labels": {"gekko.platform/component": "postgres", "gekko.platform/deployment": "gekko"}},
        {
            "Labels": {
                "gekko.platform/component": "gateway",
                "gekko.platform/slot": "8000",
                "gekko.platform/deployment": "staging",
            }
        },
    ]
    monkeypatch.setattr(probes, "docker", type("Docker", (), {"DockerClient": FakeEngine}))
    monkeypatch.setattr(probes, "DOCKER_IMPORT_ERROR", None)
    monkeypatch.setattr(
        host,
        "net_connections",
        lambda kind: [Listener("LISTEN", Address(p), None) for p in (8000, 8003, 5432)],
    )
    params = dict(required_ports=[8000, 8003, 5432], component_ports={"postgres": 5432})
    results, dummy = validate_host.run_checks(FakeModule(owned_by="gekko", **params))
    status = {r["name"]: r["status"] for r in results if r["name"].startswith("port")}
    assert status == {"port:8000": "fail", "port:8003": "ok", "port:5432": "ok"}

    # Without an engine (a first deploy) nothing is owned, and the check still runs.
    monkeypatch.setattr(probes, "DOCKER_IMPORT_ERROR", "no docker SDK")
    results, dummy = validate_host.run_checks(FakeModule(owned_by="gekko", **params))
    assert {r["status"] for r in results if r["name"].startswith("port")} == {"fail"}
