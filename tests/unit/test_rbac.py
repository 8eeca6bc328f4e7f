"""Route permissions in a service app: declared for every route, enforced per role."""

import time

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from gekko.config import ConfigError, load_settings
from gekko.security.rbac import ADMINISTER, PUBLIC, SIGNED_IN, TRADE, Role, parse_role
from gekko.services.base import build_service_app

from .keys import TOKEN_ENV, as_role

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}
ACCESS = {
    ("GET", "/api/v1/social/open"): PUBLIC,
    ("GET", "/api/v1/social/mine"): SIGNED_IN,
    ("POST", "/api/v1/social/trade"): TRADE,
    ("PUT", "/api/v1/social/admin"): ADMINISTER,
}


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/social")

    @r.get("/open")
    async def read_open() -> dict[str, str]:
        return {"ok": "yes"}

    @r.get("/mine")
    async def read_mine() -> dict[str, str]:
        return {"ok": "yes"}

    @r.post("/trade")
    async def trade() -> dict[str, str]:
        return {"ok": "yes"}

    @r.put("/admin")
    async def administer() -> dict[str, str]:
        return {"ok": "yes"}

    return r


@pytest.fixture(scope="module")
def client():
    app = build_service_app("social", load_settings("social", ENV), [router()], ACCESS)
    app.state.revoked_sessions = None  # no Redis here: nothing has been revoked
    return TestClient(app)


def test_a_route_without_a_declared_permission_stops_the_service():
    partial = {k: v for k, v in ACCESS.items() if k != ("PUT", "/api/v1/social/admin")}
    with pytest.raises(
        ConfigError, match="no permission declared in ACCESS for PUT /api/v1/social/admin"
    ):
        build_service_app("social", load_settings("social", ENV), [router()], partial)


EXPECTED = {
    # route: anonymous, trader, viewer, operator, admin
    ("GET", "/api/v1/social/open"): (200, 200, 200, 200, 200),
    ("GET", "/api/v1/social/mine"): (401, 200, 200, 200, 200),
    ("POST", "/api/v1/social/trade"): (401, 200, 403, 403, 200),
    ("PUT", "/api/v1/social/admin"): (401, 403, 403, 403, 200),
}


@pytest.mark.parametrize(("route", "statuses"), EXPECTED.items(), ids=lambda v: str(v))
def test_each_role_gets_what_the_table_says(client, route, statuses):
    method, path = route
    callers = [{}, *(as_role(role) for role in Role)]
    got = tuple(client.request(method, path, headers=h).status_code for h in callers)
    assert got == statuses
    denied = client.request(method, path, headers=as_role(Role.VIEWER))
    if denied.status_code == 403:
        assert denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["type"].endswith("/forbidden")


def test_one_handler_for_routes_of_different_permissions_stops_the_service():
    r = APIRouter(prefix="/api/v1/social")

    @r.get("/open")
    @r.get("/mine")
    async def both() -> dict[str, str]:
        return {"ok": "yes"}

    table = {("GET", "/api/v1/social/open"): PUBLIC, ("GET", "/api/v1/social/mine"): SIGNED_IN}
    with pytest.raises(ConfigError, match="both serves routes with different permissions"):
        build_service_app("social", load_settings("social", ENV), [r], table)


def test_a_nested_router_is_refused_rather_than_left_unchecked():
    inner = APIRouter()

    @inner.get("/nested")
    async def nested() -> dict[str, str]:
        return {"ok": "yes"}

    outer = router()
    outer.include_router(inner)
    table = {**ACCESS, ("GET", "/api/v1/social/nested"): TRADE}
    with pytest.raises(ConfigError, match="nested router or mount cannot be checked"):
        build_service_app("social", load_settings("social", ENV), [outer], table)


def test_roles_are_parsed_strictly():
    assert parse_role("viewer") is Role.VIEWER
    with pytest.raises(ValueError, match="unknown role 'root'"):
        parse_role("root")


# Without a second factor in the session: operators and admins keep only what every signed-in
# user may do; traders and viewers are unaffected.
EXPECTED_WITHOUT_MFA = {
    # route: trader, viewer, operator, admin
    ("GET", "/api/v1/social/open"): (200, 200, 200, 200),
    ("GET", "/api/v1/social/mine"): (200, 200, 200, 200),
    ("POST", "/api/v1/social/trade"): (200, 403, 403, 403),
    ("PUT", "/api/v1/social/admin"): (403, 403, 403, 403),
}


@pytest.mark.parametrize(("route", "statuses"), EXPECTED_WITHOUT_MFA.items(), ids=str)
def test_operators_and_admins_need_the_second_factor(client, route, statuses):
    method, path = route
    got = tuple(
        client.request(method, path, headers=as_role(role, mfa=False)).status_code for role in Role
    )
    assert got == statuses
    answer = client.request(method, path, headers=as_role(Role.ADMIN, mfa=False))
    if answer.status_code == 403:
        assert answer.json()["type"].endswith("/mfa-required")


def test_a_step_up_permission_wants_a_recent_second_factor():
    from gekko.security.rbac import ADMINISTER_STEP_UP, STEP_UP_MAX_AGE_S

    from .keys import signing_key

    table = {**ACCESS, ("PUT", "/api/v1/social/admin"): ADMINISTER_STEP_UP}
    app = build_service_app("social", load_settings("social", ENV), [router()], table)
    app.state.revoked_sessions = None
    client = TestClient(app)
    now = int(time.time())

    def put(mfa_at: int) -> int:
        token = signing_key.issue(1, "s", role=Role.ADMIN, mfa_at=mfa_at)
        headers = {"Authorization": f"Bearer {token}"}
        answer = client.put("/api/v1/social/admin", headers=headers)
        return answer.status_code if answer.status_code == 200 else answer.json()["type"]

    assert put(now - 10) == 200
    assert put(now - STEP_UP_MAX_AGE_S - 5).endswith("/step-up-required")
