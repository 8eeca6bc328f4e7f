"""`gekko exchange check <venue>`: can this host trade on the venue with these credentials?

A signed account call against the mode's base URL (or GEKKO_<VENUE>_BASE_URL), printing its
latency and the request budget left; a refusal is printed with the venue's own code and
message and what it usually means. Exit status: 0 reachable, 1 refused or unreachable, 2 the
settings or credentials are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence

from gekko.exchanges.base import ExchangeError, Mode
from gekko.exchanges.venues import VENUES, VenueSettingsError, check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gekko exchange", description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    checking = actions.add_parser("check", help="a signed account call: latency and headroom")
    checking.add_argument("venue", choices=sorted(VENUES))
    checking.add_argument(
        "--mode",
        choices=[Mode.SANDBOX.value, Mode.LIVE.value],
        default=Mode.SANDBOX.value,
        help="the venue's sandbox/practice host or its live one (default: sandbox)",
    )
    checking.add_argument("--json", action="store_true", help="one JSON object")
    return parser


async def _check(venue_name: str, mode: Mode, env: Mapping[str, str]) -> dict:
    venue = VENUES[venue_name]
    exchange = venue.open(mode, env)
    try:
        result = await check(exchange)
    finally:
        await exchange.close()
    return {
        "venue": venue_name,
        "mode": mode.value,
        "base_url": venue.base_url(mode, env),
        "ok": True,
        "latency_ms": round(result.latency_ms, 1),
        "headroom": result.headroom,
    }


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    mode = Mode(args.mode)
    venue = VENUES[args.venue]
    where = f"{venue.title} ({mode.value})"
    try:
        report = asyncio.run(_check(args.venue, mode, env))
    except VenueSettingsError as exc:
        print(f"{where}: not checked: {exc}", file=sys.stderr)
        return 2
    except ExchangeError as exc:
        failed = {"venue": args.venue, "mode": mode.value, "ok": False, "error": str(exc)}
        if exc.code is not None:
            failed["code"] = exc.code
        if args.json:
            print(json.dumps(failed))
        else:
            print(f"{where}: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{where} at {report['base_url']}: ok")
        print(f"  signed account call  {report['latency_ms']:.1f} ms")
        print(f"  rate-limit headroom  {report['headroom']}")
    return 0
