"""A small client of Alertmanager's API v2: post alerts, create a silence, list the alerts it
holds. Each call has a deadline and bounded retries with backoff; what cannot be retried safely
(a silence whose answer was lost may exist) is not."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

log = logging.getLogger("gekko.alerts.alertmanager")

ATTEMPTS = 3
ATTEMPT_TIMEOUT_S = 2.0
BACKOFF_S = 0.2


class AlertmanagerError(Exception):
    """Alertmanager refused a call, or did not answer within its deadline."""


class ListedAlert(BaseModel):
    """What this service reads of GET /api/v2/alerts (gettableAlert)."""

    fingerprint: str
    startsAt: datetime  # noqa: N815 - Alertmanager's field name


_LISTED = TypeAdapter(list[ListedAlert])
_JSON = {"Content-Type": "application/json"}


class Alertmanager:
    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        attempts: int = ATTEMPTS,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.attempt_timeout_s = attempt_timeout_s
        self.backoff_s = backoff_s
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_alerts(self, alerts: list[dict[str, Any]], deadline_s: float) -> None:
        """POST /api/v2/alerts. Posting the same alert twice changes nothing, so any failure
        is retried."""
        await self._call("POST", "/api/v2/alerts", alerts, deadline_s, resend_unsure=True)

    async def create_silence(self, silence: dict[str, Any], deadline_s: float) -> str:
        """POST /api/v2/silences; the new silence's id. Retried only when Alertmanager surely
        did not create it (no connection, or a 5xx answer), never after a lost answer."""
        answer = await self._call(
            "POST", "/api/v2/silences", silence, deadline_s, resend_unsure=False
        )
        silence_id = answer.get("silenceID") if isinstance(answer, dict) else None
        if not isinstance(silence_id, str) or not silence_id:
            raise AlertmanagerError(f"{self.base_url}: a silence answer without a silenceID")
        return silence_id

    async def expire_silence(self, silence_id: str, deadline_s: float) -> None:
        """DELETE /api/v2/silence/{id}: the silence ends now. Expiring twice changes nothing."""
        await self._call(
            "DELETE", f"/api/v2/silence/{silence_id}", None, deadline_s, resend_unsure=True
        )

    async def listed_alerts(self, deadline_s: float) -> list[tuple[str, datetime]]:
        """GET /api/v2/alerts: (fingerprint, startsAt) of every alert Alertmanager holds as
        active, silenced and inhibited ones included."""
        answer = await self._call(
            "GET",
            "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
            None,
            deadline_s,
            resend_unsure=True,
        )
        try:
            return [(a.fingerprint, a.startsAt) for a in _LISTED.validate_python(answer)]
        except ValidationError as exc:
            raise AlertmanagerError(f"{self.base_url}: unexpected alert list: {exc}") from None

    async def _call(
        self, method: str, path: str, body: Any, deadline_s: float, *, resend_unsure: bool
    ) -> Any:
        url = self.base_url + path
        data = None if body is None else orjson.dumps(body)
        deadline = time.monotonic() + deadline_s
        problem = "no attempt within the deadline"
        for attempt in range(1, self.attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = aiohttp.ClientTimeout(total=min(self.attempt_timeout_s, remaining))
            try:
                async with self._client().request(
                    method, url, data=data, headers=_JSON, timeout=timeout
                ) as resp:
                    text = await resp.text()
                    if resp.status < 300:
                        return orjson.loads(text) if text.strip() else None
                    problem = f"answered {resp.status}: {text.strip()[:300]}"
                    if resp.status < 500:
                        raise AlertmanagerError(f"Alertmanager {method} {path} {problem}")
            except aiohttp.ClientConnectorError as exc:
                problem = f"unreachable: {exc}"
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                problem = f"failed: {type(exc).__name__} {exc}".strip()
                if not resend_unsure:
                    break
            if attempt < self.attempts:
                pause = self.backoff_s * 2 ** (attempt - 1)
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        log.warning("Alertmanager %s %s %s", method, url, problem)
        raise AlertmanagerError(f"Alertmanager at {self.base_url}: {method} {path} {problem}")
