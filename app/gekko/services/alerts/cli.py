"""`gekko alerts list|show|ack` (arguments in gekko.cli): the alerts service's records from
its container (the same environment: GEKKO_DATABASE_URL, GEKKO_ALERTMANAGER_URL, the TLS
files). `ack` acknowledges as the API does (gekko.services.alerts.tracking.acknowledge), in the
name given with --by."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gekko.config import ConfigError, database_url_from_env, parse_tls
from gekko.services.alerts import alertmanager_client, tracking
from gekko.services.alerts.alertmanager import AlertmanagerError
from gekko.services.alerts.model import (
    AlertHistoryOut,
    AlertOut,
    alert_out,
    history_out,
)
from gekko.services.alerts.settings import AlertSettings, load_alert_settings

PROG = "gekko alerts"


def run(args: argparse.Namespace) -> int:
    """Exit 0 when done, 1 when the alert is unknown, in the wrong state or Alertmanager
    refused, 2 on a configuration or usage error."""
    try:
        database_url = database_url_from_env()
        settings = load_alert_settings()
        tls = parse_tls(os.environ) if args.action == "ack" else None
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    if args.action == "list" and not 1 <= args.limit <= 500:
        return _fail("--limit must be from 1 to 500", 2)
    if args.action == "ack" and not (args.by.strip() and args.comment.strip()):
        return _fail("--by and --comment must not be blank", 2)
    if args.action == "ack" and "\x00" in args.by + args.comment:
        return _fail("--by and --comment must not contain NUL characters", 2)
    try:
        return asyncio.run(_with_connection(database_url, lambda c: _act(c, args, settings, tls)))
    except tracking.AlertNotFoundError as exc:
        return _fail(str(exc), 1)
    except tracking.AlertStateError as exc:
        return _fail(str(exc), 1)
    except AlertmanagerError as exc:
        return _fail(f"the silence was not created, nothing was recorded: {exc}", 1)
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"the database cannot be reached: {exc}", 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


async def _with_connection(
    database_url: str, act: Callable[[asyncpg.Connection], Awaitable[int]]
) -> int:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await act(conn)
    finally:
        await conn.close()


async def _act(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: AlertSettings, tls: Any
) -> int:
    if args.action == "list":
        alerts = [alert_out(r) for r in await tracking.list_alerts(conn, args.status, args.limit)]
        if args.json:
            print("[" + ",".join(a.model_dump_json() for a in alerts) + "]")
        else:
            print(format_list(alerts, datetime.now(UTC)))
        return 0
    if args.action == "show":
        row, events = await tracking.alert_with_history(conn, args.id)
        detail = history_out(row, events)
        print(detail.model_dump_json(indent=2) if args.json else format_history(detail))
        return 0
    alertmanager = alertmanager_client(settings, tls)
    try:
        row = await tracking.acknowledge(
            conn,
            alertmanager,
            settings,
            args.id,
            args.by.strip(),
            args.comment.strip(),
            details={"via": "cli"},
        )
    finally:
        await alertmanager.close()
    alert = alert_out(row)
    if args.json:
        print(alert.model_dump_json())
    else:
        print(
            f"alert {alert.id} ({alert.alertname}) acknowledged by {alert.acknowledged_by}; "
            f"Alertmanager silence {alert.silence_id}"
        )
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    sign = "-" if seconds < 0 else ""
    minutes, secs = divmod(abs(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s" if minutes else f"{sign}{secs}s"


def _at(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_list(alerts: list[AlertOut], now: datetime) -> str:
    if not alerts:
        return "no alerts"
    header = ("ID", "STATUS", "SEVERITY", "ALERT", "FIRED", "FOR", "ACKNOWLEDGED BY")
    rows = [
        (
            str(a.id),
            a.status + (" (escalated)" if a.escalated_at else ""),
            a.severity or "-",
            a.alertname or "-",
            _at(a.fired_at),
            _duration(((a.resolved_at or now) - a.fired_at).total_seconds()),
            a.acknowledged_by or "-",
        )
        for a in alerts
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def format_history(alert: AlertHistoryOut) -> str:
    labels = " ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    lines = [
        f"alert {alert.id}: {alert.alertname or '-'} ({alert.status})",
        f"  labels:   {labels}",
        f"  runbook:  {alert.runbook_url or '-'}",
        f"  fired:    {_at(alert.fired_at)}",
    ]
    if alert.acknowledged_by:
        lines.append(
            f"  acknowledged by {alert.acknowledged_by}: {alert.ack_comment} "
            f"(silence {alert.silence_id})"
        )
    lines.append("history:")
    for event in alert.history:
        who = " ".join(
            part
            for part in (
                f"receiver={event.receiver}" if event.receiver else "",
                f"by={event.by}" if event.by else "",
                f"silence={event.silence_id}" if event.silence_id else "",
                " ".join(f"{k}={v}" for k, v in sorted(event.details.items())),
                f'"{event.comment}"' if event.comment else "",
            )
            if part
        )
        lines.append(
            f"  {_at(event.at)}  +{_duration(event.seconds_since_fired):>9}  "
            f"{event.kind.value:<16} {who}".rstrip()
        )
    steps = alert.steps
    lines.append(
        f"took: to notify {_duration(steps.to_notify_s)}, to escalate "
        f"{_duration(steps.to_escalate_s)}, to acknowledge {_duration(steps.to_acknowledge_s)}, "
        f"to resolve {_duration(steps.to_resolve_s)}"
    )
    return "\n".join(lines)
