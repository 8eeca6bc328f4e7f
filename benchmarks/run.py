"""`make bench` entry point: `python -m benchmarks.run` from the repository root.

Order: discovery microbenchmark and signal inference (in process), the rate limiter and a
venue's market data to Redis (in process, on the bench's Redis), then a private stack on
random loopback ports (every domain service, the gateway, a reference gateway without rate
limiting, nginx; database gekko_bench and Redis DB 1 on the deployed datastores), then GET
throughput at saturation (upstream alone, nginx, gateway), latency at fixed rates (GETs via
nginx and the gateway, orders via the gateway), orders at saturation, inference through the
gateway, failover, and breaker detection; last, with the deployed stack running again, a failed
deploy's rollback on it (BENCH_ROLLBACK=0 leaves it out). Each result is printed as it comes,
then a table; everything is written to .build/bench/results.json.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import preflight, quiet, report
from benchmarks.scenarios import (
    breaker,
    discovery,
    failover,
    fixed_rate,
    inference,
    limiter,
    market_feed,
    orders,
    rollback,
    throughput,
)
from benchmarks.settings import OUT_DIR, REPO_ROOT, BenchSettings
from benchmarks.stack import Proc, Stack, StackError
from gekko.config import DOMAIN_SERVICES

SERVICES = DOMAIN_SERVICES
# Per-service settings the private stack needs (the image sets the model path in production).
SERVICE_ENV = {"signals": {"GEKKO_SIGNAL_MODEL_PATH": str(inference.MODEL_PATH)}}
# Every gateway feature stays on; only the quotas are raised, so the limiter still takes both
# quotas in Redis on every request but never refuses bench traffic (wrk is one client IP
# sending ~15k requests a minute, and 1000/min per service would cap orders at ~17/s).
GATEWAY_ENV = {
    "GEKKO_RATELIMIT_ENABLED": "true",
    "GEKKO_RATELIMIT_USER_PER_WINDOW": "1000000",
    "GEKKO_RATELIMIT_SERVICE_PER_WINDOW": "1000000",
    "GEKKO_RATELIMIT_ANONYMOUS_PER_WINDOW": "1000000",
}
NOLIMIT_ENV = {"GEKKO_RATELIMIT_ENABLED": "false"}
STAGES = 11


@dataclass(frozen=True)
class BenchStack:
    services: dict[str, Proc]
    gateway: Proc
    gateway_nolimit: Proc  # reference only: the same gateway without Redis rate limiting
    nginx: Proc
    tokens: list[str]  # access tokens of bench users, signed in through the gateway

    @property
    def auth(self) -> dict[str, str]:
        """The GETs' header: the gateway verifies the token and limits its user's quota."""
        return {"Authorization": f"Bearer {self.tokens[0]}"}

    @property
    def market_data(self) -> Proc:
        return self.services["market_data"]


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except OSError:
        return "unknown"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = model[0].split(":", 1)[1].strip() if model else cpu
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "commit": _first_line(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"]),
    }


def stage(n: int, title: str) -> None:
    print(f"\n[{n}/{STAGES}] {title}", flush=True)


def start_stack(cfg: BenchSettings, stack: Stack) -> BenchStack:
    services = {
        name: stack.start_component(name, extra_env=SERVICE_ENV.get(name)) for name in SERVICES
    }
    for proc in services.values():
        stack.wait_http(proc, "/health", {200}, timeout_s=60)
    gateway = stack.start_component("gateway", extra_env=GATEWAY_ENV)
    nolimit = stack.start_component("gateway", name="gateway-nolimit", extra_env=NOLIMIT_ENV)
    market = services["market_data"]
    nginx = stack.start_nginx(market.port, cfg.connections)
    for gw in (gateway, nolimit):
        stack.wait_http(gw, "/health", {200}, timeout_s=60)
        asyncio.run(failover.wait_routable(gw.url, "market_data", {market.url}, 20))
    stack.wait_http(nginx, "/api/v1/market-data/symbols", {200}, timeout_s=15)
    for proc in stack.procs:
        print(f"  {proc.name:<15} {proc.url}  (pid {proc.popen.pid})", flush=True)
    tokens = asyncio.run(orders.sign_in_users(gateway.url, "get", cfg.order_users))
    return BenchStack(services, gateway, nolimit, nginx, tokens)


def measure(cfg: BenchSettings, stack: Stack, s: BenchStack, results: dict[str, Any]) -> None:
    # The load generator holds torch (stage 2) and its own results: a full garbage collection of
    # it stalled the open-loop sender by 200 ms, charged to whichever proxy was measured then.
    gc.collect()
    gc.freeze()
    stage(
        5,
        f"GET throughput at saturation: wrk -t{cfg.threads} -c{cfg.connections} "
        f"-d{cfg.duration_s}s after a {cfg.warmup_s} s warm-up, {cfg.rounds} rounds in turn; "
        "one market_data instance behind each proxy",
    )
    targets = {
        "upstream": s.market_data.url,
        "nginx": s.nginx.url,
        "gateway": s.gateway.url,
        "gateway_nolimit": s.gateway_nolimit.url,
    }
    results["throughput"] = throughput.run(
        cfg,
        targets,
        stack.log_dir,
        s.auth,
        profile_pids={
            "gateway": s.gateway.popen.pid,
            "gateway_nolimit": s.gateway_nolimit.popen.pid,
        },
    )
    s.gateway_nolimit.stop()

    stage(
        6,
        f"latency at fixed rates (open loop, from the scheduled send time): "
        f"{cfg.get_rate:g} GETs/s via nginx and via the gateway ({cfg.rounds} rounds in turn), "
        f"{cfg.order_rate:g} orders/s via the gateway; {cfg.duration_s} s each after a "
        f"{cfg.warmup_s} s warm-up",
    )
    results["fixed_rate"] = {
        "get": fixed_rate.run_gets(cfg, {"nginx": s.nginx.url, "gateway": s.gateway.url}, s.auth),
        "orders": fixed_rate.run_orders(cfg, s.gateway.url),
    }
    s.nginx.stop()

    stage(
        7,
        f"orders at saturation: {cfg.order_users} users, one worker each, "
        f"{cfg.duration_s} s after a {cfg.warmup_s} s warm-up",
    )
    results["orders"] = orders.run(cfg, s.gateway.url)

    stage(
        8,
        f"signal inference through the gateway at {cfg.inference_rate:g}/s fixed: "
        "POST /api/v1/signals/predict",
    )
    results["fixed_rate"]["inference"] = fixed_rate.run_inference(cfg, s.gateway.url, s.tokens)

    stage(9, "failover: a second market_data instance, steady GETs, SIGKILL it")
    results["failover"] = failover.run(cfg, stack, s.gateway.url, s.market_data)

    stage(10, "breaker detection: SIGKILL the last market_data instance under steady GETs")
    results["breaker"] = breaker.run(cfg, s.gateway.url, s.market_data)


def main() -> int:
    cfg = BenchSettings.from_env()
    search = f"{os.environ.get('PATH', os.defpath)}:/usr/sbin"
    missing = [t for t in ("wrk", "nginx") if not shutil.which(t, path=search)]
    if missing:
        print(
            f"bench: not installed: {' '.join(missing)} (apt-get install nginx wrk)",
            file=sys.stderr,
        )
        return 2
    # A TERM from make or CI, or a HUP from a closed terminal, unwinds like Ctrl-C: the finally
    # blocks stop every process and unpause the deployed stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    log_dir = OUT_DIR / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "duration_s": cfg.duration_s,
            "rounds": cfg.rounds,
            "warmup_s": cfg.warmup_s,
            "connections": cfg.connections,
            "wrk_threads": cfg.threads,
            "order_users": cfg.order_users,
            "probe_workers": cfg.probe_workers,
            "get_rate": cfg.get_rate,
            "order_rate": cfg.order_rate,
            "gateway_env": GATEWAY_ENV,
        },
    }
    m = results["machine"]
    print(f"gekko bench, {m['date']}, commit {m['commit']}")
    print(f"{m['cpu']}, {m['cores']} cores shared by the load generator and every server")
    print(f"load average at start: {m['load_average_at_start']}", flush=True)
    if left := quiet.unpause_left_over():
        print(f"unpaused {len(left)} containers an interrupted run left paused", flush=True)
    started = time.monotonic()
    with quiet.deployed_stack_paused() as paused:
        m["deployed_containers_paused"] = paused
        if paused:
            note = "not its datastores or logs; BENCH_PAUSE_DEPLOYED=0 leaves it running"
            print(f"deployed stack paused for the run: {len(paused)} containers ({note})")
        failed = measure_all(cfg, results, log_dir)
    if failed:
        return failed
    measure_rollback(results)
    return finish(results, started)


def measure_rollback(results: dict[str, Any]) -> None:
    if not rollback.enabled():
        stage(11, "rollback after a failed deploy: left out (BENCH_ROLLBACK=0)")
        return
    stage(
        11,
        "rollback after a failed deploy on the deployed stack (running again): an invalid "
        "configuration the gateway refuses, every container of the release restored",
    )
    try:
        results["rollback"] = rb = rollback.run()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        results["rollback"] = {"error": str(exc)}  # a missed target, the rest is reported
        print(f"  failed: {exc}", flush=True)
        return
    print(
        f"  restored in {rb['seconds']} s after the failure (the deploy took {rb['deploy_s']} s); "
        f"every container as it was: {rb['restored']}",
        flush=True,
    )


def finish(results: dict[str, Any], started: float) -> int:
    """The table of every result and target, and results.json."""
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    rows = report.rows(results)
    results["targets"] = [r.__dict__ for r in rows if r.met is not None]
    out = OUT_DIR / "results.json"
    report.write_json(out, results)
    met = sum(1 for r in rows if r.met)
    checked = sum(1 for r in rows if r.met is not None)
    print("\n" + report.table(rows))
    print(f"\n{met} of {checked} targets met in {results['elapsed_s']} s")
    print(f"results: {out.relative_to(REPO_ROOT)}")
    strict = os.environ.get("BENCH_STRICT", "").strip().lower() in ("1", "true", "yes")
    return 1 if strict and met < checked else 0


def measure_all(cfg: BenchSettings, results: dict[str, Any], log_dir: Path) -> int:
    """Stages 1 to 10, with the deployed stack paused: 0, or the exit status of a failed run."""
    stage(1, f"discovery lookup: {cfg.lookups} lookups in process")
    results["discovery"] = d = discovery.run(cfg.lookups)
    print(f"  mean {d['mean_us']} µs  p99 {d['p99_us']} µs", flush=True)

    stage(2, "signal inference in process: one request at a time, then micro-batched")
    results["inference"] = inference.run()
    print("\n".join(inference.describe(results["inference"])), flush=True)

    stage(3, f"private stack: database {cfg.database}, Redis DB {cfg.redis_db}, random ports")
    try:
        stores = preflight.prepare(cfg, log_dir)
    except preflight.PreflightError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    stage(4, f"in process, on the bench's Redis: the rate limiter ({limiter.CHECKS} checks, "
             f"{limiter.IN_FLIGHT} in flight), then market data from a venue stream to Redis "
             f"({market_feed.EVENTS} trades at {market_feed.RATE_PER_S:g}/s)")  # fmt: skip
    redis_url = stores.service_env()["GEKKO_REDIS_URL"]
    results["limiter"] = lim = limiter.run(redis_url)
    print(f"  {lim['cpu_us_per_check']} µs of CPU per check, {lim['checks_per_s']} checks/s, "
          f"p99 {lim['p99_ms']} ms", flush=True)  # fmt: skip
    try:
        results["market_feed"] = feed = market_feed.run(redis_url)
        print(f"  exchange-to-publish p50 {feed['p50_ms']} ms, p99 {feed['p99_ms']} ms", flush=True)
    except (RuntimeError, OSError) as exc:  # reported as a missed target, the rest goes on
        results["market_feed"] = {"error": str(exc)}
        print(f"  market data: failed: {exc}", flush=True)
    stack = Stack(stores.service_env(), log_dir)
    try:
        measure(cfg, stack, start_stack(cfg, stack), results)
    except (StackError, RuntimeError, OSError, aiohttp.ClientError) as exc:
        print(f"\nbench: failed: {exc}\nprocess logs: {log_dir}", file=sys.stderr)
        return 1
    finally:
        stack.close()
        preflight.drop_database(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
