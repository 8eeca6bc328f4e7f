"""Authentication and route permissions as FastAPI dependencies, for the services and the
gateway's own routes. An app using them sets `state.verify_keys`, `state.revoked_sessions` and
`state.permissions` (from its ACCESS table with `route_permissions`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.routing import Mount

from gekko.config import ConfigError
from gekko.problems import ProblemError
from gekko.security.rbac import AccessTable, Permission
from gekko.security.tokens import TokenClaims, TokenError, bearer_token, decode_token


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401,
        detail,
        title="Unauthorized",
        slug="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="gekko"'},
    )


def source_address(request: Request) -> str:
    """The caller's address as the gateway saw it: the last X-Forwarded-For entry is the one the
    gateway appended (the entries before it are whatever the client sent)."""
    forwarded = request.headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    if last:
        return last
    return request.client.host if request.client else "unknown"


def _denied(request: Request, problem: ProblemError, user_id: int | None = None) -> ProblemError:
    """Counts and audits a refused call (where the app records security events), then gives
    the problem back to raise."""
    events = getattr(request.app.state, "security_events", None)
    if events is not None:
        events.record(
            "access-denied",
            user_id=user_id,
            source=source_address(request),
            status=problem.status,
            reason=(problem.type_ or "").rsplit("/", 1)[-1],
            method=request.method,
            path=request.url.path,
        )
    return problem


async def current_claims(request: Request) -> TokenClaims:
    """The caller's verified access token; 401 if it is missing, invalid, expired or its
    session has ended. Verified once per request."""
    cached = getattr(request.state, "claims", None)
    if cached is not None:
        return cached
    try:
        token = bearer_token(request.headers.get("authorization"))
        claims = decode_token(token, request.app.state.verify_keys)
    except TokenError as exc:
        raise _denied(request, unauthorized(str(exc))) from None
    revoked = request.app.state.revoked_sessions
    if revoked is not None and await revoked.contains(claims.session_id):
        raise _denied(
            request,
            unauthorized("the session of this token has ended; sign in again"),
            claims.user_id,
        )
    request.state.claims = claims
    return claims


async def check_permission(request: Request, permission: Permission) -> None:
    """401 without a valid token where one is needed; 403 for a role the route does not allow,
    or for a session without the second factor (or a recent enough one) the route needs."""
    if permission.anonymous:
        return
    claims = await current_claims(request)
    if not permission.allows(claims.role):
        raise _denied(
            request,
            ProblemError(
                403,
                f"this needs the role {' or '.join(sorted(permission.roles))}; "
                f"you are signed in as {claims.role}",
                title="Forbidden",
                slug="forbidden",
            ),
            claims.user_id,
        )
    if not permission.needs_mfa(claims.role):
        return
    if claims.mfa_at is None:
        raise _denied(
            request,
            ProblemError(
                403,
                f"the {claims.role} role needs a second factor: enrol with POST "
                "/api/v1/users/mfa/enroll and /mfa/confirm (or sign in with your code)",
                title="Forbidden",
                slug="mfa-required",
            ),
            claims.user_id,
        )
    if permission.fresh_mfa_s and time.time() - claims.mfa_at > permission.fresh_mfa_s:
        raise _denied(
            request,
            ProblemError(
                403,
                "this needs your second factor again: POST /api/v1/users/mfa/step-up with a code, "
                "then retry with the access token it returns",
                title="Forbidden",
                slug="step-up-required",
            ),
            claims.user_id,
        )


async def authorize(request: Request) -> None:
    """Route dependency: the permission the app's ACCESS table declares for this route."""
    method = "GET" if request.method == "HEAD" else request.method
    # By handler, not path: a route of an included router is matched as its own router's
    # route, whose path lacks the prefix. Every route has one (route_permissions).
    endpoint = request.scope["route"].endpoint
    await check_permission(request, request.app.state.permissions[(method, endpoint)])


Handler = Callable[..., Any]


def route_permissions(
    routes: list, table: AccessTable, *, owner: str
) -> dict[tuple[str, Handler], Permission]:
    """(method, handler) -> permission for every API route, from the ACCESS table keyed by
    (method, path). A route missing from the table, or one handler serving routes with
    different permissions, is a ConfigError: the component does not start."""
    found: dict[tuple[str, Handler], Permission] = {}
    missing = []
    for route in routes:
        if isinstance(route, Mount) or type(route).__name__ == "_IncludedRouter":
            # Its routes would be matched under paths this table cannot see: refuse.
            raise ConfigError(
                f"{owner}: a nested router or mount cannot be checked against ACCESS; "
                "include each router in the app itself"
            )
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            permission = table.get((method, route.path))
            if permission is None:
                missing.append(f"{method} {route.path}")
                continue
            key = (method, route.endpoint)
            if found.setdefault(key, permission) != permission:
                raise ConfigError(
                    f"{owner}: {route.endpoint.__name__} serves routes with different "
                    "permissions; give each route its own handler"
                )
    if missing:
        raise ConfigError(f"{owner}: no permission declared in ACCESS for {', '.join(missing)}")
    return found
