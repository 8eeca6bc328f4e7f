"""Alert tracking end to end: Alertmanager's webhook notifications recorded by the alerts
service, escalation of what nobody acknowledged (a copy labelled escalation="second" posted to
Alertmanager), acknowledgement as a silence (API and `gekko alerts ack`), resolution, each
alert's history with how long every step took, and who may do what.

Alertmanager is the run's double (conftest.alertmanager): it records what the service posts
and lists the alerts a test says Prometheus is sending. The module runs its own alerts instance
in place of the stack's, escalating after 2 s, looking every 0.5 s."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from gekko.security.rbac import Role

from .alertmanager_double import AlertmanagerDouble, fingerprint
from .conftest import LOOPBACK, OPS, Stack, as_role, eventually, gekko_cmd, new_user

pytestmark = pytest.mark.integration

SETTINGS = {
    "GEKKO_ALERT_ESCALATE_AFTER_S": "2",
    "GEKKO_ALERT_ESCALATION_CHECK_S": "0.5",
    "GEKKO_ALERT_RESOLVE_GRACE_S": "2",
    "GEKKO_INSTANCE_ID": "alerts-it",
}
VIEWER = as_role(Role.VIEWER, user_id=990_600)
TRADER = as_role(Role.TRADER, user_id=990_601)
# Anonymous calls from an address of their own (the per-address limit of anonymous calls).
ANONYMOUS_SOURCE = "127.0.0.78"


@dataclass
class AlertsService:
    url: str
    env: dict[str, str]
    api: str
    sent: list[dict[str, Any]] = field(default_factory=list)  # every alert a test made

    def notify(self, receiver: str, *alerts: dict[str, Any]) -> httpx.Response:
        """Alertmanager's webhook notification to `receiver`, with these alerts."""
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
        payload = {
            "version": "4",
            "groupKey": '{}:{alertname="' + alerts[0]["labels"]["alertname"] + '"}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": receiver,
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": list(alerts),
        }
        return httpx.post(f"{self.url}/alertmanager/webhook", json=payload, timeout=10)

    def firing(self, name: str, severity: str = "critical") -> dict[str, Any]:
        labels = {
            "alertname": name,
            "severity": severity,
            "team": "platform",
            "instance": f"it-{secrets.token_hex(4)}",
        }
        alert = {
            "status": "firing",
            "labels": labels,
            "annotations": {
                "summary": f"{name} in the integration tests",
                "runbook_url": f"https://gekko.example/docs/runbooks/{name}.md",
            },
            "startsAt": _rfc3339(datetime.now(UTC)),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up",
            "fingerprint": fingerprint(labels),
        }
        self.sent.append(alert)
        return alert

    def id_of(self, alert: dict[str, Any]) -> int:
        listed = httpx.get(self.api, params={"limit": 500}, headers=VIEWER).json()["alerts"]
        return next(a["id"] for a in listed if a["fingerprint"] == alert["fingerprint"])

    def get(self, alert_id: int) -> dict[str, Any]:
        answer = httpx.get(f"{self.api}/{alert_id}", headers=VIEWER)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def resolved(alert: dict[str, Any]) -> dict[str, Any]:
    return dict(alert, status="resolved", endsAt=_rfc3339(datetime.now(UTC)))


def escalation_of(alert: dict[str, Any]) -> dict[str, str]:
    return {**alert["labels"], "escalation": "second"}


def _routes_only(stack: Stack, instance: str) -> bool:
    listed = httpx.get(f"{stack.gateway}/services", headers=OPS).json()["services"]["alerts"]
    return [(i["instance_id"], i["health"]) for i in listed] == [(instance, "ok")]


@pytest.fixture(scope="module")
def alerts(stack: Stack, alertmanager: AlertmanagerDouble) -> Iterator[AlertsService]:
    stack.stop("alerts")
    port = stack.start("alerts", "alerts", **SETTINGS)
    service = AlertsService(
        url=f"http://{LOOPBACK}:{port}",
        env=dict(stack.env, GEKKO_PORT=str(port), **SETTINGS),
        api=f"{stack.gateway}/api/v1/alerts",
    )
    try:
        eventually(
            lambda: httpx.get(f"{service.url}/health").status_code == 200, 30, "alerts healthy"
        )
        eventually(lambda: _routes_only(stack, "alerts-it"), 15, "the gateway routing to it")
        yield service
    finally:
        # Nothing left open for later tests (the API fuzzing acknowledges random ids).
        for alert in service.sent:
            alertmanager.drop(alert["labels"])
            service.notify("cleanup", resolved(alert))
        open_alerts = (
            "SELECT count(*) AS n FROM alerts.alerts WHERE status <> 'resolved' "
            "OR (escalated_at IS NOT NULL AND escalation_ended_at IS NULL)"
        )
        eventually(lambda: stack.postgres.fetch(open_alerts)[0]["n"] == 0, 15, "alerts closed")
        stack.stop("alerts")
        port = stack.start("alerts", "alerts")
        eventually(lambda: _routes_only(stack, f"alerts-{port}"), 30, "the stack's alerts back")


@pytest.fixture(scope="module")
def operator(stack: Stack) -> tuple[dict[str, str], str]:
    """An operator with a user name the alerts service has learnt (from user.registered)."""
    name = f"op{secrets.token_hex(4)}"
    _, user_id = new_user(stack.gateway, name=name)
    eventually(
        lambda: stack.postgres.fetch("SELECT 1 FROM alerts.users WHERE user_id = $1", user_id),
        15,
        "the operator's name in the alerts service's directory",
    )
    return as_role(Role.OPERATOR, user_id=user_id), name


def acknowledge(service: AlertsService, alert_id: int, headers: dict, comment: str = "on it"):
    return httpx.post(
        f"{service.api}/{alert_id}/acknowledge", json={"comment": comment}, headers=headers
    )


def test_an_unacknowledged_critical_alert_is_escalated_until_acknowledged_then_resolved(
    alerts: AlertsService, alertmanager: AlertmanagerDouble, operator
):
    op, op_name = operator
    alert = alerts.firing("GekkoItInstanceDown")
    alertmanager.hold(alert["labels"], alert["startsAt"])
    for receiver in ("email", "slack"):
        answer = alerts.notify(receiver, alert)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"recorded": 1, "ignored": 0}

    firing = httpx.get(alerts.api, params={"status": "firing"}, headers=VIEWER)
    assert firing.status_code == 200, firing.text
    [listed] = [a for a in firing.json()["alerts"] if a["fingerprint"] == alert["fingerprint"]]
    assert listed["labels"] == alert["labels"] and listed["severity"] == "critical"
    assert listed["runbook_url"] == alert["annotations"]["runbook_url"]
    alert_id = listed["id"]

    # Nobody acknowledges: after 2 s a copy labelled escalation="second" reaches Alertmanager,
    # and again at each look while that lasts.
    escalation = escalation_of(alert)
    eventually(
        lambda: len([p for p in alertmanager.posts_for(escalation) if p.active]) >= 2,
        15,
        "the escalated copy posted, then again",
    )
    copy = alertmanager.posts_for(escalation)[0].alert
    # Its alert's id is a label too: each occurrence's copy is an alert of its own.
    assert copy["labels"] == {**escalation, "gekko_alert_id": str(alert_id)}
    assert copy["annotations"]["gekko_alert_id"] == str(alert_id)
    assert copy["annotations"]["runbook_url"] == alert["annotations"]["runbook_url"]
    assert alerts.get(alert_id)["escalated_at"] is not None
    # Alertmanager's second receiver gets the copy: a step of the original alert.
    notified = alerts.notify(
        "pager",
        dict(alert, labels=copy["labels"], annotations=copy["annotations"], fingerprint="c0"),
    )
    assert notified.json() == {"recorded": 1, "ignored": 0}

    ack = acknowledge(alerts, alert_id, op, "restarting trading")
    assert ack.status_code == 200, ack.text
    body = ack.json()
    assert (body["status"], body["acknowledged_by"]) == ("acknowledged", op_name)
    [silence] = alertmanager.silences_by(op_name)
    assert silence["matchers"] == [
        {"name": name, "value": value, "isRegex": False, "isEqual": True}
        for name, value in sorted(alert["labels"].items())
    ]
    assert silence["comment"] == "restarting trading"
    assert body["silence_id"] == silence["id"]
    lasts = datetime.fromisoformat(silence["endsAt"]) - datetime.fromisoformat(silence["startsAt"])
    assert lasts.total_seconds() == 4 * 3600  # GEKKO_ALERT_ACK_SILENCE_S's default
    # The escalated copy was ended, and is not posted again.
    posts = alertmanager.posts_for(escalation)
    assert not posts[-1].active
    time.sleep(1.5)
    assert len(alertmanager.posts_for(escalation)) == len(posts)

    twice = acknowledge(alerts, alert_id, op)
    assert twice.status_code == 409
    assert twice.headers["content-type"] == "application/problem+json"
    assert op_name in twice.json()["detail"]

    alertmanager.drop(alert["labels"])
    assert alerts.notify("email", resolved(alert)).status_code == 200
    detail = alerts.get(alert_id)
    assert detail["status"] == "resolved" and detail["resolved_at"] is not None
    history = detail["history"]
    assert [(e["kind"], e["receiver"]) for e in history] == [
        ("fired", None),
        ("notified", "email"),
        ("notified", "slack"),
        ("escalated", None),
        ("notified", "pager"),
        ("acknowledged", None),
        ("escalation_ended", None),
        ("resolved", None),
        ("notified", "email"),
    ]
    acked = history[5]
    assert (acked["by"], acked["comment"]) == (op_name, "restarting trading")
    assert acked["silence_id"] == silence["id"]
    assert history[4]["details"] == {"status": "firing", "escalation": "second"}
    seconds = [e["seconds_since_fired"] for e in history]
    assert seconds == sorted(seconds) and seconds[0] == 0
    steps = detail["steps"]
    assert 0 <= steps["to_notify_s"] < 2 <= steps["to_escalate_s"]
    assert steps["to_escalate_s"] <= steps["to_acknowledge_s"] <= steps["to_resolve_s"]

    assert acknowledge(alerts, alert_id, op).status_code == 409  # resolved
    shown = subprocess.run(
        gekko_cmd("alerts", "show", str(alert_id)),
        env=alerts.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"acknowledged by {op_name}: restarting trading" in shown.stdout
    assert "escalated" in shown.stdout and "receiver=pager" in shown.stdout
    assert "took: to notify" in shown.stdout


def test_an_alert_acknowledged_in_time_is_never_escalated_nor_a_warning(
    alerts: AlertsService, alertmanager: AlertmanagerDouble, operator
):
    op, _ = operator
    critical = alerts.firing("GekkoItLatency")
    warning = alerts.firing("GekkoItDiskSlow", severity="warning")
    for alert in (critical, warning):
        alertmanager.hold(alert["labels"], alert["startsAt"])
    assert alerts.notify("email", critical, warning).json() == {"recorded": 2, "ignored": 0}
    critical_id = alerts.id_of(critical)
    assert acknowledge(alerts, critical_id, op).status_code == 200
    time.sleep(3.5)  # past the 2 s, several looks
    assert alertmanager.posts_for(escalation_of(critical)) == []
    assert alertmanager.posts_for(escalation_of(warning)) == []
    assert alerts.get(critical_id)["escalated_at"] is None

    # Alertmanager sends no resolved notification for a silenced alert: once it stops listing
    # the alert (for the 2 s grace), the service records the resolution itself.
    alertmanager.drop(critical["labels"])
    detail = eventually(
        lambda: (d := alerts.get(critical_id))["status"] == "resolved" and d,
        10,
        "the silenced alert resolved",
    )
    assert detail["history"][-1]["kind"] == "resolved"
    assert detail["history"][-1]["details"]["source"] == "alertmanager"
    assert detail["steps"]["to_acknowledge_s"] <= detail["steps"]["to_resolve_s"]
    # The acknowledgement's silence ends with the alert: the same failure later notifies again.
    eventually(lambda: detail["silence_id"] in alertmanager.expired, 10, "the silence expired")
    # ... and the occurrence is posted back as resolved, with the alert's own labels, for
    # Alertmanager to send the resolution the silence held back.
    ended = eventually(
        lambda: [p for p in alertmanager.posts_for(critical["labels"]) if not p.active],
        10,
        "the resolution posted back",
    )
    assert ended[0].labels == critical["labels"]


def test_an_acknowledged_alert_that_fires_again_is_not_posted_back_as_resolved(
    alerts: AlertsService, alertmanager: AlertmanagerDouble, operator
):
    op, _ = operator
    first = alerts.firing("GekkoItFlapping")
    alertmanager.hold(first["labels"], first["startsAt"])
    alerts.notify("email", first)
    first_id = alerts.id_of(first)
    silence_id = acknowledge(alerts, first_id, op).json()["silence_id"]
    # It resolves and fires again at once: Alertmanager lists the same labels, a new start.
    again = _rfc3339(datetime.now(UTC) + timedelta(seconds=1))
    alertmanager.hold(first["labels"], again)
    eventually(lambda: alerts.get(first_id)["status"] == "resolved", 10, "the first resolved")
    eventually(lambda: silence_id in alertmanager.expired, 10, "its silence expired")
    time.sleep(1.5)  # a few more looks
    # Posting the first as resolved would end the live one in Alertmanager.
    assert [p for p in alertmanager.posts_for(first["labels"]) if not p.active] == []
    alertmanager.drop(first["labels"])


def test_nothing_is_recorded_when_alertmanager_refuses_the_silence(
    alerts: AlertsService, alertmanager: AlertmanagerDouble, operator
):
    op, _ = operator
    alert = alerts.firing("GekkoItOutage", severity="warning")
    alertmanager.hold(alert["labels"], alert["startsAt"])
    alerts.notify("email", alert)
    alert_id = alerts.id_of(alert)
    alertmanager.failing = True
    try:
        refused = acknowledge(alerts, alert_id, op)
    finally:
        alertmanager.failing = False
    assert refused.status_code == 502, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    detail = alerts.get(alert_id)
    assert detail["status"] == "firing"
    assert "acknowledged" not in [e["kind"] for e in detail["history"]]
    assert acknowledge(alerts, alert_id, op).status_code == 200


def test_the_cli_acknowledges_in_the_name_given(
    alerts: AlertsService, alertmanager: AlertmanagerDouble
):
    alert = alerts.firing("GekkoItCertExpiry", severity="warning")
    alertmanager.hold(alert["labels"], alert["startsAt"])
    alerts.notify("email", alert)
    alert_id = alerts.id_of(alert)

    def gekko(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            gekko_cmd("alerts", *args), env=alerts.env, capture_output=True, text=True, timeout=60
        )

    listed = gekko("list", "--status", "firing")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == [str(alert_id), "firing"] for line in listed.stdout.splitlines())
    done = gekko("ack", str(alert_id), "--by", "alice", "--comment", "renewing the certificate")
    assert done.returncode == 0, done.stderr
    assert f"alert {alert_id} (GekkoItCertExpiry) acknowledged by alice" in done.stdout
    [silence] = alertmanager.silences_by("alice")
    assert silence["comment"] == "renewing the certificate"
    assert {m["name"]: m["value"] for m in silence["matchers"]} == alert["labels"]
    detail = alerts.get(alert_id)
    assert (detail["acknowledged_by"], detail["silence_id"]) == ("alice", silence["id"])
    assert detail["history"][-1]["details"] == {"via": "cli"}

    again = gekko("ack", str(alert_id), "--by", "bob", "--comment", "me too")
    assert again.returncode == 1 and "was acknowledged by alice" in again.stderr
    unknown = gekko("ack", "999999999", "--by", "bob", "--comment", "x")
    assert unknown.returncode == 1 and "no alert 999999999" in unknown.stderr
    blank = gekko("ack", str(alert_id), "--by", " ", "--comment", "x")
    assert blank.returncode == 2


def test_who_may_read_and_acknowledge(alerts: AlertsService, alertmanager, operator):
    alert = alerts.firing("GekkoItRbac", severity="warning")
    alertmanager.hold(alert["labels"], alert["startsAt"])
    alerts.notify("email", alert)
    alert_id = alerts.id_of(alert)
    reads = [alerts.api, f"{alerts.api}/{alert_id}"]
    ack_url = f"{alerts.api}/{alert_id}/acknowledge"
    anonymous = httpx.Client(transport=httpx.HTTPTransport(local_address=ANONYMOUS_SOURCE))
    with anonymous:
        for url in reads:
            assert anonymous.get(url).status_code == 401
            assert httpx.get(url, headers=TRADER).status_code == 403
            assert httpx.get(url, headers=VIEWER).status_code == 200
        body = {"comment": "mine"}
        assert anonymous.post(ack_url, json=body).status_code == 401
    for who in (TRADER, VIEWER):
        refused = httpx.post(ack_url, json=body, headers=who)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
    # An operator without a second factor in the session is refused too (MFA for operators).
    op, _ = operator
    no_mfa = as_role(Role.OPERATOR, user_id=990_602, mfa=False)
    assert httpx.post(ack_url, json=body, headers=no_mfa).status_code == 403
    assert httpx.post(ack_url, json={"comment": " "}, headers=op).status_code == 422
    assert httpx.post(ack_url, json=body, headers=op).status_code == 200
    assert (
        httpx.post(f"{alerts.api}/999999999/acknowledge", json=body, headers=op).status_code == 404
    )
    assert httpx.get(alerts.api, params={"status": "open"}, headers=VIEWER).status_code == 422


def test_the_webhook_takes_only_alertmanagers_notifications(
    stack: Stack, alerts: AlertsService, alertmanager
):
    bad = httpx.post(f"{alerts.url}/alertmanager/webhook", json={"receiver": "email"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    alert = alerts.firing("GekkoItForged")
    # Through the gateway (dot segments that its HTTP client resolves): refused as forwarded.
    forged = {"version": "4", "receiver": "x", "status": "firing", "alerts": [alert]}
    sneaky = httpx.post(
        f"{stack.gateway}/api/v1/alerts/%2e%2e/%2e%2e/%2e%2e/alertmanager/webhook",
        json=forged,
        headers=VIEWER,
    )
    assert sneaky.status_code in (403, 404), sneaky.text
    rows = stack.postgres.fetch(
        "SELECT 1 FROM alerts.alerts WHERE fingerprint = $1", alert["fingerprint"]
    )
    assert rows == []
    # An escalated copy of no alert the service knows is not recorded.
    stray = dict(alert, labels=escalation_of(alert), fingerprint="c1")
    assert alerts.notify("pager", stray).json() == {"recorded": 0, "ignored": 1}


def test_the_history_is_append_only(stack: Stack, alerts: AlertsService):
    for statement in (
        "UPDATE alerts.alert_events SET comment = 'rewritten'",
        "DELETE FROM alerts.alert_events",
        "TRUNCATE alerts.alert_events CASCADE",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            stack.postgres.fetch(statement)
