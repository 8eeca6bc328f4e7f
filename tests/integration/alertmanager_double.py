"""A stand-in for Alertmanager's API v2 on loopback, for the alerts service's tests: it takes
alerts (POST /api/v2/alerts) and silences (POST /api/v2/silences, answering {"silenceID": ...})
as Alertmanager 0.25 does, refusing what it would refuse, records every call, and lists
(GET /api/v2/alerts) the alerts still active: the ones posted to it that have not ended, and
the ones a test says Prometheus is sending (`hold`)."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit id of a label set (Alertmanager's is an FNV-64a hash of it)."""
    canonical = json.dumps(sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Posted:
    at: datetime
    alert: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return self.alert["labels"]

    @property
    def active(self) -> bool:
        """Posted to stay active (endsAt ahead of when it was posted), not to end."""
        return parse_time(self.alert["endsAt"]) > self.at


@dataclass
class AlertmanagerDouble:
    port: int
    posted: list[Posted] = field(default_factory=list)
    silences: list[dict[str, Any]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    held: dict[str, dict[str, Any]] = field(default_factory=dict)
    # An outage: every call is answered 503.
    failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self, labels: dict[str, str], starts_at: str) -> None:
        """Prometheus sends this alert: Alertmanager lists it as active."""
        with self.lock:
            self.held[fingerprint(labels)] = {"labels": labels, "startsAt": starts_at}

    def drop(self, labels: dict[str, str]) -> None:
        """Prometheus stopped sending it (it resolved)."""
        with self.lock:
            self.held.pop(fingerprint(labels), None)

    def posts_for(self, labels: dict[str, str]) -> list[Posted]:
        """The posted alerts whose labels include all of `labels`."""
        with self.lock:
            return [p for p in self.posted if labels.items() <= p.labels.items()]

    def silences_by(self, created_by: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.silences if s["createdBy"] == created_by]

    def listed(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        with self.lock:
            current: dict[str, dict[str, Any]] = {}
            for post in self.posted:  # the latest post of each label set counts
                current[fingerprint(post.labels)] = post.alert
            alerts = [a for a in current.values() if parse_time(a["endsAt"]) > now]
            alerts += list(self.held.values())
        return [
            {
                "labels": a["labels"],
                "annotations": a.get("annotations", {}),
                "startsAt": a["startsAt"],
                "endsAt": a.get("endsAt", now.isoformat()),
                "updatedAt": now.isoformat(),
                "fingerprint": fingerprint(a["labels"]),
                "receivers": [{"name": "default"}],
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            }
            for a in alerts
        ]

    # --- the API ---------------------------------------------------------------------------

    def post_alerts(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, list):
            return 400, "alerts must be a list"
        for alert in body:
            labels = alert.get("labels")
            if not isinstance(labels, dict) or not labels:
                return 400, "at least one label pair required"
            if parse_time(alert["endsAt"]) < parse_time(alert["startsAt"]):
                return 400, "start time must be before end time"
        now = datetime.now(UTC)
        with self.lock:
            self.posted.extend(Posted(now, alert) for alert in body)
        return 200, None

    def post_silence(self, body: Any) -> tuple[int, Any]:
        matchers = body.get("matchers") if isinstance(body, dict) else None
        if not matchers:
            return 400, "at least one matcher required"
        for matcher in matchers:
            if set(matcher) != {"name", "value", "isRegex", "isEqual"}:
                return 400, f"unexpected matcher {matcher}"
        if not body.get("createdBy") or not body.get("comment"):
            return 400, "creator information missing / comment missing"
        if parse_time(body["endsAt"]) <= parse_time(body["startsAt"]):
            return 400, "end time must not be before start time"
        silence = dict(body, id=str(uuid.uuid4()))
        with self.lock:
            self.silences.append(silence)
        return 200, {"silenceID": silence["id"]}

    def start(self) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if double.failing:
                    return self._answer(503, "unavailable")
                if self.path.split("?")[0] != "/api/v2/alerts":
                    return self._answer(404, "not found")
                self._answer(200, double.listed())

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    return self._answer(400, "invalid JSON")
                if double.failing:
                    return self._answer(503, "unavailable")
                if self.path == "/api/v2/alerts":
                    return self._answer(*double.post_alerts(body))
                if self.path == "/api/v2/silences":
                    return self._answer(*double.post_silence(body))
                self._answer(404, "not found")

            def do_DELETE(self) -> None:  # noqa: N802
                prefix = "/api/v2/silence/"
                if double.failing:
                    return self._answer(503, "unavailable")
                if not self.path.startswith(prefix):
                    return self._answer(404, "not found")
                with double.lock:
                    double.expired.append(self.path[len(prefix) :])
                self._answer(200, None)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
