"""Who may call what, against the running stack: every operation in the gateway's OpenAPI
document × every role × anonymous, answered as the ACCESS tables declare; role changes by an
admin; the first admin made by `gekko migrate`; trade sharing as the user's own choice."""

from __future__ import annotations

import importlib
import secrets
import subprocess
import uuid
from pathlib import Path

import httpx
import pyotp
import pytest

from gekko.config import DOMAIN_SERVICES
from gekko.gateway.app import GATEWAY_ACCESS
from gekko.security.rbac import Permission, Role

from .conftest import DATA_KEYS_FILE, as_role, eventually, gekko_cmd, new_user
from .test_sessions import bearer, sign_in

pytestmark = pytest.mark.integration

# Anonymous calls come from an address of their own, so the per-address rate limit they share
# with every other test's sign-ins cannot turn an expected 401 into a 429.
ANONYMOUS_SOURCE = "127.0.0.77"
SAMPLE_PARAMS = {"symbol": "BTC-USD", "session_id": str(uuid.uuid4())}


def declared() -> dict[tuple[str, str], Permission]:
    table = dict(GATEWAY_ACCESS)
    for service in DOMAIN_SERVICES:
        table.update(importlib.import_module(f"gekko.services.{service}").ACCESS)
    return table


def operations(gateway: str) -> list[tuple[str, str]]:
    document = httpx.get(f"{gateway}/openapi.json").json()
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


def concrete(path: str) -> str:
    for name, value in SAMPLE_PARAMS.items():
        path = path.replace("{" + name + "}", value)
    while "{" in path:  # any other parameter is an id
        start = path.index("{")
        path = path[:start] + "1" + path[path.index("}", start) + 1 :]
    return path


def test_every_operation_answers_each_role_as_its_table_declares(stack):
    table = declared()
    served_by_services = set(table) - set(GATEWAY_ACCESS)
    # /health turns green before the gateway's first OpenAPI merge: wait for every service.
    ops = eventually(
        lambda: (found := operations(stack.gateway)) and served_by_services <= set(found) and found,
        10,
        "every service's operations in the gateway's OpenAPI document",
    )
    undeclared = [f"{m} {p}" for m, p in ops if (m, p) not in table]
    assert undeclared == [], "operations without a declared permission"
    anonymous = httpx.Client(
        transport=httpx.HTTPTransport(local_address=ANONYMOUS_SOURCE), timeout=10
    )
    wrong = []
    with anonymous, httpx.Client(timeout=10) as signed_in:
        for method, path in ops:
            permission = table[(method, path)]
            body = {} if method in ("POST", "PUT", "PATCH") else None
            # Fresh sessions for each operation: the sweep includes logout, which ends the
            # caller's session everywhere within a second.
            callers = {"anonymous": {}} | {
                role.value: as_role(role, user_id=990_000 + i) for i, role in enumerate(Role)
            }
            for who, headers in callers.items():
                client = anonymous if who == "anonymous" else signed_in
                answer = client.request(
                    method, stack.gateway + concrete(path), headers=headers, json=body
                )
                role = None if who == "anonymous" else Role(who)
                if permission.allows(role):
                    ok = answer.status_code not in (401, 403) and answer.status_code < 500
                else:
                    ok = answer.status_code == (401 if role is None else 403)
                if not ok:
                    wrong.append(f"{method} {path} as {who}: {answer.status_code}")
    assert wrong == []


def test_only_an_admin_changes_roles_and_the_users_sessions_end(stack):
    name, password = f"r{secrets.token_hex(5)}", "correct-horse"
    auth, user_id = new_user(stack.gateway, name=name, password=password)
    admin = as_role(Role.ADMIN, user_id=990_100)
    url = f"{stack.gateway}/api/v1/users/{user_id}/role"
    for caller in (auth, as_role(Role.OPERATOR, user_id=990_101)):
        assert httpx.put(url, json={"role": "admin"}, headers=caller).status_code == 403
    assert httpx.put(url, json={"role": "root"}, headers=admin).status_code == 422
    changed = httpx.put(url, json={"role": "viewer"}, headers=admin)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"id": user_id, "username": name, "role": "viewer"}
    # The old trader token stops working everywhere; a new sign-in carries the new role.
    eventually(
        lambda: httpx.get(f"{stack.gateway}/api/v1/portfolio", headers=auth).status_code == 401,
        3,
        "the trader's token to be refused",
    )
    viewer = bearer(sign_in(stack, name, password))
    me = httpx.get(f"{stack.gateway}/api/v1/users/me", headers=viewer).json()
    assert me["role"] == "viewer"
    order = {"symbol": "BTC-USD", "side": "buy", "quantity": 0.001}
    refused = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=order, headers=viewer)
    assert refused.status_code == 403
    assert httpx.get(f"{stack.gateway}/dashboard/kpis", headers=viewer).status_code == 200
    # Nobody changes their own role.
    own = as_role(Role.ADMIN, user_id=user_id)
    assert httpx.put(url, json={"role": "trader"}, headers=own).status_code == 409


def test_fills_reach_the_feed_only_for_users_who_share_them(stack):
    sharer, sharer_id = new_user(stack.gateway)
    quiet, quiet_id = new_user(stack.gateway)
    chosen = httpx.put(
        f"{stack.gateway}/api/v1/social/sharing", json={"share_trades": True}, headers=sharer
    )
    assert chosen.json()["share_trades"] is True
    assert httpx.get(f"{stack.gateway}/api/v1/social/sharing", headers=quiet).json() == {
        "share_trades": False,
        "updated_at": None,
    }
    order = {"symbol": "ETH-USD", "side": "buy", "quantity": 0.01}
    for auth in (quiet, sharer):
        placed = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=order, headers=auth)
        assert placed.status_code == 201, placed.text

    def trades() -> set[int]:
        feed = httpx.get(
            f"{stack.gateway}/api/v1/social/feed", params={"limit": 200}, headers=sharer
        ).json()
        return {i["user_id"] for i in feed["items"] if i["kind"] == "trade"}

    eventually(lambda: sharer_id in trades(), 10, "the shared fill in the feed")
    assert quiet_id not in trades()  # processed in order: the quiet fill came first


def test_migrate_makes_the_first_admin_once_and_never_promotes_a_taken_name(stack):
    name = f"adm{secrets.token_hex(4)}"
    seed = pyotp.random_base32(32)
    env = dict(
        stack.env,
        GEKKO_BOOTSTRAP_ADMIN_USERNAME=name,
        GEKKO_BOOTSTRAP_ADMIN_PASSWORD="first-admin-" + secrets.token_hex(8),
        GEKKO_BOOTSTRAP_ADMIN_TOTP_SECRET=seed,
        GEKKO_DATA_KEYS=Path(DATA_KEYS_FILE).read_text(),
    )
    runs = [
        subprocess.run(gekko_cmd("migrate"), env=env, capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]
    assert [r.stdout.strip().splitlines()[-1] for r in runs] == [
        f"gekko-migrate: admin '{name}' created with MFA",
        f"gekko-migrate: admin '{name}' already there",
    ]
    # The admin signs in with the password and a code from the seed the deploy holds.
    first = httpx.post(
        f"{stack.gateway}/api/v1/users/login",
        json={"username": name, "password": env["GEKKO_BOOTSTRAP_ADMIN_PASSWORD"]},
    ).json()
    admin = httpx.post(
        f"{stack.gateway}/api/v1/users/login/mfa",
        json={"mfa_token": first["mfa_token"], "code": pyotp.TOTP(seed).now()},
    )
    assert admin.status_code == 200, admin.text
    assert httpx.get(f"{stack.gateway}/services", headers=bearer(admin.json())).status_code == 200
    for run in runs:
        for value in (env["GEKKO_BOOTSTRAP_ADMIN_PASSWORD"], seed, env["GEKKO_DATA_KEYS"].strip()):
            assert value not in run.stdout + run.stderr

    # A name someone registered first stays theirs, as a trader: the deploy stops instead.
    taken = f"taken{secrets.token_hex(4)}"
    new_user(stack.gateway, name=taken)
    refused = subprocess.run(
        gekko_cmd("migrate"),
        env=dict(env, GEKKO_BOOTSTRAP_ADMIN_USERNAME=taken),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert f"the user name '{taken}' belongs to a trader, not an admin" in refused.stderr
    rows = stack.postgres.fetch("SELECT role FROM users.accounts WHERE username = $1", taken)
    assert [r["role"] for r in rows] == ["trader"]
    # So does an e-mail address someone registered: a clear error, not a traceback.
    clash = subprocess.run(
        gekko_cmd("migrate"),
        env=dict(
            env,
            GEKKO_BOOTSTRAP_ADMIN_USERNAME=f"new{secrets.token_hex(4)}",
            GEKKO_BOOTSTRAP_ADMIN_EMAIL=f"{taken}@example.com",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clash.returncode == 1
    assert f"the e-mail address '{taken}@example.com' belongs to another account" in clash.stderr


def test_migrate_keeps_the_monitor_a_viewer_with_the_password_it_is_given(stack):
    name = f"mon{secrets.token_hex(4)}"
    env = dict(
        stack.env,
        GEKKO_BOOTSTRAP_MONITOR_USERNAME=name,
        GEKKO_BOOTSTRAP_MONITOR_PASSWORD="monitor-" + secrets.token_hex(8),
    )

    def migrate(**extra: str) -> str:
        run = subprocess.run(
            gekko_cmd("migrate"), env=dict(env, **extra), capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip().splitlines()[-1]

    assert migrate() == f"gekko-migrate: viewer '{name}' created"
    assert migrate() == f"gekko-migrate: viewer '{name}' already there"
    rotated = "monitor-" + secrets.token_hex(8)
    assert migrate(GEKKO_BOOTSTRAP_MONITOR_PASSWORD=rotated) == (
        f"gekko-migrate: viewer '{name}' password updated"
    )
    monitor = bearer(sign_in(stack, name, rotated))
    assert httpx.get(f"{stack.gateway}/services", headers=monitor).status_code == 200
    order = {"symbol": "BTC-USD", "side": "buy", "quantity": 0.001}
    placed = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=order, headers=monitor)
    assert placed.status_code == 403


def test_the_dashboard_shell_is_public_and_its_figures_are_not(stack):
    page = httpx.get(f"{stack.gateway}/dashboard")
    assert page.status_code == 200 and '<form id="signin"' in page.text
    assert httpx.get(f"{stack.gateway}/dashboard/kpis").status_code == 401
    trader, _ = new_user(stack.gateway)
    assert httpx.get(f"{stack.gateway}/dashboard/kpis", headers=trader).status_code == 403


def test_one_user_never_reads_or_cancels_another_users_orders(stack):
    owner, _ = new_user(stack.gateway)
    other, _ = new_user(stack.gateway)
    limit = {
        "symbol": "BTC-USD",
        "side": "buy",
        "quantity": 0.001,
        "type": "limit",
        "limit_price": 1,
    }
    placed = httpx.post(f"{stack.gateway}/api/v1/trading/execute", json=limit, headers=owner)
    assert placed.status_code == 201, placed.text
    order = f"{stack.gateway}/api/v1/trading/orders/{placed.json()['id']}"
    assert httpx.get(order, headers=other).status_code == 404
    assert httpx.delete(order, headers=other).status_code == 404
    listed = httpx.get(f"{stack.gateway}/api/v1/trading/orders", headers=other).json()
    assert listed["orders"] == []
    # Still the owner's, still open.
    assert httpx.get(order, headers=owner).json()["status"] == "open"
