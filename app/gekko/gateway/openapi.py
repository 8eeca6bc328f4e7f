"""The gateway's OpenAPI document: its own ops endpoints plus every service's API.

Each service serves its own /openapi.json (paths already under /api/v1/<prefix>); the gateway
fetches them from routable instances in the background, caches them, and merges them into the
document it serves. A service that cannot be reached keeps its last fetched document.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from gekko.gateway.discovery import ServiceRegistryCache

log = logging.getLogger("gekko.gateway.openapi")

REF_PREFIX = "#/components/schemas/"
_SERVICE_OPS = (
    "/health",
    "/health/live",
    "/metrics",
)  # each service's own ops endpoints are not public API


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                name = value[len(REF_PREFIX) :]
                out[key] = REF_PREFIX + renames.get(name, name)
            else:
                out[key] = _rename_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def merge_documents(base: dict[str, Any], services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge service documents into `base` (not modified). Schema names that clash with a
    different definition are prefixed with the service name, and their $refs rewritten."""
    merged = copy.deepcopy(base)
    paths = merged.setdefault("paths", {})
    schemas = merged.setdefault("components", {}).setdefault("schemas", {})
    for service in sorted(services):
        doc = services[service]
        theirs = doc.get("components", {}).get("schemas", {})
        renames = {
            name: f"{service}_{name}"
            for name, schema in theirs.items()
            if name in schemas and schemas[name] != schema
        }
        doc = _rename_refs(doc, renames) if renames else doc
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(renames.get(name, name), schema)
        for path, item in doc.get("paths", {}).items():
            if path in _SERVICE_OPS:
                continue
            paths.setdefault(path, {}).update(item)
        for scheme, value in doc.get("components", {}).get("securitySchemes", {}).items():
            merged["components"].setdefault("securitySchemes", {}).setdefault(scheme, value)
    if not schemas:
        del merged["components"]["schemas"]
    return merged


class OpenApiAggregator:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        cache: ServiceRegistryCache,
        base: Callable[[], dict[str, Any]],
        refresh_s: float = 30.0,
    ) -> None:
        self.session = session
        self.cache = cache
        self.base = base
        self.refresh_s = refresh_s
        self.documents: dict[str, dict[str, Any]] = {}
        self._merged: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=2)

    def document(self) -> dict[str, Any]:
        if self._merged is None:
            self._merged = merge_documents(self.base(), self.documents)
        return self._merged

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        instances = self.cache.routable(service)  # not pick(): leave the round robin to traffic
        if not instances:
            return None
        instance = instances[0]
        try:
            async with self.session.get(
                f"{instance.url}/openapi.json", timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json()
                return data if isinstance(data, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("could not fetch the OpenAPI document of %s: %s", service, exc)
            return None

    async def refresh_once(self) -> None:
        services = self.cache.services
        results = await asyncio.gather(*(self._fetch(s) for s in services))
        changed = False
        for service, doc in zip(services, results, strict=True):
            if doc is not None and self.documents.get(service) != doc:
                self.documents[service] = doc
                changed = True
        if changed:
            self._merged = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("OpenAPI refresh failed")
            # Poll quickly until every service has answered once, then at the steady pace.
            missing = len(self.documents) < len(self.cache.services)
            await asyncio.sleep(min(2.0, self.refresh_s) if missing else self.refresh_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-openapi")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
