"""The final table, the target checks, and .build/bench/results.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    metric: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.2f} ms"


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    tp = results.get("throughput") or {}
    gw = tp.get("gateway")
    labels = {
        "upstream": "upstream alone",
        "nginx": "nginx",
        "gateway": "gateway",
        "gateway_nolimit": "gateway, no rate limit",
    }
    for label, title in labels.items():
        r = tp.get(label)
        if r:
            out.append(
                Row(
                    f"GET {title}, saturated (wrk -c{r['connections']}): req/s / p50 / p99",
                    f"{r['rps']:.0f} / {_ms(r['p50_ms'])} / {_ms(r['p99_ms'])}",
                )
            )
    if gw:
        # Saturation latency is mostly queueing behind 32 busy connections: shown, not judged.
        out.append(Row("GET gateway, saturated: p95", _ms(gw["p95_ms"])))
        ok = gw["errors"] == 0 and gw["non_2xx"] == 0
        out.append(
            Row(
                "GET gateway, saturated: errors / non-2xx",
                f"{gw['errors']} / {gw['non_2xx']}",
                "0",
                ok,
            )
        )
        if tp.get("nginx"):
            ratio = gw["rps"] / tp["nginx"]["rps"] if tp["nginx"]["rps"] else 0.0
            out.append(Row("gateway / nginx throughput, saturated", f"{ratio:.1%}",
                           ">= 60 %", ratio >= 0.6))  # fmt: skip
    fixed = results.get("fixed_rate") or {}
    out.extend(_fixed_get_ratios(fixed.get("get") or {}))
    for label, r in (fixed.get("get") or {}).items():
        title = f"GET {label} at {r['rate_per_s']:g}/s"
        gateway = label == "gateway"
        out.extend(_fixed_rate_rows(title, r, p95_limit=100 if gateway else None, judged=gateway))
    if fo := fixed.get("orders"):
        out.extend(_fixed_rate_rows(f"orders at {fo['rate_per_s']:g}/s", fo, 100, 50))
    if fi := fixed.get("inference"):
        title = f"inference via gateway at {fi['rate_per_s']:g}/s"
        out.extend(_fixed_rate_rows(title, fi, p99_limit=50))
    d = results.get("discovery")
    if d:
        out.append(
            Row(
                "discovery lookup: mean / p99",
                f"{d['mean_us']:.2f} µs / {d['p99_us']:.2f} µs",
                "< 5 ms",
                d["p99_us"] < 5000,
            )
        )
    lim = results.get("limiter")
    if lim:
        # What the limiter costs the (single-process) gateway per request: shown, not judged.
        out.append(
            Row(
                "rate limiter in process: CPU per check / checks/s / p99",
                f"{lim['cpu_us_per_check']} µs / {lim['checks_per_s']} / {_ms(lim['p99_ms'])}",
            )
        )
    out.extend(_inference_rows(results.get("inference")))
    out.extend(_market_feed_rows(results.get("market_feed")))
    b = results.get("breaker")
    if b:
        det = b["detection_ms"]
        out.append(Row("breaker detection", _ms(det), "< 1000 ms", det is not None and det < 1000))
    f = results.get("failover")
    if f:
        off = f["routed_off_ms"]
        out.append(
            Row(
                f"failover: routed off ({f['routed_off_by'] or 'not seen'})",
                _ms(off),
                "< 5000 ms",
                off is not None and off < 5000,
            )
        )
        out.append(
            Row(
                "failover: failed requests / last failure",
                f"{f['failed_after_kill']} of {f['requests_after_kill']} / "
                f"{_ms(f['last_failure_ms'])}",
                "< 5000 ms",
                f["last_failure_ms"] < 5000,
            )
        )
    o = results.get("orders")
    if o:
        out.append(
            Row(
                f"orders, saturated ({o['concurrency']} workers): filled/s / p50 / p99",
                f"{o['orders_per_s']:.1f} /s / {_ms(o['p50_ms'])} / {_ms(o['p99_ms'])}",
            )
        )
        out.append(Row("orders, saturated: p95", _ms(o["p95_ms"])))
        out.append(
            Row(
                "orders, saturated: failed",
                f"{o['failed']} of {o['orders']}",
                "0",
                o["failed"] == 0,
            )
        )
    out.extend(_rollback_rows(results.get("rollback")))
    return out


def _rollback_rows(rb: dict[str, Any] | None) -> list[Row]:
    """The deployment requirements' rollback within 30 s of failure detection, in the worst case
    the e2e suite injects (every container of the release restored)."""
    if not rb:
        return []
    title = "rollback after a failed deploy (every container restored)"
    if "error" in rb:
        return [Row(title, rb["error"][:60], "< 30 s", False)]
    value = f"{rb['seconds']:.1f} s (deploy {rb['deploy_s']:.0f} s)"
    if not rb["restored"]:
        value += f", not restored: {', '.join(rb['not_restored']) or 'the release record'}"
    return [Row(title, value, "< 30 s", rb["seconds"] < 30 and rb["restored"])]


def _fixed_rate_rows(
    title: str,
    r: dict[str, Any],
    p95_limit: float | None = None,
    p99_limit: float | None = None,
    judged: bool = True,
) -> list[Row]:
    """A fixed-rate run: its percentiles, then its targets and failures when judged."""
    out = [Row(f"{title} fixed: p50 / p95 / p99",
               f"{_ms(r['p50_ms'])} / {_ms(r['p95_ms'])} / {_ms(r['p99_ms'])}")]  # fmt: skip
    if not judged:
        return out
    for pct, limit in (("p95", p95_limit), ("p99", p99_limit)):
        if limit is not None:
            value = r[f"{pct}_ms"]
            out.append(Row(f"{title}: {pct}", _ms(value), f"< {limit:g} ms",
                           value < limit and r["ok"] > 0))  # fmt: skip
    out.append(Row(f"{title}: failed", f"{r['failed']} of {r['sent']}", "0", r["failed"] == 0))
    return out


def _market_feed_rows(feed: dict[str, Any] | None) -> list[Row]:
    """FR-API-002's exchange-to-publish latency, held to the platform's 50 ms budget for what a
    trader acts on (NFR-PERF-001)."""
    if not feed:
        return []
    if "error" in feed:
        return [Row("market data, venue stream to Redis: p99", feed["error"], "< 50 ms", False)]
    return [
        Row(f"market data, venue stream to Redis ({feed['rate_per_s']:g}/s): p50 / p99",
            f"{_ms(feed['p50_ms'])} / {_ms(feed['p99_ms'])}", "< 50 ms",
            feed["p99_ms"] < 50 and feed["reconnects"] == 0),
    ]  # fmt: skip


def _fixed_get_ratios(gets: dict[str, Any]) -> list[Row]:
    """The gateway's tail beside nginx's at the same fixed rate: p99 within 2x, p95 within 3x."""
    gw, ng = gets.get("gateway"), gets.get("nginx")
    if not gw or not ng:
        return []
    out = []
    for pct, limit in (("p99", 2.0), ("p95", 3.0)):
        g, n = gw[f"{pct}_ms"], ng[f"{pct}_ms"]
        ratio = g / n if n else float("inf")
        out.append(Row(f"GET at {gw['rate_per_s']:g}/s fixed: gateway / nginx {pct}",
                       f"{ratio:.2f}x ({_ms(g)} / {_ms(n)})", f"<= {limit:g}x",
                       ratio <= limit and gw["failed"] == 0))  # fmt: skip
    return out


def _inference_rows(inf: dict[str, Any] | None) -> list[Row]:
    """NFR-PERF-003: under 50 ms per inference (p99); the aim is under 5 ms."""
    if not inf:
        return []
    device = inf["device"]
    s, b = inf["single"], inf["batched"]
    # Through the gateway, inference is judged at a fixed rate (fixed_rate's rows).
    return [
        Row(f"inference ({device}), one request in process: p50 / p99",
            f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])}", "< 5 ms", s["p99_ms"] < 5),
        Row(f"inference ({device}), {b['concurrency']} concurrent, batched: p50 / p99 / req/s",
            f"{_ms(b['p50_ms'])} / {_ms(b['p99_ms'])} / {b['per_s']:.0f}", "< 5 ms",
            b["p99_ms"] < 5),
    ]  # fmt: skip


def table(rs: list[Row]) -> str:
    width = max(len(r.metric) for r in rs)
    vwidth = max(len(r.value) for r in rs)
    lines = [
        f"{'metric':<{width}}  {'result':<{vwidth}}  {'target':<10}  ok",
        "-" * (width + vwidth + 18),
    ]
    for r in rs:
        mark = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(f"{r.metric:<{width}}  {r.value:<{vwidth}}  {r.target:<10}  {mark}")
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
