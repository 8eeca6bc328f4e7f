"""What happens to an alert, in PostgreSQL and Alertmanager: a webhook notification recorded,
an acknowledgement (a silence), and the escalation loop. The API and `gekko alerts` share
these functions, so an acknowledgement is the same whichever way it comes.

Locks: a transaction that changes an alert holds its row (FOR NO KEY UPDATE, which lets
history rows that reference it be added meanwhile); the escalation loop skips rows someone
holds, and only one instance runs it at a time (a transaction-scoped advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry, Counter

from gekko.services.alerts.alertmanager import Alertmanager, AlertmanagerError
from gekko.services.alerts.model import (
    ALERT_ID_ANNOTATION,
    ALERT_ID_LABEL,
    ESCALATION_LABEL,
    ESCALATION_VALUE,
    Escalation,
    EventKind,
    WebhookAlert,
    WebhookPayload,
    escalated_copy,
    escalation_step,
    resolved_occurrence,
    silence_for,
    still_listed,
)
from gekko.services.alerts.settings import AlertSettings

log = logging.getLogger("gekko.alerts")

# pg_try_advisory_xact_lock key of the escalation loop ("gekkoesc").
ESCALATION_LOCK_KEY = int.from_bytes(b"gekkoesc", "big") & (2**63 - 1)
# Deadlines of the Alertmanager calls. An acknowledgement through the gateway must answer
# within its upstream timeout (5 s): the silence, then ending an escalated copy.
ACK_SILENCE_DEADLINE_S = 3.0
ACK_END_DEADLINE_S = 1.0
LOOP_DEADLINE_S = 3.0
# How long an acknowledgement waits for the row while another transaction holds it.
ROW_WAIT_S = 5.0
# Open alerts one loop handles at most (the oldest first).
LOOP_BATCH = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AlertMetrics:
    """Counters on the service's /metrics (Prometheus can alert on the alerting path)."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        self.notifications = Counter(
            "gekko_alerts_notified_total",
            "Alerts in Alertmanager webhook notifications, by alert status.",
            ["status"],
            registry=self.registry,
        )
        self.steps = Counter(
            "gekko_alerts_steps_total",
            "Steps recorded in alert histories (escalated, acknowledged, resolved ...).",
            ["kind"],
            registry=self.registry,
        )
        self.alertmanager_failures = Counter(
            "gekko_alerts_alertmanager_failures_total",
            "Calls to Alertmanager that failed after their retries, by call.",
            ["call"],
            registry=self.registry,
        )


class AlertNotFoundError(LookupError):
    pass


class AlertStateError(Exception):
    """The alert is not in a state the action applies to (acknowledged, resolved)."""


# --- rows ----------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def decoded(row: asyncpg.Record) -> dict[str, Any]:
    """A row with its jsonb columns as dicts (asyncpg hands jsonb over as text)."""
    out = dict(row)
    for name in ("labels", "annotations", "details"):
        if isinstance(out.get(name), str):
            out[name] = orjson.loads(out[name])
    return out


async def add_event(
    conn: asyncpg.Connection,
    alert_id: int,
    kind: EventKind,
    at: datetime,
    *,
    receiver: str | None = None,
    actor: str | None = None,
    comment: str | None = None,
    silence_id: str | None = None,
    details: Mapping[str, str] | None = None,
    metrics: AlertMetrics | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO alerts.alert_events "
        "(alert_id, kind, at, receiver, actor, comment, silence_id, details) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
        alert_id,
        kind.value,
        at,
        receiver,
        actor,
        comment,
        silence_id,
        _json(dict(details or {})),
    )
    if metrics is not None and kind != EventKind.NOTIFIED:
        metrics.steps.labels(kind.value).inc()


async def list_alerts(
    pool: asyncpg.Pool | asyncpg.Connection, status: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM alerts.alerts WHERE ($1::text IS NULL OR status = $1) "
        "ORDER BY fired_at DESC, id DESC LIMIT $2",
        status,
        limit,
    )
    return [decoded(r) for r in rows]


async def alert_with_history(
    pool: asyncpg.Pool | asyncpg.Connection, alert_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    row = await pool.fetchrow("SELECT * FROM alerts.alerts WHERE id = $1", alert_id)
    if row is None:
        raise AlertNotFoundError(f"no alert {alert_id}")
    events = await pool.fetch(
        "SELECT * FROM alerts.alert_events WHERE alert_id = $1 ORDER BY at, id", alert_id
    )
    return decoded(row), [decoded(e) for e in events]


async def _resolve(
    conn: asyncpg.Connection,
    alert_id: int,
    at: datetime,
    now: datetime,
    details: Mapping[str, str],
    metrics: AlertMetrics | None,
) -> None:
    await conn.execute(
        "UPDATE alerts.alerts SET status = 'resolved', resolved_at = $2, updated_at = $3 "
        "WHERE id = $1",
        alert_id,
        at,
        now,
    )
    await add_event(conn, alert_id, EventKind.RESOLVED, at, details=details, metrics=metrics)


# --- the webhook ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    recorded: int
    ignored: int


async def _original_of(conn: asyncpg.Connection, copy: WebhookAlert) -> int | None:
    """The alert an escalated copy was made from: named by its label or annotation, or else the
    latest alert with the copy's labels but the escalation label."""
    named = copy.labels.get(ALERT_ID_LABEL) or copy.annotations.get(ALERT_ID_ANNOTATION, "")
    if named.isascii() and named.isdigit() and len(named) <= 18:
        found = await conn.fetchval("SELECT id FROM alerts.alerts WHERE id = $1", int(named))
        if found is not None:
            return found
    labels = {k: v for k, v in copy.labels.items() if k not in (ESCALATION_LABEL, ALERT_ID_LABEL)}
    return await conn.fetchval(
        "SELECT id FROM alerts.alerts WHERE labels = $1::jsonb ORDER BY fired_at DESC LIMIT 1",
        _json(labels),
    )


async def _upsert(
    conn: asyncpg.Connection, alert: WebhookAlert, now: datetime, metrics: AlertMetrics | None
) -> asyncpg.Record:
    """The alert's row, created (with its `fired` step) the first time it is seen, and held
    until the transaction ends."""
    row = await conn.fetchrow(
        """
        INSERT INTO alerts.alerts AS a (fingerprint, fired_at, alertname, severity, team,
            labels, annotations, generator_url, first_seen_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $9)
        ON CONFLICT (fingerprint, fired_at) DO UPDATE
            SET annotations = EXCLUDED.annotations, updated_at = EXCLUDED.updated_at
        RETURNING a.id, a.status, (a.xmax = 0) AS inserted
        """,
        alert.fingerprint,
        alert.startsAt,
        alert.labels.get("alertname", ""),
        alert.labels.get("severity", ""),
        alert.labels.get("team", ""),
        _json(alert.labels),
        _json(alert.annotations),
        alert.generatorURL,
        now,
    )
    if row["inserted"]:
        await add_event(conn, row["id"], EventKind.FIRED, alert.startsAt, metrics=metrics)
    return row


async def _notified(
    conn: asyncpg.Connection,
    alert_id: int,
    alert: WebhookAlert,
    receiver: str,
    now: datetime,
    extra: Mapping[str, str] | None = None,
) -> None:
    details = {"status": alert.status, **(extra or {})}
    await add_event(conn, alert_id, EventKind.NOTIFIED, now, receiver=receiver, details=details)


async def record_notification(
    pool: asyncpg.Pool,
    payload: WebhookPayload,
    now: datetime,
    metrics: AlertMetrics | None = None,
) -> Recorded:
    """One webhook notification: each alert in it is created when first seen (`fired`), gets
    a `notified` step for the receiver, and `resolved` when it says so. The escalated copies'
    notifications are steps of the alerts they copy. One transaction; rows are taken in one
    order, so notifications of the same alerts to several receivers cannot deadlock."""
    recorded = ignored = 0
    alerts = sorted(payload.alerts, key=lambda a: (a.fingerprint, a.startsAt))
    async with pool.acquire() as conn, conn.transaction():
        for alert in alerts:
            if metrics is not None:
                metrics.notifications.labels(alert.status).inc()
            if alert.is_escalated_copy:
                alert_id = await _original_of(conn, alert)
                if alert_id is None:
                    log.warning("an escalated copy of no known alert: %s", alert.labels)
                    ignored += 1
                    continue
                escalation = {"escalation": alert.labels[ESCALATION_LABEL]}
                await _notified(conn, alert_id, alert, payload.receiver, now, escalation)
            else:
                row = await _upsert(conn, alert, now, metrics)
                await _notified(conn, row["id"], alert, payload.receiver, now)
                if alert.status == "resolved" and row["status"] != "resolved":
                    details = {"source": "webhook", "receiver": payload.receiver}
                    at = alert.ended_at or now
                    await _resolve(conn, row["id"], at, now, details, metrics)
            recorded += 1
    return Recorded(recorded, ignored)


# --- acknowledgement -----------------------------------------------------------------------


async def acknowledge(
    conn: asyncpg.Connection,
    alertmanager: Alertmanager,
    settings: AlertSettings,
    alert_id: int,
    by: str,
    comment: str,
    *,
    details: Mapping[str, str] | None = None,
    now: datetime | None = None,
    metrics: AlertMetrics | None = None,
) -> dict[str, Any]:
    """Silence the alert in Alertmanager (every label matched exactly, for the configured
    time, created by `by`), record who acknowledged it, which stops its escalation, and end
    its escalated copy if there is one. Nothing is recorded if Alertmanager refuses."""
    now = now or utcnow()
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM alerts.alerts WHERE id = $1 FOR NO KEY UPDATE",
            alert_id,
            timeout=ROW_WAIT_S,
        )
        if row is None:
            raise AlertNotFoundError(f"no alert {alert_id}")
        alert = decoded(row)
        if alert["status"] == "acknowledged":
            raise AlertStateError(
                f"alert {alert_id} was acknowledged by {alert['acknowledged_by']} at "
                f"{alert['acknowledged_at'].isoformat()}"
            )
        if alert["status"] == "resolved":
            raise AlertStateError(
                f"alert {alert_id} resolved at {alert['resolved_at'].isoformat()}: "
                "there is nothing to acknowledge"
            )
        silence = silence_for(alert["labels"], by, comment, now, settings.ack_silence_s)
        try:
            silence_id = await alertmanager.create_silence(silence, ACK_SILENCE_DEADLINE_S)
        except AlertmanagerError:
            if metrics is not None:
                metrics.alertmanager_failures.labels("silence").inc()
            raise
        updated = await conn.fetchrow(
            """
            UPDATE alerts.alerts SET status = 'acknowledged', acknowledged_at = $2,
                acknowledged_by = $3, ack_comment = $4, silence_id = $5, updated_at = $2
            WHERE id = $1 RETURNING *
            """,
            alert_id,
            now,
            by,
            comment,
            silence_id,
        )
        await add_event(
            conn,
            alert_id,
            EventKind.ACKNOWLEDGED,
            now,
            actor=by,
            comment=comment,
            silence_id=silence_id,
            details=details,
            metrics=metrics,
        )
        if alert["escalated_at"] is not None and alert["escalation_ended_at"] is None:
            # Best effort: the escalation loop ends it otherwise, on its next run.
            acknowledged = dict(alert, status="acknowledged")
            ended = await _end_escalations(
                conn, alertmanager, [acknowledged], now, ACK_END_DEADLINE_S, metrics
            )
            if ended:
                updated = await conn.fetchrow("SELECT * FROM alerts.alerts WHERE id = $1", alert_id)
    return decoded(updated)


async def _end_escalations(
    conn: asyncpg.Connection,
    alertmanager: Alertmanager,
    alerts: list[dict[str, Any]],
    now: datetime,
    deadline_s: float,
    metrics: AlertMetrics | None,
) -> bool:
    copies = [escalated_copy(a, now, 0.0, end=True) for a in alerts]
    try:
        await alertmanager.post_alerts(copies, deadline_s)
    except AlertmanagerError as exc:
        log.warning("could not end %d escalated alert(s): %s", len(alerts), exc)
        if metrics is not None:
            metrics.alertmanager_failures.labels("alerts").inc()
        return False
    for alert in alerts:
        await conn.execute(
            "UPDATE alerts.alerts SET escalation_ended_at = $2, updated_at = $2 WHERE id = $1",
            alert["id"],
            now,
        )
        await add_event(
            conn, alert["id"], EventKind.ESCALATION_ENDED, now, details={"status": alert["status"]}
        )
    return True


# --- the escalation loop -------------------------------------------------------------------


@dataclass
class PassResult:
    escalated: int = 0
    reposted: int = 0
    ended: int = 0
    resolved: int = 0
    errors: list[str] = field(default_factory=list)


class EscalationLoop:
    """Every `escalation_check_s`, on one instance at a time: resolve the alerts Alertmanager
    has stopped listing (it sends no resolved notification for a silenced alert), then
    escalate, re-post or end escalated copies as `escalation_step` decides."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        alertmanager: Alertmanager,
        settings: AlertSettings,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pool = pool
        self.alertmanager = alertmanager
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        # Open alerts Alertmanager did not list, and since when (resolved after a grace: a
        # restarted Alertmanager lists nothing until Prometheus sends its alerts again).
        self.missing_since: dict[int, datetime] = {}
        self.last_run: float | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> PassResult | None:
        """One pass; None if another instance holds the lock."""
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1)", ESCALATION_LOCK_KEY
            )
            if not locked:
                return None
            rows = await conn.fetch(
                """
                SELECT * FROM alerts.alerts
                WHERE status <> 'resolved'
                   OR (escalated_at IS NOT NULL AND escalation_ended_at IS NULL)
                ORDER BY fired_at LIMIT $1
                FOR NO KEY UPDATE SKIP LOCKED
                """,
                LOOP_BATCH,
            )
            alerts = [decoded(r) for r in rows]
            result = PassResult()
            now = self.clock()
            try:
                result.resolved = await self._reconcile(conn, alerts, now)
            except AlertmanagerError as exc:  # nothing known: nothing resolved
                result.errors.append(str(exc))
                if self.metrics is not None:
                    self.metrics.alertmanager_failures.labels("list").inc()
            await self._escalate(conn, alerts, now, result)
        self.last_run = time.time()
        self.last_error = "; ".join(result.errors) or None
        return result

    async def _reconcile(self, conn: asyncpg.Connection, alerts: list[dict], now: datetime) -> int:
        """Resolves the open alerts Alertmanager has not listed for the grace period, and
        says how many."""
        open_alerts = [a for a in alerts if a["status"] != "resolved"]
        if not open_alerts:
            self.missing_since.clear()
            return 0
        listed = await self.alertmanager.listed_alerts(LOOP_DEADLINE_S)
        resolved = 0
        ids = {a["id"] for a in open_alerts}
        self.missing_since = {k: v for k, v in self.missing_since.items() if k in ids}
        for alert in open_alerts:
            if still_listed(alert, listed):
                self.missing_since.pop(alert["id"], None)
                continue
            since = self.missing_since.setdefault(alert["id"], now)
            if (now - since).total_seconds() < self.settings.resolve_grace_s:
                continue
            details = {"source": "alertmanager", "reason": "no longer listed by Alertmanager"}
            await _resolve(conn, alert["id"], since, now, details, self.metrics)
            alert.update(status="resolved", resolved_at=since)
            del self.missing_since[alert["id"]]
            resolved += 1
            if alert.get("silence_id"):
                # Fired again already (a new start, the same labels): posting this occurrence
                # as resolved would end the live one in Alertmanager.
                refired = any(fingerprint == alert["fingerprint"] for fingerprint, _ in listed)
                await self._end_silence(alert, since, post_resolution=not refired)
        return resolved

    async def _end_silence(
        self, alert: Mapping[str, Any], resolved_at: datetime, *, post_resolution: bool
    ) -> None:
        """An acknowledgement's silence ends with its alert: the same failure firing again
        later is a new incident and must notify. The silence held back the resolved
        notification, so the occurrence is posted again as resolved for Alertmanager to send
        it (see resolved_occurrence), unless the same alert fires again already. Best effort:
        the silence expires anyway."""
        try:
            await self.alertmanager.expire_silence(alert["silence_id"], LOOP_DEADLINE_S)
        except AlertmanagerError as exc:
            log.warning(
                "silence %s of alert %s not expired: %s", alert["silence_id"], alert["id"], exc
            )
            if self.metrics is not None:
                self.metrics.alertmanager_failures.labels("expire").inc()
            return
        if not post_resolution:
            return
        try:
            await self.alertmanager.post_alerts(
                [resolved_occurrence(alert, resolved_at)], LOOP_DEADLINE_S
            )
        except AlertmanagerError as exc:
            log.warning("resolution of alert %s not posted: %s", alert["id"], exc)
            if self.metrics is not None:
                self.metrics.alertmanager_failures.labels("alerts").inc()

    async def _escalate(
        self,
        conn: asyncpg.Connection,
        alerts: list[dict[str, Any]],
        now: datetime,
        result: PassResult,
    ) -> None:
        steps = [(a, escalation_step(a, now, self.settings.escalate_after_s)) for a in alerts]
        active = [(a, s) for a, s in steps if s in (Escalation.START, Escalation.REPOST)]
        ending = [a for a, s in steps if s == Escalation.END]
        hold = self.settings.escalation_hold_s
        if active:
            try:
                copies = [escalated_copy(a, now, hold) for a, _ in active]
                await self.alertmanager.post_alerts(copies, LOOP_DEADLINE_S)
            except AlertmanagerError as exc:
                result.errors.append(str(exc))
                if self.metrics is not None:
                    self.metrics.alertmanager_failures.labels("alerts").inc()
            else:
                for alert, step in active:
                    if step == Escalation.REPOST:
                        result.reposted += 1
                        continue
                    await self._started(conn, alert, now)
                    result.escalated += 1
        if ending and await _end_escalations(
            conn, self.alertmanager, ending, now, LOOP_DEADLINE_S, self.metrics
        ):
            result.ended += len(ending)

    async def _started(self, conn: asyncpg.Connection, alert: Mapping[str, Any], now: datetime):
        await conn.execute(
            "UPDATE alerts.alerts SET escalated_at = $2, updated_at = $2 WHERE id = $1",
            alert["id"],
            now,
        )
        waited = round((now - alert["fired_at"]).total_seconds(), 3)
        details = {
            "label": f"{ESCALATION_LABEL}={ESCALATION_VALUE}",
            "unacknowledged_s": str(waited),
        }
        await add_event(
            conn, alert["id"], EventKind.ESCALATED, now, details=details, metrics=self.metrics
        )
        log.warning(
            "escalated alert %s (%s) after %.0f s unacknowledged",
            alert["id"],
            alert["alertname"],
            waited,
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("escalation pass skipped, PostgreSQL unavailable: %s", exc)
            except Exception as exc:  # a bug: log it, keep the loop alive
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("escalation pass failed")
            await asyncio.sleep(self.settings.escalation_check_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts-escalation")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task.cancel():
            await asyncio.wait([task])  # until it has stopped, without its CancelledError

    def health(self) -> dict[str, Any]:
        return {
            "escalation": {
                "alertmanager": self.alertmanager.base_url,
                "last_run_age_s": None
                if self.last_run is None
                else round(time.time() - self.last_run, 1),
                "last_error": self.last_error,
            }
        }
