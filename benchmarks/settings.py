"""Knobs of one bench run, read from BENCH_* environment variables (defaults in brackets)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / ".build" / "bench"

# Ports of the deployed stack: the harness never binds these (it picks random free ports).
RESERVED_PORTS = frozenset({5432, 6379, 8000, 8101, 8102, 8103, 8104, 8105, 8106, 8107, 8108})


def _num(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"bench: {name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SystemExit(f"bench: {name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class BenchSettings:
    duration_s: int  # BENCH_DURATION_S [10]: each measured wrk / order run
    rounds: int  # BENCH_ROUNDS [3]: proxies compared in turn this many times, pooled
    warmup_s: int  # BENCH_WARMUP_S [2]: unmeasured run before each measured one
    connections: int  # BENCH_CONNECTIONS [32]: wrk connections
    threads: int  # BENCH_THREADS [2]: wrk threads (this machine has 2 cores)
    order_users: int  # BENCH_ORDER_USERS [8]: users placing orders, one worker each
    probe_workers: int  # BENCH_PROBE_WORKERS [8]: concurrent GETs in failover/breaker runs
    lookups: int  # BENCH_LOOKUPS [200000]: discovery lookups timed
    get_rate: float  # BENCH_GET_RATE [200]: GETs/s in the fixed-rate (open-loop) latency run
    order_rate: float  # BENCH_ORDER_RATE [50]: orders/s in the fixed-rate latency run
    inference_rate: float  # BENCH_INFERENCE_RATE [100]: predictions/s through the gateway
    pg_host: str  # BENCH_PG_HOST [127.0.0.1]
    pg_port: int  # BENCH_PG_PORT [5432]
    redis_port: int  # BENCH_REDIS_PORT [6379]
    redis_db: int  # BENCH_REDIS_DB [1]: never 0, the deployed gateway's registry
    database: str  # BENCH_DATABASE [gekko_bench]
    secrets_dir: Path  # BENCH_SECRETS_DIR [~/.gekko/secrets/local]

    @classmethod
    def from_env(cls) -> BenchSettings:
        env = os.environ
        redis_db = int(_num("BENCH_REDIS_DB", 1))
        if redis_db == 0:
            raise SystemExit("bench: BENCH_REDIS_DB must not be 0 (the deployed registry)")
        database = env.get("BENCH_DATABASE", "").strip() or "gekko_bench"
        if database == "gekko" or not database.replace("_", "").isalnum():
            raise SystemExit(f"bench: BENCH_DATABASE {database!r} is not a valid bench database")
        return cls(
            duration_s=int(_num("BENCH_DURATION_S", 10)),
            rounds=int(_num("BENCH_ROUNDS", 3)),
            warmup_s=int(_num("BENCH_WARMUP_S", 2)),
            connections=int(_num("BENCH_CONNECTIONS", 32)),
            threads=int(_num("BENCH_THREADS", 2)),
            order_users=int(_num("BENCH_ORDER_USERS", 8)),
            probe_workers=int(_num("BENCH_PROBE_WORKERS", 8)),
            lookups=int(_num("BENCH_LOOKUPS", 200_000)),
            get_rate=_num("BENCH_GET_RATE", 200),
            order_rate=_num("BENCH_ORDER_RATE", 50),
            inference_rate=_num("BENCH_INFERENCE_RATE", 100),
            pg_host="127.0.0.1",
            pg_port=int(_num("BENCH_PG_PORT", 5432)),
            redis_port=int(_num("BENCH_REDIS_PORT", 6379)),
            redis_db=redis_db,
            database=database,
            secrets_dir=Path(
                env.get("BENCH_SECRETS_DIR", "").strip() or "~/.gekko/secrets/local"
            ).expanduser(),
        )
