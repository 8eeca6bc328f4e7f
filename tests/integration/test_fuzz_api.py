"""The API as an attacker probes it: schemathesis sends every operation in the gateway's OpenAPI
document its coverage cases (the schema's examples, each parameter and body field missing, at
and past its bounds, of the wrong type) and generated requests, valid and invalid, each one
anonymously and with a valid token of every role; then, for each case with text in it, its
twin with a NUL character in one string. No answer may be a server error, a 2xx answer must
match its documented schema, and a request that breaks the schema must be refused with a 4xx.

Callers: one real account per role, registered, given its role and signed in through the API,
the operator and the admin with MFA enrolled and proved. Each operation gets new access tokens
for these accounts (signed like conftest.as_role's: a new session, the second factor proved just
now), so an operation that logs out or ends sessions spoils no other operation's callers, and
the admin's role changes are kept off these accounts.

Isolation from the rest of the suite, which shares the stack:
- The requests go through a gateway process of their own with rate limits off: its traffic
  would otherwise fill the per-service windows in Redis that every gateway shares, and turn
  later tests' answers into 429s.
- Each operation's requests come from a loopback address of their own (127.0.88.N), so the
  login lockout that wrong passwords and codes build up per source stays with that operation
  and never reaches 127.0.0.1; the accounts are set up from 127.0.89.1.

GEKKO_FUZZ_EXAMPLES (default 15) generated examples per operation besides the coverage cases,
derandomized (the same requests every run) and not shrunk: a failure names the operation and
the caller and shows the request as a curl command line.
"""

from __future__ import annotations

import importlib
import itertools
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from requests.adapters import HTTPAdapter
from schemathesis.core.failures import FailureGroup, as_reported_failure
from schemathesis.generation.feedback import FeedbackSources

# The pytest integration's lazy schema (from_fixture) does not run under pytest 9; this is the
# function it builds each operation's Hypothesis test with.
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from gekko.config import DOMAIN_SERVICES
from gekko.gateway.app import GATEWAY_ACCESS
from gekko.security.rbac import Role

from .conftest import as_role, eventually
from .test_gateway_resilience import _start_gateway

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("GEKKO_FUZZ_EXAMPLES", "15"))
SETUP_SOURCE = "127.0.89.1"
PASSWORD = "fuzz-" + secrets.token_hex(8)
# Not status_code_conformance or content_type_conformance: the services document only their
# 2xx and 422 answers, and every error is application/problem+json.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    response_schema_conformance,
    negative_data_rejection,
]
# The NUL twin is an edit schemathesis does not know about: it still takes the case for valid
# (or not) as generated, so only the checks that do not depend on that.
TWIN_CHECKS = [schemathesis.checks.not_a_server_error, response_schema_conformance]
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def declared() -> list[tuple[str, str]]:
    """Every operation the ACCESS tables declare (test_access proves the OpenAPI document has
    no other): one test each, named after it."""
    table = dict(GATEWAY_ACCESS)
    for service in DOMAIN_SERVICES:
        table.update(importlib.import_module(f"gekko.services.{service}").ACCESS)
    return sorted(table, key=lambda op: (op[1], op[0]))


OPERATIONS = declared()


class _FromAddress(HTTPAdapter):
    """Connections that leave from a given loopback address."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        return super().init_poolmanager(*args, **kwargs)


def _nul_twin(case, turn: int) -> bool:
    """Start one of the case's non-empty strings (body fields, query and path parameters; the
    turn picks which) with U+0000 instead, in place; False if it has none. Harmless to Python,
    fatal to a PostgreSQL text parameter, and too rare in Hypothesis' strings to turn up in a
    few examples. The length stays, and what broke the schema still does."""
    spots = [
        (values, key)
        for values in (case.body, case.query, case.path_parameters)
        if isinstance(values, dict)
        for key, value in values.items()
        if isinstance(value, str) and value
    ]
    if not spots:
        return False
    values, key = spots[turn % len(spots)]
    values[key] = "\x00" + values[key][1:]
    return True


@dataclass(frozen=True)
class Account:
    id: int
    role: Role


def _account(gateway: str, client: httpx.Client, role: Role) -> Account:
    """A real account with this role, signed in once for real (with MFA where the role needs
    it) to prove it works."""
    name = f"fz{secrets.token_hex(6)}"
    registered = client.post(
        f"{gateway}/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
    )
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["id"]
    if role != Role.TRADER:
        changed = client.put(
            f"{gateway}/api/v1/users/{user_id}/role",
            json={"role": role.value},
            headers=as_role(Role.ADMIN, user_id=990_300),
        )
        assert changed.status_code == 200, changed.text
    signed_in = client.post(
        f"{gateway}/api/v1/users/login", json={"username": name, "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    auth = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    if role in (Role.OPERATOR, Role.ADMIN):
        enrolled = client.post(f"{gateway}/api/v1/users/mfa/enroll", headers=auth)
        assert enrolled.status_code == 200, enrolled.text
        code = pyotp.TOTP(enrolled.json()["secret"]).now()
        confirmed = client.post(
            f"{gateway}/api/v1/users/mfa/confirm", json={"code": code}, headers=auth
        )
        assert confirmed.status_code == 200, confirmed.text
        auth = {"Authorization": f"Bearer {confirmed.json()['access_token']}"}
    me = client.get(f"{gateway}/api/v1/users/me", headers=auth)
    assert me.status_code == 200 and me.json()["role"] == role.value, me.text
    return Account(user_id, role)


@pytest.fixture(scope="module")
def fuzz_gateway(stack) -> Iterator[str]:
    url = _start_gateway(stack, "gw-fuzz", GEKKO_RATELIMIT_ENABLED="false")
    yield url
    stack.stop("gw-fuzz")


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway):
    # The gateway merges each service's document once it has found the service.
    prefixes = {f"/api/v1/{service.replace('_', '-')}" for service in DOMAIN_SERVICES}

    def merged() -> dict | None:
        document = httpx.get(f"{fuzz_gateway}/openapi.json", timeout=10).json()
        found = {"/".join(path.split("/")[:4]) for path in document["paths"]} & prefixes
        return document if found == prefixes else None

    document = eventually(merged, 20, "every service's operations in the OpenAPI document")
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=fuzz_gateway)
    schema.config.generation.update(
        max_examples=EXAMPLES, deterministic=True, no_shrink=True, database="none"
    )
    return schema


@pytest.fixture(scope="module")
def accounts(fuzz_gateway) -> dict[Role, Account]:
    transport = httpx.HTTPTransport(local_address=SETUP_SOURCE)
    with httpx.Client(transport=transport, timeout=30) as client:
        return {role: _account(fuzz_gateway, client, role) for role in Role}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_of_any_role_gets_a_server_error(method, path, api_schema, accounts):
    operation = api_schema.find_operation_by_path(method.lower(), path)
    assert operation is not None, f"{method} {path} is missing from the OpenAPI document"
    callers = {"anonymous": {}} | {
        role.value: as_role(role, user_id=account.id) for role, account in accounts.items()
    }
    ours = {str(account.id) for account in accounts.values()}
    session = requests.Session()
    session.mount("http://", _FromAddress(f"127.0.88.{OPERATIONS.index((method, path)) + 1}"))
    turns = itertools.count()

    def send(case, checks: list) -> None:
        for who, headers in callers.items():
            response = case.call(session=session, headers=headers, timeout=15)
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except FailureGroup as exc:
                raise FailureGroup(list(exc.exceptions), f"{exc.message}\nSent as: {who}") from None

    def each_caller(case) -> None:
        if case.path_parameters and ours & {str(v) for v in case.path_parameters.values()}:
            return  # the admin changing these accounts' roles would change who calls
        send(case, CHECKS)
        if _nul_twin(case, next(turns)):
            send(case, TWIN_CHECKS)

    test = build_operation_test(
        config=api_schema.config,
        operation=operation,
        test_func=each_caller,
        given_kwargs={},
        feedback=FeedbackSources(),
        explicit_settings=HYPOTHESIS,
    )
    with session:
        try:
            test()
        except FailureGroup as exc:
            raise as_reported_failure(exc) from None


def test_after_it_every_component_still_writes_its_audit_log(stack, fuzz_gateway):
    """One refused call to each component that has routes for signed-in callers, after all
    the above: each lands in audit.events, written by the component that refused it. (A path
    with a NUL in a refused call once stopped a service's audit log: it retried, for ever, a
    batch the database could not store.)"""
    tables = {"gateway": GATEWAY_ACCESS} | {
        service: importlib.import_module(f"gekko.services.{service}").ACCESS
        for service in DOMAIN_SERVICES
    }
    expected = {}
    transport = httpx.HTTPTransport(local_address=SETUP_SOURCE)
    with httpx.Client(transport=transport, timeout=15) as client:
        for component, table in tables.items():
            guarded = [op for op, permission in table.items() if not permission.anonymous]
            if not guarded:
                continue
            method, path = guarded[0]
            correlation = f"fuzz-{component}-{secrets.token_hex(6)}"
            answer = client.request(
                method,
                fuzz_gateway + re.sub(r"\{[^}]+\}", "1", path),
                headers={"X-Correlation-ID": correlation},
                json={} if method in ("POST", "PUT") else None,
            )
            assert answer.status_code == 401, (method, path, answer.text)
            expected[correlation] = component

    def written() -> bool:
        rows = stack.postgres.fetch(
            "SELECT correlation_id, component FROM audit.events WHERE correlation_id = ANY($1)",
            list(expected),
        )
        found = {r["correlation_id"]: r["component"] for r in rows}
        missing = sorted(c for correlation, c in expected.items() if found.get(correlation) != c)
        assert not missing, f"no row from {', '.join(missing)}"
        return True

    eventually(written, 15, "a refused call to each component in the audit log")


def test_what_postgresql_cannot_take_is_a_422_problem_and_changes_nothing(
    stack, fuzz_gateway, accounts
):
    """The server errors and the schema-breaking requests taken that this test found, each
    now a 422 problem that leaves the data as it was."""
    trader = as_role(Role.TRADER, user_id=accounts[Role.TRADER].id)
    admin = as_role(Role.ADMIN, user_id=accounts[Role.ADMIN].id)
    api = f"{fuzz_gateway}/api/v1"
    name = f"nul{secrets.token_hex(4)}"
    transport = httpx.HTTPTransport(local_address=SETUP_SOURCE)
    with httpx.Client(transport=transport, timeout=15) as client:
        sharing = client.put(f"{api}/social/sharing", json={"share_trades": True}, headers=trader)
        assert sharing.status_code == 200, sharing.text
        refused = [
            client.post(
                f"{api}/users/register",
                json={"username": name, "email": f"{name}\x00@example.com", "password": PASSWORD},
            ),
            client.post(f"{api}/users/login", json={"username": "\x00", "password": PASSWORD}),
            client.post(f"{api}/social/posts", json={"body": f"{name}\x00"}, headers=trader),
            client.put(f"{api}/social/sharing", json={"share_trades": 0}, headers=trader),
            *(
                client.get(f"{api}/users/audit", params=filters, headers=admin)
                for filters in (
                    {"event": "\x00"},
                    {"correlation_id": "\x00"},
                    {"since": "0001-01-01T00:00:00+14:00"},
                    {"until": "9999-12-31T23:59:59-14:00"},
                    {"until": "0.5"},
                )
            ),
        ]
        for answer in refused:
            assert answer.status_code == 422, (answer.request.url, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        assert client.get(f"{api}/social/sharing", headers=trader).json()["share_trades"] is True
    assert stack.postgres.fetch("SELECT 1 FROM users.accounts WHERE username = $1", name) == []
    posts = stack.postgres.fetch("SELECT 1 FROM social.posts WHERE body LIKE $1", f"{name}%")
    assert posts == []
