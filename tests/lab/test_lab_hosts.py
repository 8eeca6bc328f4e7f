"""The lab's hosts are separate machines as far as a deploy can tell: reached over SSH only, each
with its own name, address, directories and Docker engine; the lab reaches nothing outside and
nothing outside reaches it."""

import json
import subprocess

import docker
import pytest

from .conftest import on_host

HOSTS = ["lab-db-1", "lab-svc-1", "lab-svc-2", "lab-gw-1", "lab-mon-1"]


def test_each_host_has_its_own_name_address_and_engine(lab):
    seen = {}
    for host in HOSTS:
        out = on_host(
            host,
            "hostname; ip -4 -o addr show dev eth0 | awk '{print $4}'; "
            "docker info --format '{{ '{{' }}.ID{{ '}}' }} {{ '{{' }}.Name{{ '}}' }}'",
        )
        name, address, engine = out.splitlines()[-3:]
        seen[host] = (name, address, engine)
        assert name == host
        assert address == lab["members"][host]["address"] + "/24"
        assert engine.split()[1] == host, "the engine answering is the host's own"
    engines = {engine.split()[0] for _name, _address, engine in seen.values()}
    assert len(engines) == len(HOSTS), f"one engine per host: {seen}"
    assert docker.from_env().info()["ID"] not in engines, "not the machine's engine"


def test_hosts_keep_their_own_configuration_and_state(lab):
    on_host("lab-svc-1", "echo svc-1 > /etc/gekko/lab-marker && echo x > /var/lib/gekko/m")
    assert on_host("lab-svc-2", "ls /etc/gekko /var/lib/gekko | grep -c marker || true") == "0"
    assert on_host("lab-svc-1", "cat /etc/gekko/lab-marker") == "svc-1"
    with pytest.raises(FileNotFoundError):
        open("/etc/gekko/lab-marker")  # noqa: SIM115 - the machine's own /etc/gekko


def test_the_login_user_needs_become_for_root(lab):
    assert on_host("lab-gw-1", "id -un", become=False) == "gekko-lab"
    assert on_host("lab-gw-1", "id -un") == "root"


def test_the_lab_routes_nothing_out_and_its_hosts_loopback_is_their_own(lab):
    for host in HOSTS:
        routes = on_host(host, "ip -4 route show")
        assert routes.splitlines() == [
            f"10.77.0.0/24 dev eth0 proto kernel scope link src {lab['members'][host]['address']}"
        ], "no default route: nothing leaves the lab"
    # And a lab host's loopback is its own: the machine's gateway and database are not there.
    for port in (8000, 5432):
        probe = f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 1)'"
        assert on_host("lab-db-1", probe + " && echo open || echo closed") == "closed"


def test_addresses_exist_only_inside_the_labs_namespaces(lab):
    """This machine's own namespace has no interface on the lab's subnet (and no test sends it
    a packet from here: it would leave by the default route)."""
    own = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    addresses = {a["local"] for i in json.loads(own.stdout) for a in i.get("addr_info", [])}
    assert not {a for a in addresses if a.startswith("10.77.0.")}
