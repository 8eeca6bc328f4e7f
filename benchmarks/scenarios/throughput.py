"""Gateway vs nginx vs the upstream alone: one GET, same upstream instance, same wrk load.

Every request carries a signed-in user's bearer token, so the gateway verifies it and limits
the user's quota as it does for real traffic (nginx and the upstream ignore it). The gateway's
CPU per request is read from /proc over its measured run, and one more run is profiled with
py-spy when py-spy is installed (benchmarks/profile.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from benchmarks import profile, wrk
from benchmarks.settings import BenchSettings

PATH = "/api/v1/market-data/quotes/BTC-USD"


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    cfg: BenchSettings,
    targets: dict[str, str],
    work_dir: Path,
    headers: Mapping[str, str],
    profile_pids: Mapping[str, int] | None = None,
) -> dict[str, object]:
    """targets: label -> base URL. Each gets a warm-up run, then the measured run; a label in
    `profile_pids` has that process's CPU per request measured, and then one more run under
    py-spy (separate, so the profiler's pauses never count against the judged numbers)."""
    results: dict[str, object] = {"path": PATH}
    for label, base in targets.items():
        url = base + PATH

        def load(duration_s: int, url: str = url) -> wrk.WrkResult:
            return wrk.run(url, duration_s=duration_s, connections=cfg.connections,
                           threads=cfg.threads, work_dir=work_dir, headers=headers)  # fmt: skip

        load(cfg.warmup_s)
        pid = (profile_pids or {}).get(label)
        cpu_before = process_cpu_s(pid) if pid is not None else 0.0
        result = load(cfg.duration_s)
        results[label] = entry = result.as_dict()
        print(
            f"  {label:<15} {result.rps:>9.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p95 {result.p95_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
            f"errors {result.errors}  non-2xx {result.non_2xx}",
            flush=True,
        )
        if pid is None or not result.requests:
            continue
        spent = process_cpu_s(pid) - cpu_before
        entry["cpu_us_per_request"] = round(spent / result.requests * 1e6, 1)
        entry["cpu_cores"] = round(spent / result.duration_s, 2)
        print(f"  {'':<15} its process: {entry['cpu_us_per_request']} µs of CPU per request, "
              f"{entry['cpu_cores']} cores busy", flush=True)  # fmt: skip
        recording = profile.Recording(pid, cfg.duration_s, work_dir / f"profile-{label}.txt")
        load(cfg.duration_s)  # profiled, not judged
        summary = recording.finish()
        if summary is not None:
            entry["profile"] = summary.as_dict()
            print("\n".join(summary.lines()), flush=True)
    return results
