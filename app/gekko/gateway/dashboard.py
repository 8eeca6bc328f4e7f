"""GET /dashboard (live HTML page of the eight KPIs) and GET /dashboard/kpis (their JSON).

The page is self-contained (inline CSS and JS, no CDN) and public, but the numbers are not: it
shows a sign-in form, signs in through /api/v1/users/login, then reads /dashboard/kpis with the
access token every REFRESH_S seconds (viewer, operator or admin; refreshing the token when it
expires). The token stays in the page's memory only. KPI state lives in
Redis (gekko.kpis), so every gateway process shows the same numbers. A background task keeps
the Prometheus collector's snapshot fresh, because prometheus_client collects synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from gekko.kpis import KPI_NAMES, KpiCollector, read_kpis
from gekko.problems import ProblemError
from gekko.security.access import authorize

log = logging.getLogger("gekko.dashboard")

REFRESH_S = 2
SNAPSHOT_REFRESH_S = 2.0

# name -> (label, unit, formatting hint for the page script)
LABELS: dict[str, tuple[str, str, str]] = {
    "orders_executed": ("Orders executed", "", "int"),
    "notional_volume_usd": ("Notional volume", "USD", "usd"),
    "fill_rate": ("Fill rate", "", "pct"),
    "execution_latency_p95_ms": ("Execution latency p95", "ms", "ms"),
    "active_users": ("Active users (15 min)", "", "int"),
    "registrations": ("Registrations", "", "int"),
    "social_engagement": ("Social engagement", "posts + follows + shares", "int"),
    "points_awarded": ("Points awarded", "", "int"),
}


async def _read(request: Request, collector: KpiCollector) -> dict[str, Any]:
    redis = getattr(request.app.state, "redis", None)
    if redis is None:
        raise ProblemError(503, "KPI store is not connected yet", slug="kpis-unavailable")
    try:
        kpis = await read_kpis(redis)
    except (RedisError, OSError) as exc:
        raise ProblemError(
            503, f"KPI store (Redis) unavailable: {type(exc).__name__}", slug="kpis-unavailable"
        ) from None
    collector.snapshot = kpis
    return kpis


def render_page() -> str:
    """The page shell: every card with a stable id, no figure until a signed-in read."""
    cards = []
    for name in KPI_NAMES:
        label, unit, kind = LABELS[name]
        cards.append(
            f'<section class="card"><h2>{html.escape(label)}</h2>'
            f'<p class="value" id="kpi-{name}" data-kind="{kind}">–</p>'
            f'<p class="unit">{html.escape(unit)}</p></section>'
        )
    return _PAGE.replace("{{CARDS}}", "\n".join(cards)).replace(
        "{{REFRESH_MS}}", str(REFRESH_S * 1000)
    )


def install_dashboard(
    app: FastAPI, registry: CollectorRegistry, scrape_token_sha256: str = ""
) -> None:
    """Add /dashboard, /dashboard/kpis and /dashboard/metrics to `app`; the gekko_kpi_* series
    go on `registry`, served by /dashboard/metrics only: the figures are not public, so they
    must not be on the public /metrics.

    `scrape_token_sha256`: the SHA-256 (hex) of Prometheus's scrape credential, a bearer token
    that opens /dashboard/metrics alone (a viewer's access token lives an hour; a scraper needs
    one that lasts). Only its hash is held here."""
    collector = KpiCollector()
    registry.register(collector)
    app.state.kpi_collector = collector

    async def authorize_scrape(request: Request) -> None:
        presented = request.headers.get("authorization", "")
        scheme, _, token = presented.partition(" ")
        if scrape_token_sha256 and scheme.lower() == "bearer" and token:
            digest = hashlib.sha256(token.strip().encode()).hexdigest()
            if hmac.compare_digest(digest, scrape_token_sha256):
                return
        await authorize(request)

    @app.get("/dashboard/kpis", tags=["ops"], dependencies=[Depends(authorize)])
    async def dashboard_kpis(request: Request) -> JSONResponse:
        kpis = await _read(request, collector)
        return JSONResponse(kpis, headers={"Cache-Control": "no-store"})

    @app.get(
        "/dashboard/metrics",
        tags=["ops"],
        response_class=Response,
        dependencies=[Depends(authorize_scrape)],
    )
    async def dashboard_metrics() -> Response:
        """The KPIs in Prometheus text (gekko_kpi_*), for a viewer's token or the scrape
        credential."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/dashboard", tags=["ops"], response_class=HTMLResponse, dependencies=[Depends(authorize)]
    )
    async def dashboard() -> HTMLResponse:
        # The shell only: the figures need a signed-in viewer, operator or admin.
        return HTMLResponse(render_page(), headers={"Cache-Control": "no-store"})

    # Keep the collector's snapshot fresh for /metrics scrapes (wraps the app's lifespan).
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            task = asyncio.create_task(_refresh(a, collector), name="kpi-snapshot")
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan


async def _refresh(app: FastAPI, collector: KpiCollector) -> None:
    while True:
        redis = getattr(app.state, "redis", None)
        if redis is not None:
            try:
                collector.snapshot = await read_kpis(redis)
            except (RedisError, OSError) as exc:
                log.debug("KPI snapshot refresh failed: %s", exc)
        await asyncio.sleep(SNAPSHOT_REFRESH_S)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gekko — business KPIs</title>
<style>
  :root { color-scheme: light dark; --bg: #0f1720; --fg: #e6edf3; --card: #18222d;
          --muted: #8b98a5; --accent: #3fb950; --warn: #d29922; }
  body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         background: var(--bg); color: var(--fg); }
  header { display: flex; justify-content: space-between; align-items: baseline;
           padding: 20px 28px 8px; }
  h1 { font-size: 22px; margin: 0; }
  #status { color: var(--muted); font-size: 13px; }
  #status.stale { color: var(--warn); }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr));
         gap: 16px; padding: 16px 28px 28px; }
  .card { background: var(--card); border-radius: 10px; padding: 16px 18px; }
  .card h2 { font-size: 13px; font-weight: 600; color: var(--muted); margin: 0 0 8px;
             text-transform: uppercase; letter-spacing: .04em; }
  .value { font-size: 30px; font-weight: 700; margin: 0; font-variant-numeric: tabular-nums; }
  .value.changed { color: var(--accent); }
  .unit { color: var(--muted); font-size: 12px; margin: 4px 0 0; min-height: 1em; }
  #signin { display: flex; gap: 8px; padding: 8px 28px; align-items: center; }
  #signin[hidden] { display: none; }
  #signin input, #signin button { font: inherit; padding: 6px 10px; border-radius: 6px;
                                   border: 1px solid var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Gekko business KPIs</h1>
  <span id="status">live · refreshes every {{REFRESH_MS}} ms</span>
</header>
<form id="signin" autocomplete="on">
  <input id="username" name="username" placeholder="user name" required>
  <input id="password" name="password" type="password" placeholder="password" required>
  <button id="signin-submit" type="submit">Sign in</button>
  <span id="signin-error" role="alert"></span>
</form>
<main id="kpis">
{{CARDS}}
</main>
<script>
(function () {
  "use strict";
  var REFRESH_MS = {{REFRESH_MS}};
  var status = document.getElementById("status");
  function dec(v, digits) {
    var o = {minimumFractionDigits: digits, maximumFractionDigits: digits};
    return v.toLocaleString("en-US", o);
  }
  function fmt(kind, v) {
    if (typeof v !== "number") return "–";
    if (kind === "usd") return "$" + dec(v, 2);
    if (kind === "pct") return (v * 100).toFixed(1) + "%";
    if (kind === "ms") return dec(v, 1) + " ms";
    return Math.trunc(v).toLocaleString("en-US");
  }
  function render(k) {
    document.querySelectorAll(".value[id^='kpi-']").forEach(function (el) {
      var name = el.id.slice(4);
      var text = fmt(el.dataset.kind, k[name]);
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.add("changed");
        setTimeout(function () { el.classList.remove("changed"); }, 800);
      }
    });
  }
  var form = document.getElementById("signin");
  var formError = document.getElementById("signin-error");
  var tokens = null;  // in memory only
  var timer = null;
  function post(path, body) {
    return fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify(body)})
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          if (!r.ok) throw new Error(b.detail || ("HTTP " + r.status));
          return b;
        });
      });
  }
  function signedOut(message) {
    tokens = null;
    form.hidden = false;
    formError.textContent = message || "";
    status.className = "stale";
    status.textContent = "sign in as a viewer, operator or admin to see the figures";
  }
  function kpis() {
    return fetch("/dashboard/kpis", {cache: "no-store", headers: {
      "Accept": "application/json", "Authorization": "Bearer " + tokens.access_token}});
  }
  function tick() {
    timer = null;
    if (!tokens) return;
    kpis()
      .then(function (r) {
        if (r.status !== 401) return r;
        // The access token expired or its session ended: one refresh, then sign in again.
        return post("/api/v1/users/token/refresh", {refresh_token: tokens.refresh_token})
          .then(function (t) { tokens = t; return kpis(); },
                function (e) { throw {signIn: "please sign in again (" + e.message + ")"}; });
      })
      .then(function (r) {
        if (r.status === 401) throw {signIn: "your session has ended"};
        if (r.status === 403) {
          throw {signIn: "this account cannot see the figures (viewer, operator or admin)"};
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (k) {
        render(k);
        status.className = "";
        status.textContent = "live · updated " + new Date().toLocaleTimeString();
        document.body.dataset.updated = String(Date.now());
      })
      .catch(function (e) {
        if (e && e.signIn) { signedOut(e.signIn); return; }
        status.className = "stale";
        status.textContent = "stale · " + e.message + " · retrying";
      })
      .finally(function () { if (tokens && timer === null) timer = setTimeout(tick, REFRESH_MS); });
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    post("/api/v1/users/login", {username: document.getElementById("username").value,
                                 password: document.getElementById("password").value})
      .then(function (t) {
        tokens = t;
        form.hidden = true;
        formError.textContent = "";
        document.getElementById("password").value = "";
        tick();
      })
      .catch(function (e) { signedOut(e.message); });
  });
  signedOut();
})();
</script>
</body>
</html>
"""
