"""The platform deployed across the lab's hosts, as to inventories/prod: a datastores host, two
services hosts and a gateway host, each its own machine, reached over SSH.

The tests run in file order and share the session's deployment: the checks of the first deploy,
a second deploy that changes nothing, a rolling deploy under orders, a services host cut off, a
deploy that fails and is rolled back everywhere, and last the teardown.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import (
    ANSIBLE_BIN,
    APP_ONLY,
    CONTROLLER_DAEMON_JSON,
    HOSTS,
    INVENTORY,
    LAB,
    REPO,
    SERVICES_HOSTS,
    Traffic,
    client,
    containers_everywhere,
    controller,
    deploy,
    on_host,
    on_hosts,
    playbook,
)

CATALOGUE = yaml.safe_load((REPO / "roles/common/defaults/main.yml").read_text())["gekko_services"]
ADDRESS = {"lab-db-1": "10.77.0.10", "lab-svc-1": "10.77.0.11", "lab-svc-2": "10.77.0.12"}
ROLLED_BACK = re.compile(r"\[(?P<host>lab-[a-z0-9-]+)\]: FAILED! .*?restored in (?P<s>[0-9.]+) s")


# The monitoring and logging agents, which run beside the application on every host.
AGENT = re.compile(r"^gekko-(.+-exporter|log-relay|log-store|prometheus|alertmanager)$")


def app_containers() -> dict[str, dict[str, dict]]:
    """host -> name -> container, for the application's containers (those with a spec label,
    not the monitoring and logging agents)."""
    return {
        host: {name: c for name, c in found.items() if c["spec"] and not AGENT.match(name)}
        for host, found in containers_everywhere().items()
    }


def on_svc_1(instance: dict) -> bool:
    return "//10.77.0.11:" in instance["url"]


def wait_for_trading(check, what: str, timeout: float = 60) -> None:
    """Poll the gateway's view of the trading instances until `check` holds."""
    deadline = time.monotonic() + timeout
    while not check(client("services")["services"]["trading"]):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(1)


def test_a_trade_through_the_gateway_host_is_stored(lab):
    traded = client("smoke")
    assert traded["status"] == 201, traded
    assert traded["order"]["status"] == "filled"
    assert traded["stored"] == [traded["order"]["id"]]


def test_every_service_runs_registered_and_healthy_on_both_services_hosts(lab):
    expected = {
        service["name"]: {f"https://{ADDRESS[h]}:{service['port']}" for h in SERVICES_HOSTS}
        for service in CATALOGUE
    }

    def registered() -> dict[str, set[str]]:
        registry = client("services")["services"]
        return {
            name: {
                i["url"]
                for i in registry[name]
                if i["source"] == "redis" and i["health"] == "ok" and i["routable"]
            }
            for name in expected
        }

    # A heartbeat sent while a dependency on the other host restarted may still say "degraded".
    deadline = time.monotonic() + 30
    while (seen := registered()) != expected and time.monotonic() < deadline:
        time.sleep(2)
    assert seen == expected
    apps = app_containers()
    for host in SERVICES_HOSTS:
        assert sorted(c.split("-", 1)[1] for c in apps[host]) == sorted(
            s["name"].replace("_", "-") for s in CATALOGUE
        )
        assert {c["health"] for c in apps[host].values()} == {"healthy"}, apps[host]
    assert list(apps["lab-gw-1"]) == ["gekko-gateway"]
    assert apps["lab-db-1"] == {}
    assert apps["lab-mon-1"] == {}


def test_each_host_got_only_the_images_it_runs_shipped_from_the_controller(lab):
    def images(host: str) -> set[str]:
        listed = on_host(host, "docker image ls --format '{{ '{{' }}.Repository{{ '}}' }}'")
        return set(listed.split())

    # Every host runs the exporters and the log relay (the monitoring image), the container
    # exporter among them (the application image).
    agents = {"gekko/monitoring-base", "gekko/app"}
    assert images("lab-db-1") == {"gekko/datastore"} | agents
    assert images("lab-gw-1") == agents
    assert images("lab-mon-1") == agents
    for host in SERVICES_HOSTS:
        assert images(host) == {"gekko/signals"} | agents
    # Nothing was built on a host: no base or runtime image is there.


def test_the_controllers_own_engine_configuration_is_left_alone(lab):
    """The controller builds the images with this machine's engine; the lab's daemon options
    (no bridge, no iptables) are the lab hosts' and must not be written to it."""
    if "controller_daemon_json" not in lab:
        pytest.skip("a reused lab: its first deploy was not watched")
    after = CONTROLLER_DAEMON_JSON.read_bytes() if CONTROLLER_DAEMON_JSON.exists() else None
    assert after == lab["controller_daemon_json"]


def test_listeners_bind_their_hosts_address_and_postgres_admits_only_platform_hosts(lab):
    listening = on_host("lab-svc-1", "ss -Hltn | awk '{print $4}'").split()
    assert "10.77.0.11:8102" in listening and "0.0.0.0:8102" not in listening
    hba = on_host("lab-db-1", "cat /etc/gekko/postgres/pg_hba.conf")
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    # The services' own role, and the owner (the migrations), from those hosts only.
    assert rules == [
        ["hostssl", "all", user, f"10.77.0.{n}/32", "scram-sha-256", "clientcert=verify-ca"]
        for n in (11, 12, 13)
        for user in ("gekko_app", "gekko")
    ] + [
        # The PostgreSQL exporter on the host itself, to the platform's database only.
        ["hostssl", "gekko", "gekko", "10.77.0.10/32", "scram-sha-256", "clientcert=verify-ca"],
        # The backup agent: the owner over the Unix socket, for the OS user postgres alone.
        ["local", "all", "gekko", "peer", "map=gekko-backup"],
        ["local", "replication", "gekko", "peer", "map=gekko-backup"],
    ]
    # The right password from an address that is not a services or gateway host: refused.
    password = on_host("lab-db-1", "sed -n 's/^POSTGRES_PASSWORD=//p' /etc/gekko/postgres.env")
    probe = (
        "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        "    await asyncpg.connect(host='10.77.0.10', user='gekko', password=sys.argv[1],"
        " database='gekko', ssl=False, timeout=5)\n"
        "try:\n"
        "    asyncio.run(main()); print('admitted')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    refused = controller(str(REPO / ".venv/bin/python"), "-c", probe, password)
    assert 'no pg_hba.conf entry for host "10.77.0.1"' in refused.stdout, refused
    # Redis admits only clients with a certificate from the internal CA, which only the
    # inventory's hosts get: from the controller's address (it has the CA's certificate, but no
    # host certificate) every way in is refused before a password could be tried.
    ca_dir = str(Path.home() / ".gekko/ca/staging")
    redis = controller(
        sys.executable, str(REPO / "tests/lab/tls_probe.py"), ca_dir, "redis=10.77.0.10:6379"
    )
    tries = json.loads(redis.stdout)["redis"]
    assert all(t.startswith("refused") or t.endswith("closed") for t in tries.values()), tries


def test_traffic_between_hosts_is_tls13_only(lab):
    """From a services host, with its own certificate: PostgreSQL, Redis and a service on the
    other services host each complete TLS 1.3 and refuse TLS 1.2 and plain text; Redis also
    refuses a client without a certificate, and has no default user."""
    probe = on_host(
        "lab-svc-1",
        f"python3 {REPO}/tests/lab/tls_probe.py /etc/gekko/tls/app"
        " postgres=10.77.0.10:5432 redis=10.77.0.10:6379 http=10.77.0.12:8104",
    )
    found = json.loads(probe)
    print(json.dumps(found, indent=1))
    for kind in ("postgres", "redis", "http"):
        assert found[kind]["tls12"].startswith("refused"), (kind, found[kind])
        assert not found[kind]["tls13"].startswith("refused"), (kind, found[kind])
        assert found[kind]["tls13"].startswith("TLSv1.3: "), (kind, found[kind])
    # In plain text PostgreSQL refuses even a platform host, naming the missing encryption.
    assert "no encryption" in found["postgres"]["plain"], found["postgres"]
    assert "+PONG" not in found["redis"]["plain"] and "HTTP/" not in found["http"]["plain"]
    assert "+PONG" not in found["redis"]["no_client_cert"], found["redis"]
    assert found["redis"]["tls13"].startswith("TLSv1.3: -NOAUTH"), found["redis"]
    assert found["http"]["tls13"].startswith("TLSv1.3: HTTP/1.1 200"), found["http"]
    # A service admits only clients with a certificate from the internal CA (mTLS).
    assert "HTTP/" not in found["http"]["no_client_cert"], found["http"]

    # Private keys: on their own host only, 0600, owned by the user of the server that reads
    # them (the datastores' users are the image's); the CA's key stays on the controller.
    keys = on_hosts("gekko", "find /etc/gekko -name '*.key' -printf '%p %m %U\\n' | sort")
    server_users = on_host(
        "lab-db-1", "docker exec gekko-postgres id -u; docker exec gekko-redis id -u"
    ).split()
    # Every host's log relay and monitoring agents (exporters) run as nobody.
    agents = ["/etc/gekko/tls/log-relay/tls.key 600 65534"]
    monitoring = ["/etc/gekko/tls/monitoring/tls.key 600 65534"]
    assert keys["lab-db-1"].splitlines() == agents + monitoring + [
        f"/etc/gekko/tls/postgres/tls.key 600 {server_users[0]}",
        f"/etc/gekko/tls/redis/tls.key 600 {server_users[1]}",
    ], keys
    for host in SERVICES_HOSTS:
        assert keys[host].splitlines() == [
            "/etc/gekko/tls/app/tls.key 600 10001",
            *agents,
            *monitoring,
        ], keys
    # The gateway host also has its listener's (edge) key.
    assert keys["lab-gw-1"].splitlines() == [
        "/etc/gekko/tls/app/tls.key 600 10001",
        "/etc/gekko/tls/edge/tls.key 600 10001",
        *agents,
        *monitoring,
    ], keys
    # The monitoring host: Prometheus's and Alertmanager's (monitoring), the log store's.
    assert keys["lab-mon-1"].splitlines() == [
        *agents,
        "/etc/gekko/tls/log-store/tls.key 600 65534",
        *monitoring,
    ], keys
    ca_key = controller("stat", "-c", "%a", str(Path.home() / ".gekko/ca/staging/ca.key"))
    assert ca_key.stdout.strip() == "600", ca_key


def test_the_gateway_serves_tls13_with_hsts_and_services_refuse_the_controller(lab):
    """From the controller (a client with the CA's certificate but no host certificate): the
    gateway's listener answers over TLS 1.3 with Strict-Transport-Security and refuses TLS 1.2
    and plain text; a service port refuses it outright, so a direct call skips nothing."""
    ca_dir = str(Path.home() / ".gekko/ca/staging")
    probe = controller(
        sys.executable,
        str(REPO / "tests/lab/tls_probe.py"),
        ca_dir,
        "http-gateway=10.77.0.13:8000",
        "http-service=10.77.0.11:8104",
    )
    found = json.loads(probe.stdout)
    print(json.dumps(found, indent=1))
    gateway, service = found["http-gateway"], found["http-service"]
    assert gateway["tls13"].startswith("TLSv1.3: HTTP/1.1 "), gateway
    assert "strict-transport-security: max-age=31536000; includeSubDomains" in gateway["tls13"]
    assert gateway["tls12"].startswith("refused"), gateway
    assert "HTTP/" not in gateway["plain"], gateway
    for attempt in service.values():
        assert "HTTP/" not in attempt, service


# Every monitoring listener: the exporters on a services host and on the datastores host (the
# container exporter also relays the engine's and the Redis exporter's pages, which listen on
# loopback), Prometheus and Alertmanager.
MONITORING_LISTENERS = (
    "http-node=10.77.0.11:9100",
    "http-containers=10.77.0.11:9338",
    "http-postgres=10.77.0.10:9187",
    "http-containers-db=10.77.0.10:9338",
    "http-prometheus=10.77.0.14:9090",
    "http-alertmanager=10.77.0.14:9093",
)
# An HTTP answer with content: what no client without a certificate may get (a Go server answers
# plain text with "400 ... HTTP request to an HTTPS server", which serves nothing).
SERVED = re.compile(r"HTTP/1\.[01] [23]")


def test_monitoring_listeners_answer_only_tls13_clients_with_a_certificate_from_the_ca(lab):
    """From another host with its monitoring certificate: TLS 1.3 answered, TLS 1.2 and plain
    text refused. From the controller (the CA's certificate, no host certificate): nothing
    answers, so no one off the inventory reads the metrics or silences an alert."""
    tls_probe = f"python3 {REPO}/tests/lab/tls_probe.py"
    found = json.loads(
        on_host(
            "lab-svc-2", f"{tls_probe} /etc/gekko/tls/monitoring {' '.join(MONITORING_LISTENERS)}"
        )
    )
    print(json.dumps(found, indent=1))
    for label, tries in found.items():
        assert tries["tls13"].startswith("TLSv1.3: HTTP/1."), (label, tries)
        assert tries["tls12"].startswith("refused"), (label, tries)
        assert not SERVED.search(tries["plain"]), (label, tries)
        assert tries["no_client_cert"].startswith("refused"), (label, tries)
    # The pages the container exporter relays are not reachable from another host themselves.
    loopback_only = on_host(
        "lab-svc-2", f"{tls_probe} /etc/gekko/tls/monitoring http=10.77.0.10:9121"
    )
    assert set(json.loads(loopback_only)["http"].values()) == {"refused: ConnectionRefusedError"}
    ca_dir = str(Path.home() / ".gekko/ca/staging")
    outside = controller(
        sys.executable, str(REPO / "tests/lab/tls_probe.py"), ca_dir, *MONITORING_LISTENERS
    )
    for label, tries in json.loads(outside.stdout).items():
        assert not any(SERVED.search(t) for t in tries.values()), (label, tries)


# On the monitoring host, as root: GET a path of Prometheus's or Alertmanager's API with the
# host's monitoring certificate; prints the JSON answer on one line.
MONITORING_API = (
    'python3 -c \'import json, ssl, sys, urllib.request; d = "/etc/gekko/tls/monitoring"; '
    'c = ssl.create_default_context(cafile=d + "/ca.crt"); '
    'c.load_cert_chain(d + "/tls.crt", d + "/tls.key"); '
    "r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=(sys.argv[2].encode() "
    'if len(sys.argv) > 2 else None), headers={"Content-Type": "application/json"}), '
    'context=c, timeout=10); print(json.dumps(json.loads(r.read() or b"null")))\''
)


def monitoring_api(url: str, body: object = None) -> object:
    argument = "" if body is None else " " + shlex.quote(json.dumps(body))
    return json.loads(on_host("lab-mon-1", f"{MONITORING_API} {url}{argument}"))


def test_prometheus_on_its_own_host_scrapes_every_host_over_mutual_tls(lab):
    """The monitoring host's Prometheus scrapes each host's exporters and engine, both services
    hosts' instances, the gateway and its KPIs, the datastores' exporters, itself and
    Alertmanager: every target up, every one over https."""
    answer = monitoring_api("https://10.77.0.14:9090/api/v1/targets?state=active")
    targets = answer["data"]["activeTargets"]
    down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert down == [], down
    assert {t["scrapeUrl"].split("://")[0] for t in targets} == {"https"}
    seen = {(t["labels"]["job"], t["labels"]["host"]) for t in targets}
    for job in ("node", "containers", "docker"):
        assert {host for j, host in seen if j == job} == set(HOSTS), job
    for job, hosts in {
        "postgres": {"lab-db-1"},
        "redis": {"lab-db-1"},
        "gateway": {"lab-gw-1"},
        "kpis": {"lab-gw-1"},
        "prometheus": {"lab-mon-1"},
        "alertmanager": {"lab-mon-1"},
        "services": set(SERVICES_HOSTS),
    }.items():
        assert {host for j, host in seen if j == job} == hosts, job
    # Each service's instances on both services hosts (file service discovery).
    instances = [t for t in targets if t["labels"]["job"] == "services"]
    for service in CATALOGUE:
        hosts = {
            t["labels"]["host"] for t in instances if t["labels"]["service"] == service["name"]
        }
        assert hosts == set(SERVICES_HOSTS), service["name"]


def test_an_alert_reaches_the_alerts_service_and_is_acknowledged_across_hosts(lab):
    """Alertmanager (monitoring host) posts to the alerts service (a services host) over mutual
    TLS; acknowledging it there makes a silence in Alertmanager, over mutual TLS the other way."""
    name = f"LabProbe{time.monotonic_ns()}"
    alert = {
        "labels": {"alertname": name, "severity": "warning", "host": "lab-svc-1", "service": "lab"},
        "annotations": {
            "summary": "a probe from the lab's tests",
            "runbook_url": "https://gekko.example.com/runbooks/lab",
        },
    }
    monitoring_api("https://10.77.0.14:9093/api/v2/alerts", [alert])
    alerts = "docker exec gekko-alerts gekko alerts"
    deadline = time.monotonic() + 90  # the route's group_wait (5 s in the lab) and a notification
    while True:
        listed = json.loads(on_host("lab-svc-1", f"{alerts} list --json"))
        rows = [a for a in listed if a["alertname"] == name]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert rows, f"{name} never reached the alerts service"
    acked = on_host(
        "lab-svc-1", f"{alerts} ack {rows[0]['id']} --by lab-test --comment 'probe' --json"
    )
    assert json.loads(acked)["acknowledged_by"] == "lab-test", acked
    silences = monitoring_api("https://10.77.0.14:9093/api/v2/silences")
    assert any(
        s["status"]["state"] == "active"
        and {"name": "alertname", "value": name, "isRegex": False, "isEqual": True} in s["matchers"]
        for s in silences
    ), silences


def test_a_requests_lines_from_the_gateway_and_services_hosts_reach_the_logs_host(lab):
    """Central logs across hosts: each host's relay forwards over RELP with TLS to the store on
    the logs host, where `gekko logs` (the application image, the store read-only) follows one
    request by its correlation id from the gateway host to the services host that served it."""
    correlation_id = f"lab-{uuid.uuid4()}"
    ca_file = str(Path.home() / ".gekko/ca/staging/ca.crt")
    request = (
        "import httpx, sys; r = httpx.get('https://10.77.0.13:8000/api/v1/market-data/quotes/"
        "BTC-USD', headers={'X-Correlation-ID': sys.argv[1]}, verify=sys.argv[2], timeout=10); "
        "print(r.status_code)"
    )
    answer = controller(str(REPO / ".venv/bin/python"), "-c", request, correlation_id, ca_file)
    assert answer.stdout.strip() == "200", answer
    follow = (
        "docker run --rm --network none --read-only --group-add 4"
        " --mount type=bind,source=/var/log/gekko,target=/var/log/gekko,readonly"
        f" $(docker image ls gekko/app -q | head -1) logs --correlation-id {correlation_id}"
    )
    deadline = time.monotonic() + 30
    while True:
        found = on_host("lab-mon-1", f"grep -rl {correlation_id} /var/log/gekko || true").split()
        hosts = {path.split("/")[4] for path in found}
        if {"lab-gw-1"} < hosts or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(p.startswith("/var/log/gekko/lab-gw-1/gekko-gateway") for p in found), found
    served = [p for p in found if "/gekko-market-data" in p]
    assert served and {p.split("/")[4] for p in served} <= set(SERVICES_HOSTS), found
    followed = on_host("lab-mon-1", follow)
    assert "gekko-gateway" in followed and "gekko-market-data" in followed, followed


def test_a_host_failing_validation_stops_the_deploy_before_any_host_changes(lab, tmp_path):
    before = app_containers()
    host_vars = INVENTORY.parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "lab-svc-2.yml").write_text("gekko_validation_min_memory_mb: 100000000\n")
    try:
        run, report = deploy(tmp_path)
    finally:
        (host_vars / "lab-svc-2.yml").unlink()
    assert run.returncode != 0 and report["status"] == "failed"
    # Validation runs on every host first and any failure ends the run there: no later phase
    # started and no task changed anything anywhere.
    assert [p["phase"] for p in report["phases"]] == ["validate"], report["phases"]
    assert {h: stats["changed"] for h, stats in report["hosts"].items()} == {
        h: 0 for h in report["hosts"]
    }
    output = run.stdout + run.stderr
    assert "lab-svc-2" in output and "memory" in output.lower()

    def running(found: dict) -> dict:
        return {
            host: {name: (c["image"], c["spec"], c["started"]) for name, c in containers.items()}
            for host, containers in found.items()
        }

    assert running(app_containers()) == running(before), "no container was replaced"


def test_a_second_deploy_changes_nothing_on_any_host(lab, tmp_path):
    run, report = deploy(tmp_path)
    assert run.returncode == 0, run.stdout[-4000:]
    changed = {host: stats["changed"] for host, stats in report["hosts"].items()}
    assert changed == {host: 0 for host in [*HOSTS, "localhost"]}, changed


def catalogue_file(directory, mark: str, changed=("trading", "market_data"), **extra) -> str:
    """Extra vars that give some services (by default the order path's: trading, market data) a
    new setting, so a deploy replaces them on every services host; returns `@file` for -e."""
    services = [
        dict(s, env={"GEKKO_LAB_RELEASE": mark}) if s["name"] in changed else s for s in CATALOGUE
    ]
    path = directory / f"catalogue-{mark}.yml"
    settings = {"gekko_services": services, **extra}
    path.write_text(yaml.safe_dump(settings))
    return f"@{path}"


def test_a_rolling_deploy_across_the_services_hosts_fails_no_request(lab, tmp_path):
    before = containers_everywhere()
    with Traffic(tmp_path) as traffic:
        run, _ = deploy(tmp_path, *APP_ONLY, "-e", catalogue_file(tmp_path, "2"))
    assert run.returncode == 0, run.stdout[-4000:]
    outcome = traffic.outcome
    assert sum(outcome["outcomes"].values()) >= 100, outcome["outcomes"]
    assert outcome["attempts_failed"] == [], outcome["attempts_failed"][:10]
    assert outcome["acked"] >= 30 and outcome["lost"] == [] and outcome["unexpected"] == []
    everywhere = containers_everywhere()
    for host in SERVICES_HOSTS:
        after = everywhere[host]
        assert after.keys() == before[host].keys()
        replaced = {n for n, c in after.items() if c["started"] != before[host][n]["started"]}
        assert replaced == {"gekko-trading", "gekko-market-data"}, host
        # The application's containers (the agents beside them may have no health check).
        health = {c["health"] for n, c in after.items() if not AGENT.match(n)}
        assert health == {"healthy"}, host


def test_a_services_host_cut_off_under_load_loses_no_order(lab, tmp_path):
    switch = lab["namespaces"][0]
    port = lab["members"]["lab-svc-1"]["port"]
    with Traffic(tmp_path, retries=3) as traffic:
        subprocess.run(["ip", "-n", switch, "link", "set", port, "down"], check=True)
        try:
            # Within the cut, the gateway takes the host it cannot reach out of rotation.
            wait_for_trading(
                lambda trading: not any(i["routable"] for i in trading if on_svc_1(i)),
                "lab-svc-1 out of rotation",
            )
            during = client("smoke")
        finally:
            subprocess.run(["ip", "-n", switch, "link", "set", port, "up"], check=True)
        wait_for_trading(
            lambda trading: any(
                i["routable"] and i["source"] == "redis" for i in trading if on_svc_1(i)
            ),
            "lab-svc-1 back in rotation",
        )
    assert during["status"] == 201, during
    outcome = traffic.outcome
    assert outcome["failed"] == [], outcome["failed"][:10]
    assert outcome["acked"] >= 10 and outcome["lost"] == [] and outcome["unexpected"] == []


def releases() -> dict[str, str]:
    """host -> the id of the release each host records as current."""
    recorded = on_hosts("gekko", "cat /var/lib/gekko/releases.json")
    return {host: json.loads(out)["current"]["id"] for host, out in recorded.items()}


def every_host_back(output: str, before: dict, recorded: dict) -> tuple[dict, dict]:
    """After a failed run: every host printed its rollback time, records the release it started
    from and runs its containers (image and spec) again. Returns the times and the containers."""
    seconds = {m["host"]: float(m["s"]) for m in ROLLED_BACK.finditer(output)}
    print(f"rolled back, seconds after the failure: {seconds}")
    assert set(seconds) == set(HOSTS), output[-4000:]
    after = app_containers()
    assert releases() == recorded, "no host recorded a new release"
    for host in HOSTS:
        assert {n: (c["image"], c["spec"]) for n, c in after[host].items()} == {
            n: (c["image"], c["spec"]) for n, c in before[host].items()
        }, f"{host} runs the release it started from"
    return seconds, after


def test_a_failed_deploy_is_rolled_back_on_every_host_within_30_s(lab, tmp_path):
    before, recorded = app_containers(), releases()
    # Both services hosts replace trading, then verify fails (a smoke trade on a symbol that does
    # not exist): every host must be back on the last good release.
    broken = catalogue_file(tmp_path, "3", changed=["trading"], gekko_smoke_symbol="NOPE-USD")
    run, report = deploy(tmp_path, *APP_ONLY, "-e", broken)
    assert run.returncode != 0 and report["status"] == "failed"
    assert "The deploy failed in verify" in run.stdout + run.stderr
    # ansible-core writes a failed task's message to stderr.
    seconds, after = every_host_back(run.stdout + run.stderr, before, recorded)
    assert max(seconds.values()) < 30
    for host in HOSTS:
        assert {c["health"] for c in after[host].values()} <= {"healthy"}, host
    for host in SERVICES_HOSTS:
        # Replaced by the failed deploy, then restored: the last good container, started again.
        trading = after[host]["gekko-trading"]["started"]
        assert trading != before[host]["gekko-trading"]["started"], host
    assert client("smoke")["status"] == 201


def test_a_host_lost_mid_deploy_fails_the_run_and_every_host_ends_on_one_release(lab, tmp_path):
    """EC-NET-001: lab-svc-2 is cut off from the lab as its turn in a rolling deploy begins
    (lab-svc-1 already runs the new release). The connection is retried with back-off, then
    lab-svc-2's step fails naming it, lab-svc-1 is rolled back, and lab-svc-2, once it answers
    again, too: every host ends on the release it started from, and the run fails clearly."""
    before, recorded = app_containers(), releases()
    switch, port = lab["namespaces"][0], lab["members"]["lab-svc-2"]["port"]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(INVENTORY)]
    argv += [str(REPO / "playbooks/deploy.yml"), *APP_ONLY, "-e", catalogue_file(tmp_path, "4")]
    begun = time.monotonic()
    run = subprocess.Popen(
        [*LAB, "controller", "--", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env,
    )  # fmt: skip
    output, turns, cut_at, lost_at = [], 0, None, None
    # The link comes back once the run has given lab-svc-2 up (within the rollback's 120 s wait),
    # or after 100 s whatever happened.
    reconnect = threading.Timer(
        100, subprocess.run, (["ip", "-n", switch, "link", "set", port, "up"],), {"check": True}
    )
    watchdog = threading.Timer(900, run.kill)  # the loop below ends when the run does
    watchdog.start()
    try:
        for line in run.stdout:
            output.append(line)
            # serial: 1, one play header per services host: the second is lab-svc-2's turn.
            if line.startswith("PLAY [Activate: domain services]"):
                turns += 1
                if turns == 2:
                    subprocess.run(["ip", "-n", switch, "link", "set", port, "down"], check=True)
                    cut_at = time.monotonic()
                    reconnect.start()
            if cut_at and not lost_at and "lab-svc-2 stopped answering over SSH" in line:
                lost_at = time.monotonic()
                subprocess.run(["ip", "-n", switch, "link", "set", port, "up"], check=True)
        run.wait(timeout=900)
    finally:
        watchdog.cancel()
        reconnect.cancel()
        subprocess.run(["ip", "-n", switch, "link", "set", port, "up"], check=True)
    text = "".join(output)
    assert cut_at is not None, text[-4000:]
    print(
        f"lost-host deploy: {time.monotonic() - begun:.1f} s; the cut {cut_at - begun:.1f} s in,"
        f" lab-svc-2 given up {(lost_at or cut_at) - cut_at:.1f} s after it"
    )
    assert run.returncode != 0, text[-4000:]
    assert (
        "The deploy failed in activate on lab-svc-2: lab-svc-2 stopped answering over SSH" in text
    )
    _, after = every_host_back(text, before, recorded)
    # lab-svc-1 ran the new trading, then the old one again; lab-svc-2 never changed.
    assert (
        after["lab-svc-1"]["gekko-trading"]["started"]
        != before["lab-svc-1"]["gekko-trading"]["started"]
    )
    assert (
        after["lab-svc-2"]["gekko-trading"]["started"]
        == before["lab-svc-2"]["gekko-trading"]["started"]
    )
    # The run's lock is gone from every host, the lost one included.
    locks = on_hosts("gekko", "test -e /var/lib/gekko/deploy.lock && echo held || echo free")
    assert set(locks.values()) == {"free"}, locks
    assert client("smoke")["status"] == 201


def test_teardown_removes_the_platform_from_every_host_and_keeps_its_data(lab):
    run = playbook("teardown.yml")
    assert run.returncode == 0, run.stdout[-4000:]
    assert containers_everywhere() == {host: {} for host in HOSTS}
    volumes = on_host("lab-db-1", "docker volume ls -q").split()
    # The backups stay too: a restore needs them (gekko_purge_backups removes them).
    assert sorted(volumes) == ["gekko-backup", "gekko-postgres-data", "gekko-redis-data"]
