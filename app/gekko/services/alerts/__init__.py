"""alerts: escalation and acknowledgement tracking for Alertmanager's alerts.

Alertmanager (API v2) routes and notifies, but neither escalates what nobody acknowledged nor
keeps a history. This service adds both:

- every receiver in Alertmanager's configuration also has a webhook_config to this service's
  POST /alertmanager/webhook, so each notification is recorded: the alert when it first fires,
  whom each notification reached, its resolution (gekko.services.alerts.tracking);
- a critical alert firing unacknowledged for GEKKO_ALERT_ESCALATE_AFTER_S is posted back to
  Alertmanager as a copy labelled escalation="second", which its routing tree sends to the
  second receiver, until the alert is acknowledged or resolved;
- acknowledging (POST /api/v1/alerts/{id}/acknowledge, or `gekko alerts ack`) creates a silence
  matching the alert's labels, which stops the notifications and the escalation;
- GET /api/v1/alerts and /api/v1/alerts/{id} show the alerts and each one's history, with how
  long every step took. `gekko alerts list|show|ack` do the same in the service's container.

Settings: gekko.services.alerts.settings. Tables: alerts.* (migration 0007_alerts).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gekko import events as ev
from gekko.services.alerts.alertmanager import Alertmanager
from gekko.services.alerts.api import ACCESS, PREFIX, router, webhook_router
from gekko.services.alerts.settings import AlertSettings, load_alert_settings
from gekko.services.alerts.tracking import AlertMetrics, EscalationLoop
from gekko.services.wiring import start_consumer, stop_all

__all__ = ["ACCESS", "PREFIX", "configure", "health_details", "router", "start", "stop"]

CONSUMER = "alerts"


def alertmanager_client(settings: AlertSettings, tls: Any = None) -> Alertmanager:
    """The client of the configured Alertmanager; over https, with the host's certificate
    from the internal CA where there is one (`tls`: gekko.config.TlsFiles)."""
    context = None
    if tls is not None and settings.alertmanager_url.startswith("https://"):
        from gekko.tls import client_context

        context = client_context(tls)
    return Alertmanager(settings.alertmanager_url, ssl_context=context)


def configure(app: FastAPI) -> None:
    """Before the port is bound: the service's settings, and the webhook, which is not part
    of the API (no token, no gateway) and so is not in ACCESS, like /health."""
    app.state.alert_settings = load_alert_settings()
    app.state.alert_metrics = AlertMetrics(app.state.metrics_registry)
    app.include_router(webhook_router)


async def start(app: FastAPI) -> None:
    settings: AlertSettings = app.state.alert_settings
    app.state.alertmanager = alertmanager_client(settings, app.state.settings.tls)
    loop = EscalationLoop(app.state.pool, app.state.alertmanager, settings, app.state.alert_metrics)
    app.state.escalation = loop
    loop.start()
    pool = app.state.pool

    # Who acknowledged is shown by name: user names from user.registered, kept here so the
    # service reads no other service's tables. Storing one twice changes nothing.
    async def on_registered(event: ev.Event) -> None:
        await pool.execute(
            "INSERT INTO alerts.users (user_id, username) VALUES ($1, $2) "
            "ON CONFLICT (user_id) DO UPDATE SET username = EXCLUDED.username",
            int(event.payload["user_id"]),
            str(event.payload["username"]),
        )

    start_consumer(app, CONSUMER, ["users"], {ev.USER_REGISTERED: on_registered})


async def stop(app: FastAPI) -> None:
    await app.state.escalation.stop()
    await stop_all(app)
    await app.state.alertmanager.close()


def health_details(app: FastAPI) -> dict[str, Any]:
    loop = getattr(app.state, "escalation", None)
    return loop.health() if loop is not None else {}
