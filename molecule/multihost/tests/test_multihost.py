"""The three-host deployment after converge, an idempotent rerun and a failed deploy that was
rolled back (side_effect.yml): every host runs the last good release and the platform works
across the hosts (gateway -> services -> datastores), all on 127.0.0.1."""

import json
import shlex

import pytest

PYTHON = "/opt/ansible-host/bin/python"
DEPLOYMENT = "gekko-molecule"
SERVICES = {"users", "market_data", "trading", "portfolio", "social", "gamification", "signals"}


def groups(host) -> list[str]:
    return host.ansible.get_variables()["group_names"]


def run_python(host, code: str) -> dict:
    """Runs `code` with the host's Python; it prints one JSON document."""
    result = host.run(f"{PYTHON} -c {shlex.quote(code)}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def containers(host, role: str) -> list[dict]:
    return run_python(
        host,
        "import docker, json; print(json.dumps([{'name': c.name, 'status': c.status,"
        " 'health': c.attrs['State'].get('Health', {}).get('Status'),"
        " 'env': c.attrs['Config']['Env'], 'image': c.attrs['Image']}"
        " for c in docker.from_env().containers.list(all=True, filters={'label': ["
        f"'gekko.platform/deployment={DEPLOYMENT}', 'gekko.platform/set={role}']}})]))",
    )


def releases(host) -> dict:
    return json.loads(host.file("/var/lib/gekko/releases.json").content_string)


def test_every_host_records_the_running_release(host):
    state = releases(host)
    assert state["current"] is not None, "a successful deploy records a release"
    assert state["current"]["id"].startswith("r-")


@pytest.mark.parametrize("role", ["services", "gateway"])
def test_rolled_back_containers_are_the_last_good_release(host, role):
    if role not in groups(host):
        pytest.skip(f"not a {role} host")
    found = containers(host, role)
    recorded = {spec["name"] for spec in releases(host)["current"]["container_sets"][role]}
    assert {c["name"] for c in found} == recorded
    for container in found:
        assert container["status"] == "running", container["name"]
        assert container["health"] == "healthy", container["name"]
        # The failed deploy's setting is gone: the previous configuration is back.
        marked = [e for e in container["env"] if e.startswith("GEKKO_MOLECULE_MARK=")]
        assert not marked, container["name"]


PROBE_DATASTORES = """
import json, socket

def probe(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(payload)
        return conn.recv(64).decode("latin-1")

# PostgreSQL answers an SSLRequest with one byte; Redis answers PING (NOAUTH: it has a password).
print(json.dumps({
    "postgres": probe(15432, bytes.fromhex("0000000804d2162f")),
    "redis": probe(16379, b"PING\\r\\n"),
}))
"""

TRADE_THROUGH_GATEWAY = """
import json, requests, uuid

gateway = "http://127.0.0.1:18000"
name = "mh-" + uuid.uuid4().hex[:10]
user = {"username": name, "email": name + "@example.com", "password": "Molecule-" + name}
register = requests.post(gateway + "/api/v1/users/register", json=user, timeout=10)
login = requests.post(gateway + "/api/v1/users/login", timeout=10,
                      json={"username": name, "password": user["password"]})
headers = {"Authorization": "Bearer " + login.json()["access_token"],
           "Idempotency-Key": uuid.uuid4().hex}
order = requests.post(gateway + "/api/v1/trading/execute", headers=headers, timeout=10,
                      json={"symbol": "BTC-USD", "side": "buy", "quantity": 0.001,
                            "type": "market"})
services = requests.get(gateway + "/services", timeout=10).json()["services"]
print(json.dumps({"register": register.status_code, "order": order.status_code,
                  "services": sorted(services)}))
"""


def test_datastores_answer_on_their_ports(host):
    if "datastores" not in groups(host):
        pytest.skip("not a datastores host")
    answers = run_python(host, PROBE_DATASTORES)
    assert answers["postgres"] in ("S", "N")
    assert answers["redis"].startswith("-NOAUTH")


def test_a_trade_flows_through_the_gateway_host(host):
    if "gateway" not in groups(host):
        pytest.skip("not the gateway host")
    flow = run_python(host, TRADE_THROUGH_GATEWAY)
    assert flow["register"] == 201
    assert flow["order"] == 201
    assert set(flow["services"]) >= SERVICES
