"""Run wrk for a fixed duration and connection count and parse its result.

wrk's text summary has p50/p90/p99 but no p95, so a `done()` hook (wrk's Lua API) prints one
JSON line with every number; the text's `Requests/sec` is parsed as a cross-check.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "WRK_JSON "
DONE_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d}}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99)))
end
""".replace("MARKER", MARKER)

_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    url: str
    duration_s: float
    connections: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors (connect/read/write/timeout)
    non_2xx: int  # responses outside 2xx/3xx

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse(output: str, url: str, connections: int) -> WrkResult:
    line = next((ln for ln in output.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise WrkError(f"wrk printed no result line:\n{output[-2000:]}")
    data = json.loads(line[len(MARKER) :])
    duration_s = data["duration_us"] / 1e6
    text_rps = _RPS.search(output)
    rps = float(text_rps.group(1)) if text_rps else data["requests"] / duration_s
    lat = data["latency_us"]
    errors = data["errors"]
    return WrkResult(
        url=url,
        duration_s=round(duration_s, 2),
        connections=connections,
        requests=data["requests"],
        rps=round(rps, 1),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        non_2xx=errors["status"],
    )


def run(
    url: str,
    *,
    duration_s: int,
    connections: int,
    threads: int,
    work_dir: Path,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (apt-get install wrk)")
    script = work_dir / "wrk_done.lua"
    script.write_text(DONE_SCRIPT)
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
        url,
    ]
    proc = subprocess.run(  # noqa: S603 - fixed argv
        argv, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout[-500:]}")
    return parse(proc.stdout, url, connections)
