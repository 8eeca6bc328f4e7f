"""The alerts service's pure parts: Alertmanager's webhook payload, an alert's identity, the
escalation decision and what is posted to Alertmanager, step durations, the webhook's callers,
its settings, the Alertmanager client's retries, and the `gekko alerts` output."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gekko.apps import build_app
from gekko.cli import build_parser
from gekko.config import DEFAULT_PORTS, DOMAIN_SERVICES, ConfigError, load_settings
from gekko.services.alerts.alertmanager import Alertmanager, AlertmanagerError
from gekko.services.alerts.api import webhook_source_allowed
from gekko.services.alerts.cli import format_history, format_list
from gekko.services.alerts.model import (
    Escalation,
    WebhookPayload,
    escalated_copy,
    escalation_step,
    history_out,
    resolved_occurrence,
    silence_for,
    step_durations,
    still_listed,
)
from gekko.services.alerts.settings import AlertSettings, load_alert_settings

from .keys import TOKEN_ENV

T0 = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
LABELS = {
    "alertname": "InstanceDown",
    "severity": "critical",
    "team": "platform",
    "instance": "127.0.0.1:8102",
}

# As Alertmanager 0.25 sends it: nanosecond times, Go's zero time for a firing alert's end.
PAYLOAD = {
    "receiver": "email",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": LABELS,
            "annotations": {
                "summary": "trading is down",
                "runbook_url": "https://gekko.example/docs/runbooks/InstanceDown.md",
            },
            "startsAt": "2026-12-03T09:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up+%3D%3D+0",
            "fingerprint": "4e1f6f8f7c4a1b2c",
        }
    ],
    "groupLabels": {"alertname": "InstanceDown"},
    "commonLabels": LABELS,
    "commonAnnotations": {},
    "externalURL": "http://127.0.0.1:9093",
    "version": "4",
    "groupKey": '{}:{alertname="InstanceDown"}',
    "truncatedAlerts": 0,
}


def _payload(**alert_changes) -> dict:
    alert = dict(PAYLOAD["alerts"][0], **alert_changes)
    return dict(PAYLOAD, alerts=[alert])


def test_a_webhook_payload_parses_with_its_identity():
    payload = WebhookPayload.model_validate(PAYLOAD)
    alert = payload.alerts[0]
    assert payload.receiver == "email"
    assert alert.identity == ("4e1f6f8f7c4a1b2c", datetime(2026, 12, 3, 9, 0, 0, 123456, UTC))
    assert alert.ended_at is None  # the zero time of a firing alert
    assert not alert.is_escalated_copy
    resolved = WebhookPayload.model_validate(
        _payload(status="resolved", endsAt="2026-12-03T09:05:00Z")
    )
    assert resolved.alerts[0].ended_at == T0 + timedelta(minutes=5)
    copy = WebhookPayload.model_validate(_payload(labels={**LABELS, "escalation": "second"}))
    assert copy.alerts[0].is_escalated_copy


@pytest.mark.parametrize(
    "payload",
    [
        {k: v for k, v in PAYLOAD.items() if k != "receiver"},
        dict(PAYLOAD, receiver=""),
        dict(PAYLOAD, version="3"),
        dict(PAYLOAD, status="pending"),
        _payload(status="pending"),
        _payload(labels={}),
        _payload(labels={"bad-name": "x"}),
        _payload(labels={"alertname": "a\x00b"}),
        _payload(annotations={"summary": "\x00"}),
        _payload(fingerprint=""),
        _payload(startsAt="yesterday"),
        _payload(startsAt="2026-12-03T09:00:00"),  # no offset
        {k: v for k, v in PAYLOAD.items() if k != "alerts"},
    ],
)
def test_bad_payloads_are_refused(payload):
    with pytest.raises(ValidationError):
        WebhookPayload.model_validate(payload)


def _row(**changes) -> dict:
    row = {
        "id": 7,
        "fingerprint": "4e1f6f8f7c4a1b2c",
        "alertname": "InstanceDown",
        "severity": "critical",
        "team": "platform",
        "status": "firing",
        "labels": dict(LABELS),
        "annotations": {"runbook_url": "https://gekko.example/r.md"},
        "generator_url": "http://127.0.0.1:9090/graph",
        "fired_at": T0,
        "first_seen_at": T0 + timedelta(seconds=30),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "ack_comment": None,
        "silence_id": None,
        "escalated_at": None,
        "escalation_ended_at": None,
        "resolved_at": None,
    }
    row.update(changes)
    return row


LATER = T0 + timedelta(seconds=901)


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [
        ({}, LATER, Escalation.START),
        ({}, T0 + timedelta(seconds=900), None),  # not more than the wait yet
        ({"severity": "warning"}, LATER, None),
        ({"status": "acknowledged"}, LATER, None),
        ({"status": "resolved"}, LATER, None),
        ({"labels": {**LABELS, "escalation": "second"}}, LATER, None),  # a copy
        ({"escalated_at": LATER}, LATER, Escalation.REPOST),
        ({"escalated_at": LATER, "status": "acknowledged"}, LATER, Escalation.END),
        ({"escalated_at": LATER, "status": "resolved"}, LATER, Escalation.END),
        ({"escalated_at": LATER, "status": "resolved", "escalation_ended_at": LATER}, LATER, None),
    ],
)
def test_escalation_step(changes, now, expected):
    assert escalation_step(_row(**changes), now, 900) == expected


def test_the_escalated_copy_carries_the_label_and_the_alert_id():
    copy = escalated_copy(_row(), LATER, 300)
    assert copy["labels"] == {**LABELS, "escalation": "second", "gekko_alert_id": "7"}
    assert copy["annotations"] == {
        "runbook_url": "https://gekko.example/r.md",
        "gekko_alert_id": "7",
    }
    assert copy["startsAt"] == "2026-12-03T09:00:00Z"
    assert copy["endsAt"] == "2026-12-03T09:20:01Z"
    assert copy["generatorURL"] == "http://127.0.0.1:9090/graph"
    ended = escalated_copy(_row(), LATER, 300, end=True)
    assert ended["endsAt"] == "2026-12-03T09:15:01Z"
    # A clock behind the alert's start: Alertmanager refuses an end before the start.
    early = escalated_copy(_row(), T0 - timedelta(seconds=5), 300, end=True)
    assert early["startsAt"] == early["endsAt"]


def test_the_silence_matches_every_label_exactly():
    silence = silence_for(LABELS, "alice", "on it", T0, 4 * 3600)
    assert silence == {
        "matchers": [
            {"name": name, "value": LABELS[name], "isRegex": False, "isEqual": True}
            for name in ("alertname", "instance", "severity", "team")
        ],
        "startsAt": "2026-12-03T09:00:00Z",
        "endsAt": "2026-12-03T13:00:00Z",
        "createdBy": "alice",
        "comment": "on it",
    }


def test_the_resolved_occurrence_is_the_alert_itself_ended():
    # Same labels as Prometheus's alert (so the same fingerprint in Alertmanager), no escalation
    # label, ended when it was resolved.
    ended = resolved_occurrence(_row(), LATER)
    assert ended == {
        "labels": LABELS,
        "annotations": {"runbook_url": "https://gekko.example/r.md"},
        "startsAt": "2026-12-03T09:00:00Z",
        "endsAt": "2026-12-03T09:15:01Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
    }
    early = resolved_occurrence(_row(), T0 - timedelta(seconds=5))
    assert early["startsAt"] == early["endsAt"]


def test_still_listed_matches_fingerprint_and_start():
    alert = _row()
    assert still_listed(alert, [("4e1f6f8f7c4a1b2c", T0 + timedelta(milliseconds=400))])
    assert not still_listed(alert, [("4e1f6f8f7c4a1b2c", T0 + timedelta(minutes=10))])
    assert not still_listed(alert, [("other", T0)])


def _event(kind: str, seconds: float, **fields) -> dict:
    event = {"kind": kind, "at": T0 + timedelta(seconds=seconds), "receiver": None}
    event |= {"actor": None, "comment": None, "silence_id": None, "details": {}}
    return event | fields


HISTORY = [
    _event("fired", 0),
    _event("notified", 31, receiver="email", details={"status": "firing"}),
    _event("notified", 32, receiver="slack", details={"status": "firing"}),
    _event("escalated", 905),
    _event("notified", 936, receiver="pager", details={"status": "firing", "escalation": "second"}),
    _event("acknowledged", 1020, actor="alice", comment="on it", silence_id="s-1"),
    _event("escalation_ended", 1020),
    _event("resolved", 1500),
    _event("notified", 1530, receiver="email", details={"status": "resolved"}),
]


def test_step_durations_measure_each_first_step_from_firing():
    steps = step_durations(T0, ((e["kind"], e["at"], e["details"]) for e in HISTORY))
    assert steps.model_dump() == {
        "to_notify_s": 31.0,
        "to_escalate_s": 905.0,
        "to_acknowledge_s": 1020.0,
        "to_resolve_s": 1500.0,
    }
    # Only a resolution notice: nobody was told it fired.
    only = step_durations(T0, [("notified", T0 + timedelta(seconds=9), {"status": "resolved"})])
    assert only.to_notify_s is None and only.to_resolve_s is None


def test_history_and_its_cli_rendering():
    row = _row(
        status="resolved",
        acknowledged_at=T0 + timedelta(seconds=1020),
        acknowledged_by="alice",
        ack_comment="on it",
        silence_id="s-1",
        escalated_at=T0 + timedelta(seconds=905),
        resolved_at=T0 + timedelta(seconds=1500),
    )
    detail = history_out(row, HISTORY)
    assert detail.runbook_url == "https://gekko.example/r.md"
    assert [e.seconds_since_fired for e in detail.history][:3] == [0.0, 31.0, 32.0]
    text = format_history(detail)
    assert "acknowledged by alice: on it (silence s-1)" in text
    assert "receiver=pager escalation=second status=firing" in text
    assert (
        "took: to notify 31s, to escalate 15m05s, to acknowledge 17m00s, to resolve 25m00s" in text
    )
    listing = format_list([detail], T0 + timedelta(hours=1))
    assert listing.splitlines()[1].split()[:4] == ["7", "resolved", "(escalated)", "critical"]
    assert format_list([], T0) == "no alerts"


@pytest.mark.parametrize(
    ("address", "forwarded", "tls", "allowed"),
    [
        ("127.0.0.1", False, False, True),
        ("127.0.0.53", False, False, True),
        ("::1", False, False, True),
        ("10.0.0.5", False, False, True),  # in GEKKO_ALERT_WEBHOOK_SOURCES
        ("10.0.1.5", False, False, False),
        ("10.0.1.5", False, True, True),  # mutual TLS admitted it
        ("127.0.0.1", True, False, False),  # forwarded by the gateway
        ("127.0.0.1", True, True, False),
        ("testclient", False, False, False),
    ],
)
def test_who_may_post_to_the_webhook(address, forwarded, tls, allowed):
    sources = (ipaddress.ip_network("10.0.0.0/24"),)
    assert webhook_source_allowed(address, forwarded, tls, sources) is allowed


def test_settings_defaults_and_overrides():
    assert load_alert_settings({}) == AlertSettings()
    assert AlertSettings().alertmanager_url == "http://127.0.0.1:9093"
    settings = load_alert_settings(
        {
            "GEKKO_ALERTMANAGER_URL": "https://10.0.0.9:9093/",
            "GEKKO_ALERT_ESCALATION_CHECK_S": "0.5",
            "GEKKO_ALERT_ESCALATE_AFTER_S": "2",
            "GEKKO_ALERT_ACK_SILENCE_S": "60",
            "GEKKO_ALERT_RESOLVE_GRACE_S": "3",
            "GEKKO_ALERT_WEBHOOK_SOURCES": "10.0.0.7, 10.1.0.0/16",
        }
    )
    assert settings.alertmanager_url == "https://10.0.0.9:9093"
    assert (settings.escalation_check_s, settings.escalate_after_s) == (0.5, 2.0)
    assert (settings.ack_silence_s, settings.resolve_grace_s) == (60.0, 3.0)
    assert [str(n) for n in settings.webhook_sources] == ["10.0.0.7/32", "10.1.0.0/16"]
    assert settings.escalation_hold_s == 300.0


@pytest.mark.parametrize(
    "env",
    [
        {"GEKKO_ALERTMANAGER_URL": "127.0.0.1:9093"},
        {"GEKKO_ALERT_ESCALATE_AFTER_S": "soon"},
        {"GEKKO_ALERT_ESCALATION_CHECK_S": "0"},
        {"GEKKO_ALERT_ACK_SILENCE_S": "-5"},
        {"GEKKO_ALERT_WEBHOOK_SOURCES": "monitoring-host"},
    ],
)
def test_bad_settings_stop_the_service(env):
    with pytest.raises(ConfigError):
        load_alert_settings(env)


def test_alerts_is_a_domain_service_on_8108():
    assert "alerts" in DOMAIN_SERVICES and DEFAULT_PORTS["alerts"] == 8108
    assert load_settings("alerts", dict(ENV)).port == 8108


def test_the_cli_parses_its_alerts_commands():
    parser = build_parser()
    ack = parser.parse_args(["alerts", "ack", "12", "--by", "alice", "--comment", "on it"])
    assert (ack.command, ack.action, ack.id, ack.by, ack.comment) == (
        "alerts",
        "ack",
        12,
        "alice",
        "on it",
    )
    listing = parser.parse_args(["alerts", "list", "--status", "firing", "--json"])
    assert (listing.status, listing.limit, listing.json) == ("firing", 50, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["alerts", "ack", "12", "--comment", "no --by"])


# --- the Alertmanager client against a local server ------------------------------------------


def _serve(answers: list[tuple[int, object]], calls: list[str]):
    async def handle(request: web.Request) -> web.Response:
        calls.append(f"{request.method} {request.path}")
        status, body = answers.pop(0) if answers else (200, None)
        if body == "hang":
            await asyncio.sleep(5)
        return web.json_response(body, status=status) if body is not None else web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return TestServer(app, host="127.0.0.1")


def _with_client(answers, scenario, calls: list[str] | None = None, **client_args):
    calls = [] if calls is None else calls

    async def run():
        server = _serve(answers, calls)
        await server.start_server()
        client = Alertmanager(str(server.make_url("")), backoff_s=0.01, **client_args)
        try:
            return await scenario(client)
        finally:
            await client.close()
            await server.close()

    return asyncio.run(run()), calls


def test_alerts_are_posted_again_after_a_5xx():
    result, calls = _with_client(
        [(503, {"error": "busy"}), (200, None)], lambda c: c.post_alerts([{"labels": {}}], 5)
    )
    assert result is None and calls == ["POST /api/v2/alerts"] * 2


def test_a_4xx_is_not_retried_and_names_the_reason():
    with pytest.raises(AlertmanagerError, match="400.*start time"):
        _with_client([(400, "start time must be before end time")], lambda c: c.post_alerts([], 5))


def test_a_silence_returns_its_id_and_is_not_resent_after_a_lost_answer():
    silence_id, _ = _with_client(
        [(200, {"silenceID": "abc"})], lambda c: c.create_silence({"matchers": []}, 5)
    )
    assert silence_id == "abc"
    calls: list[str] = []
    with pytest.raises(AlertmanagerError, match="TimeoutError"):
        _with_client(
            [(200, "hang"), (200, {"silenceID": "twice"})],
            lambda c: c.create_silence({"matchers": []}, 5),
            calls,
            attempt_timeout_s=0.3,
        )
    assert calls == ["POST /api/v2/silences"]


def test_the_client_lists_fingerprints_and_starts():
    listed, _ = _with_client(
        [(200, [{"fingerprint": "ab", "startsAt": "2026-12-03T09:00:00.5Z", "labels": {}}])],
        lambda c: c.listed_alerts(5),
    )
    assert listed == [("ab", T0 + timedelta(milliseconds=500))]


def test_an_unreachable_alertmanager_fails_within_the_deadline():
    async def run():
        client = Alertmanager("http://127.0.0.1:1", backoff_s=0.01)
        try:
            await client.post_alerts([], 2)
        finally:
            await client.close()

    with pytest.raises(AlertmanagerError, match="unreachable"):
        asyncio.run(run())


# --- the service in process ----------------------------------------------------------------

ENV = {
    # Unreachable on purpose: the webhook's refusals need neither.
    "GEKKO_DATABASE_URL": "postgresql://g:p@127.0.0.1:1/g",
    "GEKKO_REDIS_URL": "redis://127.0.0.1:1/0",
    **TOKEN_ENV,
}


@pytest.fixture(scope="module")
def service():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEKKO_ALERTMANAGER_URL", "http://127.0.0.1:1")
        app = build_app(load_settings("alerts", ENV))
        with TestClient(app, client=("127.0.0.1", 40000)) as client:
            yield client


def test_the_api_is_in_the_openapi_document_and_the_webhook_is_not(service):
    paths = service.get("/openapi.json").json()["paths"]
    assert set(paths) - {"/health", "/health/live"} == {
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}",
        "/api/v1/alerts/{alert_id}/acknowledge",
    }


def test_a_bad_webhook_payload_is_a_422_problem(service):
    answer = service.post("/alertmanager/webhook", json={"receiver": "email"})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    not_json = service.post(
        "/alertmanager/webhook", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422


def test_the_webhook_refuses_what_the_gateway_forwards(service, monkeypatch):
    # Counted, not audited here: no database for the audit log to write to.
    monkeypatch.setattr(service.app.state.security_events, "audit", None)
    answer = service.post(
        "/alertmanager/webhook", json=PAYLOAD, headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Alertmanager" in answer.json()["detail"]
