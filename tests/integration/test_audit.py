"""The audit log against the running stack: security events and refused calls become rows tied
to the request's correlation id, an admin reads them with filters, the database refuses to
change or remove a row, and `gekko audit verify` finds a row altered behind its back."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess

import asyncpg
import httpx
import pytest

from gekko.security import audit as audit_module
from gekko.security.audit import chain_hash, entry_from_row
from gekko.security.rbac import Role

from .conftest import as_role, eventually, gekko_cmd, new_user

pytestmark = pytest.mark.integration

ADMIN = as_role(Role.ADMIN, user_id=990_400)


def audit(stack, **filters) -> list[dict]:
    answer = httpx.get(f"{stack.gateway}/api/v1/users/audit", params=filters, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def verify(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        gekko_cmd("audit", "verify", *args), env=stack.env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_sign_ins_and_refusals_are_audited_with_their_correlation_ids(stack):
    name = f"a{secrets.token_hex(5)}"
    auth, user_id = new_user(stack.gateway, name=name, password="correct-horse")
    wrong = httpx.post(
        f"{stack.gateway}/api/v1/users/login", json={"username": name, "password": "nope-nope"}
    )
    assert wrong.status_code == 401
    correlation = wrong.headers["x-correlation-id"]
    failure = eventually(
        lambda: audit(stack, event="login-failure", correlation_id=correlation),
        5,
        "the failed login in the audit log",
    )[0]
    assert failure["component"] == "users" and failure["source_address"] == "127.0.0.1"

    # The sign-in new_user made, and a refused call: a trader asking to change a role.
    successes = eventually(lambda: audit(stack, event="login-success", user_id=user_id), 5, "x")
    assert successes[0]["actor_user_id"] == user_id
    refused = httpx.put(
        f"{stack.gateway}/api/v1/users/{user_id}/role", json={"role": "admin"}, headers=auth
    )
    assert refused.status_code == 403
    denied = eventually(
        lambda: audit(
            stack, event="access-denied", correlation_id=refused.headers["x-correlation-id"]
        ),
        5,
        "the refused call in the audit log",
    )[0]
    assert denied["actor_user_id"] == user_id
    assert denied["details"] == {
        "status": "403",
        "reason": "forbidden",
        "method": "PUT",
        "path": f"/api/v1/users/{user_id}/role",
    }
    # Everything about this user, newest first, in pages.
    mine = audit(stack, user_id=user_id, limit=2)
    assert [e["event"] for e in mine] == ["access-denied", "login-failure"]
    assert mine[0]["seq"] > mine[1]["seq"]


def test_the_gateway_audits_what_it_refuses_itself(stack):
    """A token refused at the edge never reaches a service, and the gateway's own routes check
    permissions themselves: both are the gateway's rows."""
    forged = httpx.get(
        f"{stack.gateway}/api/v1/portfolio", headers={"Authorization": "Bearer not.a.token"}
    )
    assert forged.status_code == 401
    edge = eventually(
        lambda: audit(
            stack, event="access-denied", correlation_id=forged.headers["x-correlation-id"]
        ),
        5,
        "the refused token in the audit log",
    )[0]
    assert edge["component"] == "gateway" and edge["source_address"] == "127.0.0.1"
    assert edge["details"]["status"] == "401" and edge["details"]["path"] == "/api/v1/portfolio"
    assert "not.a.token" not in str(edge)  # the token itself is never stored

    trader = as_role(Role.TRADER, user_id=990_401)
    refused = httpx.get(f"{stack.gateway}/services", headers=trader)
    assert refused.status_code == 403
    own = eventually(
        lambda: audit(
            stack, event="access-denied", correlation_id=refused.headers["x-correlation-id"]
        ),
        5,
        "the gateway's own refusal in the audit log",
    )[0]
    assert own["component"] == "gateway" and own["actor_user_id"] == 990_401
    assert own["details"] == {
        "status": "403",
        "reason": "forbidden",
        "method": "GET",
        "path": "/services",
    }


def test_a_refused_call_with_a_nul_in_its_path_is_audited_and_the_log_goes_on(stack):
    """Found by the API fuzz test: the path (with its NUL) went into the row's details, which
    jsonb cannot hold, and the service retried that batch for ever: one anonymous request
    stopped the service's audit log. The NUL is stored as U+FFFD now."""
    poisoned = httpx.get(f"{stack.gateway}/api/v1/trading/orders/%00")
    after = httpx.get(f"{stack.gateway}/api/v1/trading/orders/1")
    for answer, path in (
        (poisoned, "/api/v1/trading/orders/\ufffd"),
        (after, "/api/v1/trading/orders/1"),
    ):
        assert answer.status_code == 401
        correlation = answer.headers["x-correlation-id"]
        row = eventually(
            lambda c=correlation: audit(stack, event="access-denied", correlation_id=c),
            5,
            f"the refused call to {path!r} in the audit log",
        )[0]
        assert row["component"] == "trading" and row["details"]["path"] == path
    assert verify(stack).returncode == 0


def test_only_admins_read_the_audit_log(stack):
    url = f"{stack.gateway}/api/v1/users/audit"
    assert httpx.get(url).status_code == 401
    for role in (Role.TRADER, Role.VIEWER, Role.OPERATOR):
        assert httpx.get(url, headers=as_role(role)).status_code == 403
    no_mfa = httpx.get(url, headers=as_role(Role.ADMIN, mfa=False))
    assert no_mfa.status_code == 403


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE audit.events SET event = 'forged'",
        "DELETE FROM audit.events",
        "TRUNCATE audit.events",
    ],
)
def test_the_database_refuses_to_change_or_remove_audit_rows(stack, change):
    new_user(stack.gateway)  # at least one row
    eventually(lambda: audit(stack, limit=1), 5, "a row")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        stack.postgres.fetch(change)


def test_verify_finds_a_row_altered_behind_the_databases_back(stack):
    new_user(stack.gateway)
    eventually(lambda: audit(stack, limit=1), 5, "a row")
    intact = verify(stack)
    assert intact.returncode == 0, intact.stderr
    assert "chain intact" in intact.stdout
    seq = audit(stack, limit=1)[0]["seq"]
    # Only by switching the table's guard off, as someone with the server's keys could.
    bypass = "ALTER TABLE audit.events {} TRIGGER events_append_only"
    original = stack.postgres.fetch("SELECT event FROM audit.events WHERE seq = $1", seq)
    stack.postgres.fetch(bypass.format("DISABLE"))
    try:
        stack.postgres.fetch("UPDATE audit.events SET event = 'nothing' WHERE seq = $1", seq)
        broken = verify(stack)
        assert broken.returncode == 1
        assert f"the chain breaks at row {seq}" in broken.stderr
    finally:
        stack.postgres.fetch(
            "UPDATE audit.events SET event = $2 WHERE seq = $1", seq, original[0]["event"]
        )
        stack.postgres.fetch(bypass.format("ENABLE"))
    assert verify(stack).returncode == 0


def record(stack, *anchors: str) -> subprocess.CompletedProcess:
    argv = ["audit", "record", "anchor-test", "--operator", "tester"]
    for anchor in anchors:
        argv += ["--anchor", anchor]
    return subprocess.run(gekko_cmd(*argv), env=stack.env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def anchor_of(done: subprocess.CompletedProcess) -> str:
    assert done.returncode in (0, 3), done.stderr
    return re.search(r"anchor (\d+:[0-9a-f]{64})", done.stdout)[1]


def rewrite_from(stack, seq: int, event: str) -> None:
    """What someone with the server's keys can do: change a row and recompute every hash from
    it on, under the writers' lock, so the chain reads as intact again."""

    async def run() -> None:
        conn = await asyncpg.connect(stack.postgres.url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", audit_module._CHAIN_LOCK)
                await conn.execute("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
                prev = await conn.fetchval("SELECT prev_hash FROM audit.events WHERE seq = $1", seq)
                rows = await conn.fetch(
                    "SELECT * FROM audit.events WHERE seq >= $1 ORDER BY seq", seq
                )
                for row in rows:
                    forged = dict(row, event=event) if row["seq"] == seq else dict(row)
                    digest = chain_hash(bytes(prev), entry_from_row(forged), row["seq"])
                    await conn.execute(
                        "UPDATE audit.events SET event = $2, prev_hash = $3, hash = $4"
                        " WHERE seq = $1",
                        row["seq"], forged["event"], prev, digest,
                    )  # fmt: skip
                    prev = digest
                await conn.execute("ALTER TABLE audit.events ENABLE TRIGGER events_append_only")
        finally:
            await conn.close()

    asyncio.run(run())


def test_anchors_find_a_chain_rewritten_or_cut_back_which_the_chain_alone_cannot(stack):
    first = anchor_of(record(stack))
    assert verify(stack, "--anchor", first).returncode == 0
    second = record(stack, first)
    assert second.returncode == 0, second.stderr
    second_anchor = anchor_of(second)
    seq = int(second_anchor.split(":")[0])

    rewrite_from(stack, seq, "nothing-to-see")
    assert verify(stack).returncode == 0  # the chain alone reads as intact
    rewritten = verify(stack, "--anchor", first, "--anchor", second_anchor)
    assert rewritten.returncode == 1
    assert f"row {seq} no longer has its anchored hash" in rewritten.stderr

    # The next operation's record is written, and says what it found (exit 3).
    third = record(stack, second_anchor)
    assert third.returncode == 3
    assert f"the audit log was altered: row {seq} no longer has its anchored hash" in third.stderr
    third_seq = int(anchor_of(third).split(":")[0])
    assert third_seq > seq

    stack.postgres.fetch("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
    try:
        stack.postgres.fetch("DELETE FROM audit.events WHERE seq >= $1", third_seq)
    finally:
        stack.postgres.fetch("ALTER TABLE audit.events ENABLE TRIGGER events_append_only")
    assert verify(stack).returncode == 0
    cut = verify(stack, "--anchor", anchor_of(third))
    assert cut.returncode == 1
    assert f"row {third_seq} is gone: the log was cut back past it" in cut.stderr
