"""Gateway vs nginx vs the upstream alone: one GET, same upstream instance, same wrk load."""

from __future__ import annotations

from pathlib import Path

from benchmarks import wrk
from benchmarks.settings import BenchSettings

PATH = "/api/v1/market-data/quotes/BTC-USD"


def run(cfg: BenchSettings, targets: dict[str, str], work_dir: Path) -> dict[str, object]:
    """targets: label -> base URL. Each gets a warm-up run, then the measured run."""
    results: dict[str, object] = {"path": PATH}
    for label, base in targets.items():
        url = base + PATH
        wrk.run(
            url,
            duration_s=cfg.warmup_s,
            connections=cfg.connections,
            threads=cfg.threads,
            work_dir=work_dir,
        )
        result = wrk.run(
            url,
            duration_s=cfg.duration_s,
            connections=cfg.connections,
            threads=cfg.threads,
            work_dir=work_dir,
        )
        results[label] = result.as_dict()
        print(
            f"  {label:<15} {result.rps:>9.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p95 {result.p95_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"errors {result.errors}  non-2xx {result.non_2xx}",
            flush=True,
        )
    return results
