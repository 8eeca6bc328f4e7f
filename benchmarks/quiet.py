"""A quiet machine for the measurement: the deployed stack's own containers paused meanwhile.

The bench measures its private stack. On the same two cores the deployed platform keeps
running: a health-check process per container every few seconds, Prometheus scraping, the
exporters. Measured on this machine that is about a quarter of both cores, in bursts, and it
added tens of milliseconds to the fixed-rate p99s the targets judge (docs/benchmarks.md).

So, unless BENCH_PAUSE_DEPLOYED=0, the deployed containers are paused (`docker pause`, their
processes frozen, nothing restarted or lost) for the run and unpaused at its end, however it
ends (make's TERM and a closed terminal's HUP included). Left running: PostgreSQL and Redis (the
bench's datastores) and the log relay and store, of whatever deployment. The names paused are
written down first (.build/bench/paused-containers.txt), so a run killed outright has them
unpaused by the next one; `docker unpause $(cat .build/bench/paused-containers.txt)` does the
same by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from benchmarks.settings import OUT_DIR

PREFIX = "gekko-"
# The bench's datastores and the logs, by their role's suffix: every deployment's stay up.
KEEP_RUNNING = ("-postgres", "-redis", "-log-relay", "-log-store")
RECORD = OUT_DIR / "paused-containers.txt"


def _docker(*args: str) -> subprocess.CompletedProcess[str] | None:
    """None when docker is missing or did not answer in time."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        return subprocess.run(  # noqa: S603 - fixed argv
            [docker, *args], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return None


def _containers(status: str) -> list[str]:
    listed = _docker("ps", "--filter", f"status={status}", "--format", "{{.Names}}")
    if listed is None or listed.returncode != 0:
        return []
    names = listed.stdout.split()
    return sorted(n for n in names if n.startswith(PREFIX) and not n.endswith(KEEP_RUNNING))


def unpause_left_over(record: Path = RECORD) -> list[str]:
    """Unpause what an earlier run recorded and did not get to unpause."""
    if not record.exists():
        return []
    names = record.read_text().split()
    if names:
        done = _docker("unpause", *names)
        if done is None or done.returncode != 0:
            # kept for the next run: those still paused (not those running or removed since)
            paused = _containers("paused")
            still = [n for n in names if n in paused]
            if still:
                print(f"bench: could not unpause {' '.join(still)}; kept in {record}")
                record.write_text("\n".join(still) + "\n")
                return names
    record.unlink()
    return names


@contextlib.contextmanager
def deployed_stack_paused(record: Path = RECORD) -> Iterator[list[str]]:
    """Pause the deployed containers for the block; yields their names (none if disabled)."""
    if os.environ.get("BENCH_PAUSE_DEPLOYED", "1").strip().lower() in ("0", "false", "no"):
        yield []
        return
    names = _containers("running")
    if not names:
        yield []
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("\n".join(names) + "\n")
    try:
        _docker("pause", *names)
        yield names
    finally:
        unpause_left_over(record)
