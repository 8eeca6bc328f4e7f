"""The alert path end to end: a service stops, Prometheus fires InstanceDown, Alertmanager
notifies by email, Slack and webhook (each with the runbook link), the alerts service escalates
what nobody acknowledged and not what someone did, and records the resolution once the service
is back, acknowledged or not.

The receivers are real servers on loopback, where inventories/local points Alertmanager: an SMTP
sink (aiosmtpd) on 2525 and a Slack-format and webhook sink on 9097. InstanceDown fires after its
`for` (1 minute); local escalates after 30 s (gekko_alert_escalate_after_s).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import httpx
import pytest
from aiosmtpd.controller import Controller

from .conftest import PROMETHEUS, wait_until

RUNBOOK = "https://gekko.example.com/runbooks/InstanceDown.md"
ALERTMANAGER = "http://127.0.0.1:9093"
NOTIFICATION_LOG = Path("/var/lib/gekko/alertmanager/nflog")
UNACKED, ACKED = "gamification", "social"


class Inbox:
    """What the receivers got: emails (to, text) and HTTP posts (path, JSON)."""

    def __init__(self) -> None:
        self.emails: list[tuple[list[str], str]] = []
        self.posts: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = message_from_bytes(envelope.original_content)
        parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
        text = parts[0].get_payload(decode=True).decode() if parts else ""
        with self.lock:
            self.emails.append((list(envelope.rcpt_tos), message["Subject"] + "\n" + text))
        return "250 OK"

    def emails_to(self, address: str, mentioning: str) -> list[str]:
        with self.lock:
            return [t for to, t in self.emails if address in to and mentioning in t]

    def posts_to(self, path: str, service: str) -> list[dict]:
        with self.lock:
            return [b for p, b in self.posts if p == path and service in json.dumps(b)]


def forget_earlier_notifications() -> None:
    """Alertmanager starts with an empty notification log. A run that failed and closed its
    receivers before the resolutions came leaves its alerts recorded as notified firing; the
    same alerts (same labels) firing again would then reach no receiver before the repeat
    interval (4 h). Stopped first: Alertmanager writes the log out as it stops."""
    alertmanager = docker.from_env().containers.get("gekko-alertmanager")
    alertmanager.stop(timeout=10)
    NOTIFICATION_LOG.unlink(missing_ok=True)
    alertmanager.start()
    wait_until(
        lambda: httpx.get(f"{ALERTMANAGER}/-/ready", timeout=5).status_code == 200,
        "Alertmanager ready",
        60,
        1,
    )


@pytest.fixture(scope="module")
def inbox():
    forget_earlier_notifications()
    box = Inbox()
    smtp = Controller(box, hostname="127.0.0.1", port=2525)
    smtp.start()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with box.lock:
                box.posts.append((self.path, json.loads(body or b"{}")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 9097), Sink)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield box
    http.shutdown()
    http.server_close()
    smtp.stop()


def alert_of(gateway, headers, service: str, since: datetime, status: str | None = None):
    """The InstanceDown alert of `service` that fired after `since` (earlier runs' are kept)."""
    params = {"status": status} if status else {}
    listed = gateway.get("/api/v1/alerts", params=params, headers=headers)
    assert listed.status_code == 200, listed.text
    for alert in listed.json()["alerts"]:
        if (
            alert["alertname"] == "InstanceDown"
            and alert["labels"].get("service") == service
            and datetime.fromisoformat(alert["fired_at"]) >= since
        ):
            return alert
    return None


def test_a_stopped_service_alerts_escalates_unless_acknowledged_and_resolves(gateway, admin, inbox):
    # A clean start: no InstanceDown of these services still active from an earlier run.
    wait_until(
        lambda: (
            not httpx.get(
                f"{PROMETHEUS}/api/v1/query",
                params={
                    "query": f'ALERTS{{alertname="InstanceDown",service=~"{UNACKED}|{ACKED}"}}'
                },
                timeout=10,
            ).json()["data"]["result"]
        ),
        "no InstanceDown left from before",
        120,
        2,
    )

    # ... and none still open in the alerts service (an acknowledged one resolves after the
    # grace; until then its silence would mute this run's).
    def still_open():
        return [
            alert
            for status in ("firing", "acknowledged")
            for alert in gateway.get(
                "/api/v1/alerts", params={"status": status}, headers=admin
            ).json()["alerts"]
            if alert["alertname"] == "InstanceDown"
            and alert["labels"].get("service") in (UNACKED, ACKED)
        ]

    wait_until(lambda: not still_open(), "no open InstanceDown from before", 240, 3)
    engine = docker.from_env()
    stopped = [engine.containers.get(f"gekko-{name}") for name in (UNACKED, ACKED)]
    began, since = time.monotonic(), datetime.now(UTC) - timedelta(seconds=5)
    for container in stopped:
        container.stop(timeout=5)
    try:
        # InstanceDown fires after its minute; Alertmanager tells the alerts service as it
        # notifies the receivers.
        acked = wait_until(
            lambda: alert_of(gateway, admin, ACKED, since, "firing"),
            "InstanceDown for social",
            150,
            2,
        )
        fired_after = time.monotonic() - began
        ack = gateway.post(
            f"/api/v1/alerts/{acked['id']}/acknowledge",
            json={"comment": "e2e: restarting it"},
            headers=admin,
        )
        assert ack.status_code == 200, ack.text
        assert ack.json()["acknowledged_by"] == "admin" and ack.json()["silence_id"]

        # The on-call receiver got the unacknowledged alert three ways, each with the runbook.
        wait_until(lambda: inbox.emails_to("oncall@gekko.local", UNACKED), "the email", 60, 1)
        assert RUNBOOK in inbox.emails_to("oncall@gekko.local", UNACKED)[0]
        slack = wait_until(lambda: inbox.posts_to("/slack/oncall", UNACKED), "Slack", 30, 1)
        attachment = slack[0]["attachments"][0]
        assert RUNBOOK in attachment["text"] and attachment["title_link"] == RUNBOOK
        hook = wait_until(lambda: inbox.posts_to("/webhook/oncall", UNACKED), "webhook", 30, 1)
        assert hook[0]["alerts"][0]["annotations"]["runbook_url"] == RUNBOOK

        # Nobody acknowledged gamification's: 30 s later a copy goes to the second receiver
        # (an earlier run's copies may still be active: this alert's carries its id).
        unacked = alert_of(gateway, admin, UNACKED, since, "firing")
        assert unacked, "gamification's alert is firing"

        def copies_of_this_alert():
            return [
                post
                for post in inbox.posts_to("/webhook/escalation", UNACKED)
                if any(
                    a["annotations"].get("gekko_alert_id") == str(unacked["id"])
                    for a in post["alerts"]
                )
            ]

        escalated = wait_until(copies_of_this_alert, "the escalation", 120, 2)
        assert escalated[0]["alerts"][0]["labels"]["escalation"] == "second"
        assert inbox.emails_to("escalation@gekko.local", UNACKED)
        # ... and the acknowledged one never does.
        assert not inbox.posts_to("/webhook/escalation", ACKED)
        assert not inbox.emails_to("escalation@gekko.local", ACKED)
    finally:
        for container in stopped:
            container.start()
    for container in stopped:
        wait_until(
            lambda c=container: (
                (c.reload() or c.attrs["State"].get("Health", {}).get("Status")) == "healthy"
            ),
            f"{container.name} healthy again",
            90,
            2,
        )
    # Resolution reaches the history with how long each step took.
    resolved = wait_until(
        lambda: alert_of(gateway, admin, UNACKED, since, "resolved"), "the resolution", 120, 2
    )
    assert resolved["id"] == unacked["id"]
    history = gateway.get(f"/api/v1/alerts/{resolved['id']}", headers=admin).json()
    kinds = [event["kind"] for event in history["history"]]
    # (the resolved notification itself is a last "notified" step)
    assert kinds[0] == "fired" and kinds.index("escalated") < kinds.index("resolved"), kinds
    notified = {e["receiver"] for e in history["history"] if e["kind"] == "notified"}
    assert {"oncall", "escalation"} <= notified, notified
    steps = history["steps"]
    assert 0 <= steps["to_notify_s"] <= steps["to_escalate_s"] <= steps["to_resolve_s"], steps
    assert not alert_of(gateway, admin, ACKED, since)["escalated_at"]

    # On-call hears of both resolutions, the acknowledged one's too once its silence has ended
    # (otherwise Alertmanager would count it as still notified, and its next occurrence would
    # page nobody until the repeat interval).
    def resolved_posts(service):
        return [p for p in inbox.posts_to("/webhook/oncall", service) if p["status"] == "resolved"]

    wait_until(lambda: resolved_posts(UNACKED), "gamification's resolution at on-call", 90, 2)
    wait_until(lambda: resolved_posts(ACKED), "social's resolution at on-call", 240, 2)
    # ... and the second receiver of the escalation's end.
    wait_until(
        lambda: [p for p in copies_of_this_alert() if p["status"] == "resolved"],
        "the escalation's end at the second receiver",
        120,
        2,
    )
    print(f"fired {fired_after:.0f}s after the stop; steps {steps}")
