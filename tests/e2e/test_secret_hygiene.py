"""Nothing secret leaves where it belongs: the deployment's passwords, the admin's TOTP seed, the
data keys and the token signing keys appear in no container's log, no image, no audit row, no
playbook output and no API answer an operator reads."""

import json
import subprocess

import docker
import pytest

from .conftest import PLAYBOOK_LOGS, REPO, SECRETS, audit_log

# `make deploy-runner`'s artifacts, one folder per run (make test deploys that way).
RUNNER_ARTIFACTS = REPO / ".build" / "runner" / "artifacts"


def secret_values() -> dict[str, str]:
    values = {}
    for name in ("postgres_password", "postgres_app_password", "redis_password", "admin_password",
                 "monitor_password", "admin_totp_secret", "smoke_password"):  # fmt: skip
        path = SECRETS / name
        if path.exists():
            values[name] = path.read_text().split()[0]
    for path in sorted((SECRETS / "data-keys").glob("*.key")):
        values[f"data key {path.name}"] = path.read_text().split()[0]
    for path in sorted((SECRETS / "token-signing-keys").glob("*.pem")):
        # The base64 body of the private key, which is what a leak would show.
        body = "".join(path.read_text().splitlines()[1:-1])
        values[f"signing key {path.name}"] = body
    assert len(values) >= 8, values.keys()
    return values


def leaks(text: str, values: dict[str, str]) -> list[str]:
    return sorted(name for name, value in values.items() if value and value in text)


@pytest.fixture(scope="module")
def values():
    return secret_values()


def test_no_secret_in_any_container_log(values):
    engine = docker.from_env()
    containers = engine.containers.list(all=True, filters={"label": "gekko.platform/deployment"})
    assert containers
    found = {}
    for container in containers:
        text = container.logs(tail=20_000).decode("utf-8", "replace")
        if hit := leaks(text, values):
            found[container.name] = hit
    assert found == {}


def test_no_secret_in_any_image(values):
    engine = docker.from_env()
    images = [i for i in engine.images.list() if any(t.startswith("gekko/") for t in i.tags)]
    assert images
    for image in images:
        history = json.dumps(image.history())
        assert leaks(json.dumps(image.attrs) + history, values) == [], image.tags
    # And no file in the application image holds one (the env files are mounted, not built in).
    app = next(i for i in images if any(t.startswith("gekko/app") for t in i.tags))
    patterns = [value for value in values.values() if len(value) >= 16]
    grep = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "grep",
         app.tags[0], "-rlF", *sum((["-e", p] for p in patterns), []), "/opt", "/etc"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert grep.returncode == 1, f"found in {grep.stdout.strip()} ({grep.stderr.strip()[:200]})"


def test_no_secret_in_the_audit_log_or_the_ops_answers(gateway, admin, monitor, values):
    events = []
    for event in ("login-success", "deploy-succeeded", "mfa-totp", "secrets-rotated"):
        events += audit_log(gateway, admin, event, limit=50)
    assert events
    assert leaks(json.dumps(events), values) == []
    for path in ("/services", "/config", "/dashboard/kpis"):
        answer = gateway.get(path, headers=monitor)
        assert answer.status_code == 200, path
        assert leaks(answer.text, values) == [], path


def test_no_secret_in_what_the_playbooks_printed_or_recorded(values):
    """Every playbook output of this run: `make test`'s deploy through ansible-runner (its stdout
    and its job events, which hold each task's arguments and results unless `no_log` hides
    them) and each playbook the e2e tests ran before this one (deploys, rollbacks, rotations,
    scaling, runtime settings). A task that prints or returns a secret without `no_log` fails
    here."""
    sources = sorted(PLAYBOOK_LOGS.glob("*.log"))
    runs = sorted(RUNNER_ARTIFACTS.glob("*/stdout"), key=lambda p: p.stat().st_mtime)
    if runs:  # the latest run: older ones are of older code
        sources += [runs[-1], *sorted((runs[-1].parent / "job_events").glob("*.json"))]
    if not sources:
        pytest.skip("no playbook output: run it with the e2e suite after make deploy-runner")
    found = {}
    for path in sources:
        if hit := leaks(path.read_text(errors="replace"), values):
            found[str(path.relative_to(REPO))] = hit
    assert found == {}
    print(f"{len(sources)} playbook outputs searched for {len(values)} secrets")


def test_the_database_owners_password_stays_where_postgresql_runs(values):
    """The application containers sign in to PostgreSQL as the services' role, which is no
    superuser; the owner's password is only in PostgreSQL's own container and its exporter's,
    on the datastores host (a one-off migrations container uses it and is removed)."""
    engine = docker.from_env()
    containers = engine.containers.list(filters={"label": "gekko.platform/deployment"})
    holders = sorted(
        container.name
        for container in containers
        if "postgres_password" in leaks(json.dumps(container.attrs["Config"]["Env"]), values)
    )
    assert holders == ["gekko-postgres", "gekko-postgres-exporter"]
    gateway = next(c for c in containers if c.labels.get("gekko.platform/component") == "gateway")
    url = next(e for e in gateway.attrs["Config"]["Env"] if e.startswith("GEKKO_DATABASE_URL="))
    assert url.startswith("GEKKO_DATABASE_URL=postgresql://gekko_app:")
