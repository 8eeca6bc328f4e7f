"""The alerts service's own settings, from GEKKO_* variables, checked before it binds a port
(and by the `gekko alerts` commands, which read the same environment)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gekko.config import ConfigError, positive_float

ALERTMANAGER_URL_ENV = "GEKKO_ALERTMANAGER_URL"
DEFAULT_ALERTMANAGER_URL = "http://127.0.0.1:9093"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AlertSettings:
    # Alertmanager's base URL: escalated copies go to its /api/v2/alerts, silences (the
    # acknowledgements) to /api/v2/silences.
    alertmanager_url: str = DEFAULT_ALERTMANAGER_URL
    # How often the escalation loop runs; how long a critical alert may fire unacknowledged
    # before it is escalated; how long an acknowledgement's silence lasts.
    escalation_check_s: float = 15.0
    escalate_after_s: float = 900.0
    ack_silence_s: float = 4 * 3600.0
    # An alert Alertmanager no longer lists for this long is recorded as resolved (it sends
    # no resolved notification for an alert that an acknowledgement silenced).
    resolve_grace_s: float = 120.0
    # Without TLS, the webhook takes posts from loopback and from these networks only (with
    # TLS, mutual TLS admits only the hosts with a certificate from the internal CA).
    webhook_sources: tuple[Network, ...] = ()

    @property
    def escalation_hold_s(self) -> float:
        """How far ahead an escalated copy's endsAt is set: it stays active in Alertmanager
        through a few missed loops, and ends on its own if this service stops posting it."""
        return max(300.0, 4 * self.escalation_check_s)


def parse_sources(raw: str) -> tuple[Network, ...]:
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"GEKKO_ALERT_WEBHOOK_SOURCES: {item!r} is not an address or network "
                "(e.g. 10.0.0.5 or 10.0.0.0/24)"
            ) from None
    return tuple(networks)


def load_alert_settings(env: Mapping[str, str] | None = None) -> AlertSettings:
    env = os.environ if env is None else env
    url = (env.get(ALERTMANAGER_URL_ENV, "").strip() or DEFAULT_ALERTMANAGER_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{ALERTMANAGER_URL_ENV} must be an http(s) URL (e.g. {DEFAULT_ALERTMANAGER_URL}), "
            f"got {url!r}"
        )
    defaults = AlertSettings()
    return AlertSettings(
        alertmanager_url=url,
        escalation_check_s=positive_float(
            env, "GEKKO_ALERT_ESCALATION_CHECK_S", defaults.escalation_check_s
        ),
        escalate_after_s=positive_float(
            env, "GEKKO_ALERT_ESCALATE_AFTER_S", defaults.escalate_after_s
        ),
        ack_silence_s=positive_float(env, "GEKKO_ALERT_ACK_SILENCE_S", defaults.ack_silence_s),
        resolve_grace_s=positive_float(
            env, "GEKKO_ALERT_RESOLVE_GRACE_S", defaults.resolve_grace_s
        ),
        webhook_sources=parse_sources(env.get("GEKKO_ALERT_WEBHOOK_SOURCES", "")),
    )
