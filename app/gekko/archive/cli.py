"""`gekko archive`: run (archive the months past their hot window), verify, restore one month,
prune (delete archives whose retention ended), months (make the partitions ahead).

As the database's owner: GEKKO_MIGRATE_DATABASE_URL (else GEKKO_DATABASE_URL). The retention of
each data class: GEKKO_RETENTION (gekko.archive.retention). Exit 0 when all is well, 1 when
something could not be done or does not check out, 2 for a configuration error."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gekko.archive import archiver
from gekko.archive.partitions import Month
from gekko.archive.retention import DataClass, RetentionError, parse

DEFAULT_DIRECTORY = "/var/lib/gekko/archive"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gekko archive", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=os.environ.get("GEKKO_ARCHIVE_DIR", DEFAULT_DIRECTORY),
        help="where the archive files are (GEKKO_ARCHIVE_DIR; default %(default)s)",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="archive every month past its data class's hot window")
    run.add_argument(
        "--copy-to",
        action="append",
        default=[p for p in os.environ.get("GEKKO_ARCHIVE_COPY_TO", "").split(":") if p],
        metavar="DIR",
        help="also copy each new archive here, and check the copy (GEKKO_ARCHIVE_COPY_TO, "
        "colon-separated: another disk or a mounted off-host store)",
    )
    verify = actions.add_parser("verify", help="check every archive, its copies and the anchors")
    verify.add_argument("--anchor", action="append", default=[], metavar="ROW:HASH")
    verify.add_argument("--anchors-file", metavar="PATH", help="the controller's anchors file")
    restore = actions.add_parser("restore", help="attach one archived month again, for 7 days")
    restore.add_argument("data_class", choices=("orders", "audit"))
    restore.add_argument("month", help="YYYY-MM")
    actions.add_parser("prune", help="delete the archives whose retention has ended")
    actions.add_parser("months", help="make the monthly partitions a year ahead")
    return parser


async def _connect() -> asyncpg.Connection:
    url = os.environ.get("GEKKO_MIGRATE_DATABASE_URL") or os.environ.get("GEKKO_DATABASE_URL")
    if not url:
        raise RetentionError("set GEKKO_MIGRATE_DATABASE_URL (the database owner's URL)")
    return await asyncpg.connect(url, timeout=10)


def _anchors(texts: list[str], path: str | None) -> list:
    from gekko.security.audit_anchors import Anchor

    if path:
        lines = Path(path).read_text().splitlines()
        texts = texts + [line.split()[0] for line in lines if line.strip()]
    return [Anchor.parse(text) for text in texts]


async def _main(args: argparse.Namespace) -> int:
    classes = parse(os.environ.get("GEKKO_RETENTION"))
    directory = Path(args.dir)
    anchors = _anchors(args.anchor, args.anchors_file) if args.action == "verify" else []
    conn = await _connect()
    try:
        async with archiver.one_job(conn):
            return await _act(conn, args, classes, directory, anchors)
    finally:
        await conn.close()


async def _act(
    conn: asyncpg.Connection,
    args: argparse.Namespace,
    classes: dict[str, DataClass],
    directory: Path,
    anchors: list,
) -> int:
    if args.action == "run":
        outcome = await archiver.run(
            conn, list(classes.values()), directory, [Path(p) for p in args.copy_to]
        )
        for line in outcome.created:
            print(f"gekko-archive: partition {line} made")
        for line in outcome.archived:
            print(f"gekko-archive: {line}")
        for line in outcome.kept:
            print(f"gekko-archive: kept {line}")
        for line in outcome.problems:
            print(f"gekko-archive: {line}", file=sys.stderr)
        print(f"gekko-archive: {len(outcome.archived)} month(s) archived", flush=True)
        return 1 if outcome.problems else 0
    if args.action == "verify":
        checked, problems = await archiver.verify(conn, directory, anchors)
        for line in checked:
            print(f"gekko-archive: {line}")
        for line in problems:
            print(f"gekko-archive: {line}", file=sys.stderr)
        print(
            f"gekko-archive: {len(checked)} archive(s) intact, {len(problems)} problem(s)",
            flush=True,
        )
        return 1 if problems else 0
    if args.action == "restore":
        month = Month.parse(args.month)
        done = await archiver.restore(conn, classes[args.data_class], month, directory)
        print(f"gekko-archive: {done}")
        return 0
    if args.action == "prune":
        done = await archiver.prune(conn, directory)
        for line in done:
            print(f"gekko-archive: {line}")
        print(f"gekko-archive: {len(done)} archive(s) past their retention deleted")
        return 0
    made = await archiver.make_months(conn, datetime.now(UTC))
    print(f"gekko-archive: {len(made)} partition(s) made{': ' if made else ''}{', '.join(made)}")
    return 0


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (RetentionError, ValueError) as exc:
        print(f"gekko-archive: configuration error: {exc}", file=sys.stderr)
        return 2
    except (archiver.ArchiveError, archiver.JobRunning) as exc:
        print(f"gekko-archive: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"gekko-archive: error: {exc}", file=sys.stderr)
        return 1
