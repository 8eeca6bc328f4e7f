"""Where a process's CPU goes while a measurement runs: a py-spy profile, summarised.

py-spy samples the process's Python stacks from outside, with no change to the process. It
pauses the process for each sample, about 1 % of its time at 100 samples/s; without the pause,
stacks read while the process runs are sometimes garbage. Each sample is charged to the code
that caused it: walking from the innermost frame outwards, the first frame that is not generic
machinery (the event loop, the standard library) names the part. So time in `asyncio` on behalf
of redis-py counts as the rate limiter's, and time in uvicorn's parser as the server's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 100

# (part, pattern on a frame's file path), first match wins. Order matters: gekko's own modules
# are matched by their exact file before the broad library patterns.
PARTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        (
            "rate limiter (gekko.ratelimit, redis-py)",
            r"gekko/ratelimit\.py|gekko/script_batch\.py|/redis/|/limits/",
        ),
        ("tracing (OpenTelemetry)", r"gekko/tracing\.py|/opentelemetry/"),
        ("metrics (prometheus_client)", r"gekko/metrics\.py|/prometheus_client/"),
        ("correlation ids, body limit, logs", r"gekko/correlation\.py|gekko/security/|gekko/logs"),
        ("upstream client (gekko.gateway.upstream)", r"gekko/gateway/upstream\.py"),
        ("aiohttp (health checks, API documents)", r"/aiohttp/|/yarl/|/multidict/"),
        ("proxy (gekko.gateway)", r"gekko/gateway/"),
        ("HTTP server (uvicorn, httptools)", r"/uvicorn/|/httptools/|/h11/"),
        ("ASGI framework (starlette, fastapi)", r"/starlette/|/fastapi/|/anyio/"),
        ("other gekko code", r"gekko/"),
    )
)
# Frames that do work for whoever called them: look further out.
GENERIC = re.compile(r"/asyncio/|/concurrent/|/selectors\.py|/socket\.py|/ssl\.py|/json/|"
                     r"/typing\.py|/contextvars|/contextlib\.py|/functools\.py|/enum\.py|"
                     r"/logging/|/threading\.py|/abc\.py|/uvloop/|<frozen|\(<")  # fmt: skip
EVENT_LOOP = "event loop, standard library"
SITE_PACKAGE = re.compile(r"site-packages/([^/]+)")
FRAME_FILE = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)$")


@dataclass(frozen=True)
class Summary:
    samples: int
    busy_pct: float  # share of the wall-clock samples the process was on a CPU
    parts: list[tuple[str, float]]  # part -> share of the busy samples, largest first
    top_functions: list[tuple[str, float]]  # innermost frames, share of busy samples

    def as_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "busy_pct": self.busy_pct,
            "parts_pct": dict(self.parts),
            "top_functions_pct": dict(self.top_functions),
        }

    def lines(self) -> list[str]:
        out = [f"  profile: busy {self.busy_pct:.0f} % of the time ({self.samples} samples)"]
        out += [f"    {pct:5.1f} %  {part}" for part, pct in self.parts]
        return out


def part_of(frames: list[str]) -> str:
    """frames: outermost first. The part that caused the innermost frame's work."""
    for frame in reversed(frames):
        m = FRAME_FILE.search(frame)
        file = m.group("file") if m else frame
        if GENERIC.search(frame):
            continue
        for name, pattern in PARTS:
            if pattern.search(file):
                return name
        package = SITE_PACKAGE.search(file)
        return f"other: {package.group(1)}" if package else EVENT_LOOP
    return EVENT_LOOP


def short_name(frame: str) -> str:
    """`func (/long/path/module.py:12)` -> `func (module.py)`."""
    m = FRAME_FILE.search(frame)
    if m is None:
        return frame
    return f"{frame[: m.start()].strip()} ({m.group('file').rsplit('/', 1)[-1]})"


def summarise(collapsed: str, duration_s: float, rate_hz: int = RATE_HZ) -> Summary:
    """collapsed: py-spy's raw output, one `frame;frame;...;frame count` line per stack."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or not FRAME_FILE.search(stack.split(";", 1)[0]):
            continue  # not a stack line
        frames = stack.split(";")
        # py-spy's first frame is the thread ("process 12:"... or the thread name).
        frames = [f for f in frames if "(" in f]
        n = int(count)
        total += n
        parts[part_of(frames)] += n
        if frames:
            leaves[short_name(frames[-1])] += n
    if not total:
        return Summary(0, 0.0, [], [])
    share = [(p, round(100 * n / total, 1)) for p, n in parts.most_common()]
    top = [(f, round(100 * n / total, 1)) for f, n in leaves.most_common(12)]
    busy = min(100.0, round(100 * total / (duration_s * rate_hz), 1))
    return Summary(total, busy, share, top)


def py_spy() -> str | None:
    """py-spy beside this interpreter (requirements/dev.txt pins it), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """`py-spy record` of one pid for `duration_s`, started now, summarised by `finish()`."""

    def __init__(self, pid: int, duration_s: float, out: Path) -> None:
        self.duration_s = duration_s
        self.out = out
        exe = py_spy()
        self.proc: subprocess.Popen[bytes] | None = None
        if exe is None:
            return
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own pid
            [exe, "record", "--pid", str(pid), "--duration", str(int(duration_s)),
             "--rate", str(RATE_HZ), "--format", "raw", "--full-filenames",
             "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def finish(self) -> Summary | None:
        if self.proc is None:
            return None
        try:
            _, err = self.proc.communicate(timeout=self.duration_s + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        if self.proc.returncode != 0 or not self.out.exists():
            print(f"  profile: py-spy failed: {err.decode(errors='replace').strip()[-200:]}")
            return None
        return summarise(self.out.read_text(), self.duration_s)
