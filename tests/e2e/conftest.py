"""End-to-end tests against the stack that `make deploy` stood up on this machine.

Tests that only read run first; the modules that redeploy, tear down or load the stack run after
them, in REDEPLOY_ORDER (pytest_collection_modifyitems below makes that order true whatever
pytest selects). Each finds the stack healthy and leaves it healthy, with the order path's two
instances of each service that test_rollouts and test_chaos need.
GEKKO_E2E_PART=early|late runs the part before or from test_key_rotation on (`make test` runs the
early part beside the unit and integration tests).
"""

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import docker
import httpx
import pyotp
import pytest

from gekko.config import DOMAIN_SERVICES

REPO = Path(__file__).resolve().parents[2]
GATEWAY = os.environ.get("GEKKO_E2E_URL", "http://127.0.0.1:8000")
PROMETHEUS = os.environ.get("GEKKO_E2E_PROMETHEUS_URL", "http://127.0.0.1:9090")
SECRETS = Path(os.environ.get("GEKKO_E2E_SECRETS", Path.home() / ".gekko/secrets/local"))
SERVICES = list(DOMAIN_SERVICES)

# Modules that run playbooks or change the stack, in the order they run (after every other
# test); test_noop_deploy first, on the stack as the fresh deploy left it.
# test_chaos last: it stops datastores and crashes instances of the stack the others left.
REDEPLOY_ORDER = (
    "test_noop_deploy",
    "test_alerting",
    "test_central_logs",
    "test_runtime_settings",
    "test_backups",
    "test_archive",
    "test_drift",
    "test_key_rotation",
    "test_rollback",
    "test_catalogue_scale",
    "test_lifecycle",
    "test_rollouts",
    "test_chaos",
)


# `make test` runs the suite in two parts (GEKKO_E2E_PART): "early" beside the unit and
# integration tests, as soon as the fresh deploy is up (what reads, or waits on Prometheus and
# Alertmanager, or changes the stack without timing anything), and "late" alone, after them
# (what times a rollback or counts failed requests under load, which a busy machine would make
# flaky). `make e2e` runs both, early first.
LATE = REDEPLOY_ORDER[REDEPLOY_ORDER.index("test_key_rotation") :]
PART = os.environ.get("GEKKO_E2E_PART", "all")


def _module(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(config, items):
    if PART not in ("all", "early", "late"):
        raise pytest.UsageError(f"GEKKO_E2E_PART must be all, early or late, not {PART!r}")
    if PART != "all":
        keep = [i for i in items if (_module(i) in LATE) == (PART == "late")]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep

    def rank(item) -> int:
        module = _module(item)
        return REDEPLOY_ORDER.index(module) + 1 if module in REDEPLOY_ORDER else 0

    items.sort(key=rank)  # stable: file order within each rank


def pytest_terminal_summary(terminalreporter):
    """The chaos suite's table (issue 14), whatever pytest's output capture kept back."""
    from . import chaos  # noqa: PLC0415 - the harness imports this module

    if chaos.ROWS:
        terminalreporter.write_sep("-", "chaos suite: orders at 10/s through one fault each")
        terminalreporter.write_line(chaos.table(chaos.ROWS))


def wait_for_health(client: httpx.Client, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            response = client.get("/health")
            last = response.text
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"gateway at {GATEWAY} not healthy after {timeout}s: {last}")


@pytest.fixture(scope="session")
def gateway():
    with httpx.Client(base_url=GATEWAY, timeout=10) as client:
        try:
            client.get("/health")
        except httpx.ConnectError:
            pytest.fail(f"no gateway at {GATEWAY}: run `make deploy` first")
        wait_for_health(client)
        yield client


@pytest.fixture(scope="session")
def secret():
    def read(name: str) -> str:
        path = SECRETS / name
        assert path.exists(), f"{path} missing: was the stack deployed with `make deploy`?"
        # The password lookup stores "value" or "value salt=..." on the first line.
        return path.read_text().split()[0]

    return read


@pytest.fixture
def monitor(gateway, secret):
    """Bearer headers of the deploy's viewer account (its password is the controller's
    monitor_password secret): it reads the platform's state (/services, KPIs), like verify.
    Signed in per test: a key rotation (test_key_rotation) retires the key of older tokens."""
    login = gateway.post(
        "/api/v1/users/login",
        json={"username": "monitor", "password": secret("monitor_password")},
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


_last_totp_step = [0]


def totp_code(seed: str) -> str:
    """A code the admin's authenticator would show, never one used before: the server accepts
    each time step once, and one step ahead of its clock, so a second sign-in in the same 30 s
    uses the next step's code (waiting if that one was used too)."""
    totp = pyotp.TOTP(seed)
    while True:
        now = time.time()
        step = max(totp.timecode(now), _last_totp_step[0] + 1)
        if step <= totp.timecode(now) + 1:
            _last_totp_step[0] = step
            return totp.generate_otp(step)
        time.sleep(1)


@pytest.fixture
def admin(gateway, secret):
    """Bearer headers of the first admin, which the deploy created with the controller's
    admin_password and admin_totp_secret: the password step, then the TOTP step. It may change
    roles (with the second factor fresh)."""
    first = gateway.post(
        "/api/v1/users/login", json={"username": "admin", "password": secret("admin_password")}
    )
    assert first.status_code == 200 and first.json().get("mfa_required"), first.text
    mfa_token = first.json()["mfa_token"]
    code = totp_code(secret("admin_totp_secret"))
    second = gateway.post("/api/v1/users/login/mfa", json={"mfa_token": mfa_token, "code": code})
    if second.status_code == 401 and "invalid-mfa-code" in second.text:
        # Another process (an earlier pytest run) used this step's code: take the next one.
        _last_totp_step[0] = max(
            _last_totp_step[0], pyotp.TOTP(secret("admin_totp_secret")).timecode(time.time()) + 1
        )
        code = totp_code(secret("admin_totp_secret"))
        second = gateway.post(
            "/api/v1/users/login/mfa", json={"mfa_token": mfa_token, "code": code}
        )
    assert second.status_code == 200, second.text
    return {"Authorization": f"Bearer {second.json()['access_token']}"}


@pytest.fixture
def trader(gateway):
    """A freshly registered user with a bearer token."""
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    created = gateway.post(
        "/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    assert created.status_code == 201, created.text
    login = gateway.post("/api/v1/users/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    return {
        "id": created.json()["id"],
        "username": name,
        "password": password,
        "headers": {"Authorization": f"Bearer {token}"},
    }


OPERATOR = "e2e-tests"


def audit_log(gateway, admin, event: str, limit: int = 1) -> list[dict]:
    """The newest rows of the audit log for one event (an admin's call)."""
    answer = gateway.get(
        "/api/v1/users/audit", params={"event": event, "limit": limit}, headers=admin
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


# The output of every playbook the e2e tests run, one file per playbook (emptied per session).
PLAYBOOK_LOGS = REPO / ".build" / "e2e-playbook-logs"
shutil.rmtree(PLAYBOOK_LOGS, ignore_errors=True)


# The redeploys of the rollback and rollout tests change the application alone, so they leave
# the engine, base images, central logs, datastores and monitoring as they stand (deploy.yml's
# tags), as an operator would. The fresh deploy and test_lifecycle's deploys run every part.
APP_ONLY = ("--skip-tags", "engine,base_images,logs,datastores,monitoring")


RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


def recap(output: str) -> dict:
    """The PLAY RECAP of a playbook's output: host -> ok, changed and failed counts."""
    return {
        m[0]: {"ok": int(m[1]), "changed": int(m[2]), "failed": int(m[4])}
        for m in RECAP.findall(output)
    }


def ansible_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess:
    """Run one of the collection's playbooks on the local inventory, as `make deploy` does."""
    # GEKKO_OPERATOR: who ran it, as the audit log records it.
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        GEKKO_OPERATOR=OPERATOR,
    )
    run = subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-playbook"),
            f"playbooks/{playbook}",
            "-i",
            "inventories/local",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # Kept for test_secret_hygiene, which greps every playbook's output for secrets.
    PLAYBOOK_LOGS.mkdir(parents=True, exist_ok=True)
    with (PLAYBOOK_LOGS / f"{Path(playbook).name}.log").open("a") as log:
        log.write(f"$ ansible-playbook {playbook} {' '.join(args)}\n{run.stdout}\n{run.stderr}\n")
    return run


def owner_sql(query: str) -> str:
    """One query as the database's owner, over PostgreSQL's Unix socket (as the backup agent
    signs in): the rows, `|`-separated."""
    postgres = docker.from_env().containers.get("gekko-postgres")
    argv = ["psql", "-XAtq", "--host=/var/lib/gekko/postgres/run", "--username=gekko"]
    found = postgres.exec_run([*argv, "--dbname=gekko", "--command", query])
    assert found.exit_code == 0, found.output
    return found.output.decode().strip()


def prometheus_targets(job: str | None = None) -> list[dict]:
    """The deployed Prometheus's active scrape targets (of one job)."""
    answer = httpx.get(f"{PROMETHEUS}/api/v1/targets", params={"state": "active"}, timeout=10)
    answer.raise_for_status()
    targets = answer.json()["data"]["activeTargets"]
    return [t for t in targets if job is None or t["labels"]["job"] == job]


def wait_until(check, what: str, timeout: float = 15.0, interval: float = 0.3):
    """Poll `check` until it returns something truthy (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (httpx.HTTPError, KeyError, IndexError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def register_users(client: httpx.Client, count: int, prefix: str) -> list[dict]:
    """Register and log in `count` fresh users: their bearer headers, and the ids of the orders
    acknowledged to them (filled in by rollout traffic)."""
    users = []
    for _ in range(count):
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        password = "pw-" + name
        created = client.post(
            "/api/v1/users/register",
            json={"username": name, "email": f"{name}@example.com", "password": password},
        )
        assert created.status_code == 201, created.text
        login = client.post("/api/v1/users/login", json={"username": name, "password": password})
        assert login.status_code == 200, login.text
        tokens = login.json()
        users.append(
            {
                "headers": {"Authorization": f"Bearer {tokens['access_token']}"},
                "refresh_token": tokens["refresh_token"],
                "acked": [],
            }
        )
    return users
