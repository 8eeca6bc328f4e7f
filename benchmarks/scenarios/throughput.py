"""Gateway vs nginx vs the upstream alone: one GET, same upstream instance, same wrk load.

Every request carries a signed-in user's bearer token, so the gateway verifies it and limits
the user's quota as it does for real traffic (nginx and the upstream ignore it). The gateway's
CPU per request is read (psutil) over its measured runs, and one more run is profiled with
py-spy when py-spy is installed (benchmarks/profile.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from benchmarks import profile, wrk
from benchmarks.settings import BenchSettings

PATH = "/api/v1/market-data/quotes/BTC-USD"


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run(
    cfg: BenchSettings,
    targets: dict[str, str],
    work_dir: Path,
    headers: Mapping[str, str],
    profile_pids: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """targets: label -> base URL. Each gets a warm-up run; then `cfg.rounds` rounds run every
    target in turn (a slow minute of this shared machine falls on all of them alike), pooled
    per target: requests/s over all its runs, the percentiles of its median round. A label in
    `profile_pids` has that process's CPU per request measured over its runs, and then one more
    run under py-spy (separate, so the profiler's pauses never count against judged numbers)."""
    pids = profile_pids or {}

    def load(label: str, duration_s: int) -> wrk.WrkResult:
        return wrk.run(targets[label] + PATH, duration_s=duration_s, connections=cfg.connections,
                       threads=cfg.threads, work_dir=work_dir, headers=headers)  # fmt: skip

    for label in targets:
        load(label, cfg.warmup_s)
    runs: dict[str, list[wrk.WrkResult]] = {label: [] for label in targets}
    cpu_s = dict.fromkeys(pids, 0.0)
    for _ in range(cfg.rounds):
        for label in targets:
            before = process_cpu_s(pids[label]) if label in pids else 0.0
            runs[label].append(load(label, cfg.duration_s))
            if label in pids:
                cpu_s[label] += process_cpu_s(pids[label]) - before
    entries = {label: _pooled(done) for label, done in runs.items()}
    for label, done in runs.items():
        entry = entries[label]
        print(
            f"  {label:<15} {entry['rps']:>9.1f} req/s  p50 {entry['p50_ms']:7.2f} ms  "
            f"p95 {entry['p95_ms']:7.2f} ms  p99 {entry['p99_ms']:7.2f} ms  "
            f"errors {entry['errors']}  non-2xx {entry['non_2xx']}  "
            f"(rounds: {' '.join(f'{r.rps:.0f}' for r in done)})",
            flush=True,
        )
        if label not in pids or not entry["requests"]:
            continue
        entry["cpu_us_per_request"] = round(cpu_s[label] / entry["requests"] * 1e6, 1)
        entry["cpu_cores"] = round(cpu_s[label] / entry["duration_s"], 2)
        print(f"  {'':<15} its process: {entry['cpu_us_per_request']} µs of CPU per request, "
              f"{entry['cpu_cores']} cores busy", flush=True)  # fmt: skip
    for label, pid in pids.items():
        recording = profile.Recording(pid, cfg.duration_s, work_dir / f"profile-{label}.txt")
        load(label, cfg.duration_s)  # profiled, not judged
        summary = recording.finish()
        if summary is not None:
            entries[label]["profile"] = summary.as_dict()
            print(f"  {label}:", flush=True)
            print("\n".join(summary.lines()), flush=True)
    return {"path": PATH, "rounds": cfg.rounds, **entries}


def _pooled(runs: list[wrk.WrkResult]) -> dict[str, Any]:
    median = sorted(runs, key=lambda r: r.rps)[len(runs) // 2]
    requests = sum(r.requests for r in runs)
    duration = sum(r.duration_s for r in runs)
    return {
        **median.as_dict(),
        "requests": requests,
        "duration_s": round(duration, 2),
        "rps": round(requests / duration, 1) if duration else 0.0,
        "errors": sum(r.errors for r in runs),
        "non_2xx": sum(r.non_2xx for r in runs),
        "rounds_rps": [r.rps for r in runs],
    }
