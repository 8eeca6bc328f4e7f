"""Security events (login failures, lockouts, logouts, refresh token reuse, denied access ...):
each one is a log line, a count in `gekko_security_events_total{event}` (so an alert can watch
them) and, once the component's database pool is up, a row of the audit log."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter

from gekko.security.audit import AuditLog

log = logging.getLogger("gekko.security")
# Expected in normal use: logged at INFO (counted and audited like the rest).
_ROUTINE = frozenset(
    {"login-success", "token-refreshed", "logout", "session-ended", "mfa-totp",
     "login-password-accepted", "mfa-enrolment-started", "mfa-enabled"}
)  # fmt: skip


class SecurityEvents:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter(
            "gekko_security_events_total",
            "Security events (login failures, lockouts, refresh token reuse, logouts ...).",
            ["event"],
            registry=registry,
        )
        self.audit: AuditLog | None = None  # set by the service's lifespan

    def record(self, event: str, **fields: object) -> None:
        """`user_id`: the signed-in user who acted (or whom an admin's action, `by`, was
        about); `subject`: the account an unauthenticated attempt was aimed at; `source`: the
        caller's address. Other fields go to the log line and the audit row's details."""
        self._counter.labels(event).inc()
        details = " ".join(f"{name}={value}" for name, value in fields.items())
        level = logging.INFO if event in _ROUTINE else logging.WARNING
        log.log(level, "security event %s %s", event, details, extra={"security_event": event})
        if self.audit is None:
            return
        named = ("user_id", "by", "subject", "source")
        user_id, by, subject = fields.get("user_id"), fields.get("by"), fields.get("subject")
        if by is not None:  # an admin acted on user_id
            actor, subject = by, user_id
        else:
            actor = user_id
        self.audit.record(
            event,
            actor_user_id=_int(actor),
            subject_user_id=_int(subject),
            source_address=str(fields.get("source") or ""),
            **{k: v for k, v in fields.items() if k not in named},
        )


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
