"""The pure part of alert tracking: Alertmanager's webhook payload (version 4), an alert's
identity, when to escalate, the escalated copy and the acknowledgement's silence as Alertmanager's
API v2 takes them, and how long each step of an alert's history took.

Nothing here does I/O; gekko.services.alerts.tracking stores and sends what this decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from gekko.services.inputs import StoredText, Timestamp

# The label an escalated copy carries: Alertmanager's routing tree sends it to the second
# receiver. The annotation names the alert it is a copy of, so its notifications are recorded
# on that alert.
ESCALATION_LABEL = "escalation"
ESCALATION_VALUE = "second"
ALERT_ID_ANNOTATION = "gekko_alert_id"
# ... and as a label too: each occurrence's copy has a fingerprint of its own, so Alertmanager's
# record of an earlier occurrence's copy (say, its resolution never reached a receiver that was
# down) cannot hold this one back until the repeat interval.
ALERT_ID_LABEL = ALERT_ID_ANNOTATION
CRITICAL = "critical"

AlertStatus = Literal["firing", "acknowledged", "resolved"]
ALERT_STATUSES: tuple[str, ...] = ("firing", "acknowledged", "resolved")


class EventKind(StrEnum):
    FIRED = "fired"
    NOTIFIED = "notified"
    ESCALATED = "escalated"
    ESCALATION_ENDED = "escalation_ended"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# --- the webhook payload -------------------------------------------------------------------

# Prometheus' label names; values and annotations are any text PostgreSQL can store.
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
LabelValue = Annotated[StoredText, Field(max_length=4096)]
AnnotationName = Annotated[StoredText, Field(min_length=1, max_length=256)]
AnnotationValue = Annotated[StoredText, Field(max_length=16384)]


class WebhookAlert(BaseModel):
    """One alert of a notification (fields as Alertmanager names them)."""

    status: Literal["firing", "resolved"]
    labels: dict[LabelName, LabelValue] = Field(min_length=1, max_length=128)
    annotations: dict[AnnotationName, AnnotationValue] = Field(default_factory=dict, max_length=128)
    startsAt: Timestamp  # noqa: N815 - Alertmanager's field names
    endsAt: Timestamp | None = None  # noqa: N815
    generatorURL: Annotated[StoredText, Field(max_length=4096)] = ""  # noqa: N815
    fingerprint: Annotated[StoredText, Field(min_length=1, max_length=128)]

    @property
    def identity(self) -> tuple[str, datetime]:
        """Alertmanager's fingerprint is a hash of the label set; with the time the alert
        started firing it names one occurrence (the same labels firing again are another)."""
        return self.fingerprint, self.startsAt

    @property
    def ended_at(self) -> datetime | None:
        """endsAt of a resolved alert; a firing one carries Go's zero time (year 1)."""
        if self.endsAt is None or self.endsAt.year <= 1:
            return None
        return self.endsAt

    @property
    def is_escalated_copy(self) -> bool:
        return ESCALATION_LABEL in self.labels


class WebhookPayload(BaseModel):
    """Alertmanager's webhook notification, version 4: `receiver` is whom it just notified."""

    version: Literal["4"] = "4"
    receiver: Annotated[StoredText, Field(min_length=1, max_length=256)]
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert] = Field(max_length=10_000)


# --- escalation ----------------------------------------------------------------------------


class Escalation(StrEnum):
    START = "start"  # post the first escalated copy, record `escalated`
    REPOST = "repost"  # post it again: it stays active while the alert fires unacknowledged
    END = "end"  # post it with endsAt = now: the alert was acknowledged or resolved


def escalation_step(alert: Mapping[str, Any], now: datetime, after_s: float) -> Escalation | None:
    """What the escalation loop does with an alert (a row of alerts.alerts) now: a critical
    alert still firing, unacknowledged, fired more than `after_s` ago is escalated; an
    escalated one is posted again while that lasts and ended once it does not."""
    if alert["escalated_at"] is not None:
        if alert["escalation_ended_at"] is not None:
            return None
        return Escalation.REPOST if alert["status"] == "firing" else Escalation.END
    if alert["status"] != "firing" or alert["severity"] != CRITICAL:
        return None
    if ESCALATION_LABEL in alert["labels"]:  # a copy is never escalated again
        return None
    if (now - alert["fired_at"]).total_seconds() <= after_s:
        return None
    return Escalation.START


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def escalated_copy(
    alert: Mapping[str, Any], now: datetime, hold_s: float, *, end: bool = False
) -> dict[str, Any]:
    """The alert as Alertmanager's POST /api/v2/alerts takes it, with the escalation label:
    active until `hold_s` from now, or ended now (`end`)."""
    ends = now if end else now + timedelta(seconds=hold_s)
    copy: dict[str, Any] = {
        "labels": {
            **alert["labels"],
            ESCALATION_LABEL: ESCALATION_VALUE,
            ALERT_ID_LABEL: str(alert["id"]),
        },
        "annotations": {**alert["annotations"], ALERT_ID_ANNOTATION: str(alert["id"])},
        # Alertmanager refuses an alert that ends before it starts (clocks may disagree).
        "startsAt": _rfc3339(min(alert["fired_at"], ends)),
        "endsAt": _rfc3339(ends),
    }
    if alert.get("generator_url"):
        copy["generatorURL"] = alert["generator_url"]
    return copy


def resolved_occurrence(alert: Mapping[str, Any], resolved_at: datetime) -> dict[str, Any]:
    """The alert itself, labels unchanged and ended at `resolved_at`, as POST /api/v2/alerts
    takes it. Posted once its acknowledgement's silence has ended, it makes Alertmanager send
    the resolved notification the silence held back, which also clears Alertmanager's record
    that the receivers were told it fires: without it, the same alert firing again within
    the repeat interval would page nobody."""
    ended: dict[str, Any] = {
        "labels": dict(alert["labels"]),
        "annotations": dict(alert["annotations"]),
        "startsAt": _rfc3339(min(alert["fired_at"], resolved_at)),
        "endsAt": _rfc3339(resolved_at),
    }
    if alert.get("generator_url"):
        ended["generatorURL"] = alert["generator_url"]
    return ended


def silence_for(
    labels: Mapping[str, str], created_by: str, comment: str, now: datetime, duration_s: float
) -> dict[str, Any]:
    """An acknowledgement as Alertmanager's POST /api/v2/silences takes it: every label of the
    alert matched exactly, from now for `duration_s`."""
    return {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in sorted(labels.items())
        ],
        "startsAt": _rfc3339(now),
        "endsAt": _rfc3339(now + timedelta(seconds=duration_s)),
        "createdBy": created_by,
        "comment": comment,
    }


# --- reconciling with what Alertmanager still holds ----------------------------------------

# Alertmanager and this service may render the same startsAt with different precision.
_SAME_START_S = 1.0


def still_listed(alert: Mapping[str, Any], listed: Iterable[tuple[str, datetime]]) -> bool:
    """Whether Alertmanager still lists this occurrence (fingerprint, startsAt) as active."""
    return any(
        fingerprint == alert["fingerprint"]
        and abs((starts_at - alert["fired_at"]).total_seconds()) < _SAME_START_S
        for fingerprint, starts_at in listed
    )


# --- history -------------------------------------------------------------------------------


def seconds_between(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)


class Steps(BaseModel):
    """Seconds from firing to each step, None for a step not (yet) taken."""

    to_notify_s: float | None = None
    to_escalate_s: float | None = None
    to_acknowledge_s: float | None = None
    to_resolve_s: float | None = None


def step_durations(
    fired_at: datetime, events: Iterable[tuple[str, datetime, Mapping[str, Any]]]
) -> Steps:
    """How long each step took: the first notification of the alert firing, the escalation,
    the acknowledgement and the resolution, each measured from the time it fired."""
    first: dict[str, datetime] = {}
    for kind, at, details in sorted(events, key=lambda event: event[1]):
        if kind == EventKind.NOTIFIED and details.get("status") == "resolved":
            continue  # telling someone it is over is not the notification that it fired
        first.setdefault(kind, at)
    return Steps(
        to_notify_s=seconds_between(fired_at, first.get(EventKind.NOTIFIED)),
        to_escalate_s=seconds_between(fired_at, first.get(EventKind.ESCALATED)),
        to_acknowledge_s=seconds_between(fired_at, first.get(EventKind.ACKNOWLEDGED)),
        to_resolve_s=seconds_between(fired_at, first.get(EventKind.RESOLVED)),
    )


# --- what the API and the CLI show ---------------------------------------------------------


class AlertOut(BaseModel):
    id: int
    fingerprint: str
    alertname: str
    severity: str
    team: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    runbook_url: str | None
    generator_url: str
    fired_at: datetime
    first_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    silence_id: str | None
    escalated_at: datetime | None
    escalation_ended_at: datetime | None
    resolved_at: datetime | None


class AlertEventOut(BaseModel):
    kind: EventKind
    at: datetime
    seconds_since_fired: float
    receiver: str | None
    by: str | None
    comment: str | None
    silence_id: str | None
    details: dict[str, str]


class AlertHistoryOut(AlertOut):
    steps: Steps
    history: list[AlertEventOut]


class AlertListOut(BaseModel):
    alerts: list[AlertOut]


def alert_out(row: Mapping[str, Any]) -> AlertOut:
    """A row of alerts.alerts (labels and annotations decoded) as the API shows it."""
    fields = {name: row[name] for name in AlertOut.model_fields if name != "runbook_url"}
    return AlertOut(runbook_url=row["annotations"].get("runbook_url"), **fields)


def history_out(row: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> AlertHistoryOut:
    fired_at: datetime = row["fired_at"]
    history = [
        AlertEventOut(
            kind=event["kind"],
            at=event["at"],
            seconds_since_fired=seconds_between(fired_at, event["at"]) or 0.0,
            receiver=event["receiver"],
            by=event["actor"],
            comment=event["comment"],
            silence_id=event["silence_id"],
            details={k: str(v) for k, v in event["details"].items()},
        )
        for event in events
    ]
    steps = step_durations(fired_at, ((e.kind, e.at, e.details) for e in history))
    return AlertHistoryOut(**alert_out(row).model_dump(), steps=steps, history=history)
