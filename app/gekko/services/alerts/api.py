"""The alerts service's HTTP side: the API under /api/v1/alerts (through the gateway, with a
user's token) and the webhook Alertmanager posts its notifications to (not through the gateway,
no token: only Alertmanager's hosts may post, see `webhook_source_allowed`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gekko.problems import ProblemError
from gekko.security.access import source_address
from gekko.security.rbac import OPERATE, OPERATE_READ, AccessTable
from gekko.services.alerts import tracking
from gekko.services.alerts.alertmanager import AlertmanagerError
from gekko.services.alerts.model import (
    AlertHistoryOut,
    AlertListOut,
    AlertOut,
    WebhookPayload,
    alert_out,
    history_out,
)
from gekko.services.alerts.settings import Network
from gekko.services.deps import Claims, Pool
from gekko.services.inputs import NonBlankText

PREFIX = "/api/v1/alerts"
WEBHOOK_PATH = "/alertmanager/webhook"
router = APIRouter(prefix=PREFIX, tags=["alerts"])
# Who may call each route (gekko.security.rbac); a route missing here stops the service.
ACCESS: AccessTable = {
    ("GET", PREFIX): OPERATE_READ,
    ("GET", PREFIX + "/{alert_id}"): OPERATE_READ,
    ("POST", PREFIX + "/{alert_id}/acknowledge"): OPERATE,
}
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class AcknowledgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: NonBlankText = Field(
        min_length=1, max_length=1000, examples=["looking into it: the disk is full"]
    )


def _not_found(alert_id: int) -> ProblemError:
    return ProblemError(404, f"no alert {alert_id}", title="Unknown alert", slug="unknown-alert")


@router.get("", response_model=AlertListOut)
async def list_alerts(
    pool: Pool,
    status: Literal["firing", "acknowledged", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertListOut:
    """The latest alerts first (by the time they fired), optionally of one status."""
    rows = await tracking.list_alerts(pool, status, limit)
    return AlertListOut(alerts=[alert_out(row) for row in rows])


@router.get("/{alert_id}", response_model=AlertHistoryOut)
async def get_alert(alert_id: AlertId, pool: Pool) -> AlertHistoryOut:
    """The alert with its history: every step with its time and the seconds since it fired,
    and how long it took to be notified, escalated, acknowledged and resolved."""
    try:
        row, events = await tracking.alert_with_history(pool, alert_id)
    except tracking.AlertNotFoundError:
        raise _not_found(alert_id) from None
    return history_out(row, events)


async def _username(pool: Pool, user_id: int) -> str:
    name = await pool.fetchval("SELECT username FROM alerts.users WHERE user_id = $1", user_id)
    return name or f"user {user_id}"


@router.post("/{alert_id}/acknowledge", response_model=AlertOut)
async def acknowledge(
    alert_id: AlertId, body: AcknowledgeIn, pool: Pool, claims: Claims, request: Request
) -> AlertOut:
    """Silences the alert in Alertmanager (every label matched exactly) in the caller's name,
    which stops its escalation. 409 if it is already acknowledged or resolved; 502 if
    Alertmanager does not take the silence (then nothing is recorded)."""
    state = request.app.state
    by = await _username(pool, claims.user_id)
    details = {"via": "api", "user_id": str(claims.user_id)}
    try:
        async with pool.acquire() as conn:
            row = await tracking.acknowledge(
                conn,
                state.alertmanager,
                state.alert_settings,
                alert_id,
                by,
                body.comment,
                details=details,
                metrics=state.alert_metrics,
            )
    except tracking.AlertNotFoundError:
        raise _not_found(alert_id) from None
    except tracking.AlertStateError as exc:
        raise ProblemError(409, str(exc), title="Conflict", slug="alert-state") from None
    except AlertmanagerError as exc:
        raise ProblemError(
            502,
            f"the silence was not created, nothing was recorded; try again ({exc})",
            title="Alertmanager unavailable",
            slug="alertmanager-unavailable",
        ) from None
    return alert_out(row)


# --- the webhook ---------------------------------------------------------------------------

webhook_router = APIRouter(tags=["ops"])


def webhook_source_allowed(
    address: str, forwarded: bool, serves_tls: bool, sources: Iterable[Network]
) -> bool:
    """Only Alertmanager's hosts post alerts. A request the gateway forwarded (it adds
    X-Forwarded-For to every one) never is Alertmanager's. With TLS, the handshake already
    admitted only hosts with a certificate from the internal CA (mutual TLS); without it, the
    caller must be on loopback or in GEKKO_ALERT_WEBHOOK_SOURCES."""
    if forwarded:
        return False
    if serves_tls:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or any(ip in network for network in sources)


def _check_source(request: Request) -> None:
    state = request.app.state
    address = request.client.host if request.client else ""
    forwarded = "x-forwarded-for" in request.headers
    sources = state.alert_settings.webhook_sources
    if webhook_source_allowed(address, forwarded, state.settings.serves_tls, sources):
        return
    state.security_events.record(
        "access-denied",
        source=source_address(request),
        status=403,
        reason="alert-webhook-source",
        method=request.method,
        path=request.url.path,
    )
    raise ProblemError(
        403,
        "only Alertmanager posts here, directly from loopback or an address in "
        "GEKKO_ALERT_WEBHOOK_SOURCES (with TLS: a host with a certificate of the internal CA)",
        title="Forbidden",
        slug="forbidden",
    )


class WebhookOut(BaseModel):
    recorded: int
    ignored: int


@webhook_router.post(
    WEBHOOK_PATH,
    response_model=WebhookOut,
    include_in_schema=False,
    dependencies=[Depends(_check_source)],  # before the body is even validated
)
async def alertmanager_webhook(payload: WebhookPayload, request: Request) -> WebhookOut:
    """Alertmanager's webhook_config (payload version 4): records each alert, whom
    `receiver` names as notified, and resolutions."""
    state = request.app.state
    result = await tracking.record_notification(
        state.pool, payload, tracking.utcnow(), state.alert_metrics
    )
    return WebhookOut(recorded=result.recorded, ignored=result.ignored)
