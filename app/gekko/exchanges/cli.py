"""`gekko exchange check <venue>`: can this host trade on the venue with these credentials?
`gekko exchange seal-keys`: the platform's own keys sealed under the data keys, for a host.

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
    checking.add_argument(
        "--settings-stdin",
        action="store_true",
        help="read the GEKKO_* settings as one JSON object from standard input instead of "
        "the environment (keys kept off command lines and process environments)",
    )
    sealing = actions.add_parser(
        "seal-keys",
        help="seal the platform's keys (JSON on standard input) under the keyring in "
        "GEKKO_PLATFORM_VENUE_KEY_FILE; the sealed value on standard output",
    )
    sealing.add_argument(
        "--unless-same",
        metavar="FILE",
        help="print FILE's own sealed value when it already holds the same keys",
    )
    sealing.add_argument(
        "--all-stdin",
        action="store_true",
        help='standard input is {"data_keys": [...], "keys": {...}, "current": "gk1..."}; '
        'standard output {"key": ..., "sealed": ...}: the key derived from the newest data key '
        "and the keys sealed under it, `current` again when it holds the same keys under the "
        "same key (how the deploy writes the files without changing them)",
    )
    return parser


def seal_keys(unless_same: str | None, all_stdin: bool, env: Mapping[str, str]) -> int:
    from gekko.exchanges import platform_keys
    from gekko.security.crypto import DataKeys
    from gekko.security.keyfiles import KeyFileError

    try:
        given = json.loads(sys.stdin.read())
        if all_stdin:
            if not isinstance(given, dict) or not isinstance(given.get("data_keys"), list):
                raise platform_keys.PlatformKeysError(
                    'standard input must be {"data_keys": [...], "keys": {...}, "current": ...}'
                )
            key = platform_keys.derived_key(given["data_keys"])
            sealed = platform_keys.seal_unless_current(
                DataKeys(text=key), given.get("keys") or {}, str(given.get("current") or "")
            )
            print(json.dumps({"key": key, "sealed": sealed}))
            return 0
        else:
            data_keys = DataKeys(path=env.get("GEKKO_PLATFORM_VENUE_KEY_FILE", ""))
            if unless_same:
                sealed = platform_keys.seal_unless_same(data_keys, given, unless_same)
            else:
                sealed = platform_keys.seal(data_keys, given)
    except (KeyFileError, json.JSONDecodeError, platform_keys.PlatformKeysError) as exc:
        print(f"gekko exchange seal-keys: {exc}", file=sys.stderr)
        return 2
    print(sealed)
    return 0


def settings_from(text: str) -> dict[str, str]:
    """A JSON object of GEKKO_* names and their string values; nothing else of the process
    can be set this way."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VenueSettingsError(f"standard input is not JSON ({exc.msg})") from None
    if not isinstance(settings, dict) or not all(
        isinstance(name, str) and name.startswith("GEKKO_") and isinstance(value, str)
        for name, value in settings.items()
    ):
        raise VenueSettingsError("standard input must be a JSON object of GEKKO_* strings")
    return settings


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
        "answered_by": result.answered_by,
    }


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    if args.action == "seal-keys":
        return seal_keys(args.unless_same, args.all_stdin, env)
    mode = Mode(args.mode)
    venue = VENUES[args.venue]
    where = f"{venue.title} ({mode.value})"
    try:
        if args.settings_stdin:  # only these: a stray variable cannot redirect the keys
            env = settings_from(sys.stdin.read())
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
        if report["answered_by"] and "," in report["base_url"]:
            print(f"  answered by          {report['answered_by']}")
    return 0


if __name__ == "__main__":  # the validate phase runs it from the source tree
    sys.exit(main())
