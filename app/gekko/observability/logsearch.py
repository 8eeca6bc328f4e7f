"""`gekko logs --correlation-id <id>`: one request's lines from the central log store, in order.

The store (gekko.platform.central_logs) writes every container's lines to
`<dir>/<host>/<container>.log`, one per line as `<RFC 3339 time> <host> <container> <message>`;
logrotate leaves `<container>.log.1` and older `<container>.log.<n>.gz` beside it. The search
reads them all, keeps the lines of the request and prints them merged in time order.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

DEFAULT_DIR = "/var/log/gekko"


# <container>.log, and what logrotate made of it: <container>.log.<n>, <container>.log.<n>.gz.
_STORE_FILE = re.compile(r"^(?P<container>.+)\.log(?:\.(?P<rotation>\d+))?(?:\.gz)?$")


@dataclass(frozen=True)
class LogLine:
    at: datetime
    host: str
    container: str
    message: str
    stamp: str  # the time as the store wrote it

    def __str__(self) -> str:
        return f"{self.stamp} {self.host} {self.container} {self.message}"


def parse_line(text: str) -> LogLine | None:
    """A store line, or None for one that is not (cut short, or written by something else)."""
    parts = text.rstrip("\n").split(" ", 3)
    if len(parts) < 4:
        return None
    try:
        at = datetime.fromisoformat(parts[0])
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return LogLine(at, parts[1], parts[2], parts[3], parts[0])


def store_files(root: Path) -> list[Path]:
    """Every container's current and rotated files, each container's oldest rotation first."""
    files = []
    for path in root.glob("*/*.log*"):
        match = _STORE_FILE.match(path.name)
        if match and path.is_file():
            rotation = int(match["rotation"] or 0)
            files.append(((path.parent.name, match["container"], -rotation), path))
    return [path for _key, path in sorted(files)]


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def mentions(message: str, correlation_id: str) -> bool:
    """The platform's JSON lines by their correlation_id field; any other line when it holds the
    id as a whole word (a plain-text line from a library, say)."""
    if correlation_id not in message:
        return False
    try:
        entry = json.loads(message)
    except ValueError:
        entry = None
    if isinstance(entry, dict):
        return entry.get("correlation_id") == correlation_id
    return re.search(rf"(?<![\w.:-]){re.escape(correlation_id)}(?![\w.:-])", message) is not None


def _matching(path: Path, correlation_id: str) -> Iterator[LogLine]:
    try:
        with _open(path) as handle:
            for text in handle:
                if correlation_id not in text:
                    continue
                line = parse_line(text)
                if line is not None and mentions(line.message, correlation_id):
                    yield line
    except (OSError, EOFError) as exc:  # a file rotated away meanwhile, or a cut-short .gz
        print(f"gekko logs: skipped {path}: {exc}", file=sys.stderr)


def search(root: Path, correlation_id: str) -> list[LogLine]:
    """The request's lines from every host and container in time order (lines of one time in the
    order they were written); a line the store got twice (RELP resends what a store that went
    away had not acknowledged) counts once."""
    found = dict.fromkeys(
        line for path in store_files(root) for line in _matching(path, correlation_id)
    )
    return sorted(found, key=lambda line: line.at)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gekko logs",
        description="Follow one request across services in the central log store.",
    )
    parser.add_argument("--correlation-id", required=True, help="the request's X-Correlation-ID")
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help=f"the store's folder (default {DEFAULT_DIR})"
    )
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        print(f"gekko logs: {root} is not a folder (run this on a logs host)", file=sys.stderr)
        return 2
    lines = search(root, args.correlation_id)
    for line in lines:
        print(line)
    if not lines:
        print(f"gekko logs: no line mentions {args.correlation_id} under {root}", file=sys.stderr)
        return 1
    return 0
