"""The venues the platform can trade on, where each one answers in each mode, and how an
adapter is opened from the environment's settings and credentials.

Settings, per venue (BINANCEUS, COINBASE, OANDA):
  GEKKO_<VENUE>_BASE_URL   overrides the host of the mode (a proxy, a double on loopback);
                           Binance.US's may list alternate hosts after it, comma-separated,
                           asked in turn when one does not answer
  credentials              GEKKO_BINANCEUS_API_KEY and GEKKO_BINANCEUS_API_SECRET (an HMAC
                           secret, or an Ed25519 private key in PEM);
                           GEKKO_COINBASE_API_KEY (the CDP key name) and
                           GEKKO_COINBASE_API_SECRET (its EC private key in PEM);
                           GEKKO_OANDA_API_TOKEN and GEKKO_OANDA_ACCOUNT_ID
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gekko.config import VENUES_WITH_ALTERNATE_HOSTS, split_hosts
from gekko.exchanges import binanceus, coinbase, oanda
from gekko.exchanges.base import Exchange, ExchangeError, Mode


class VenueSettingsError(ValueError):
    """The environment does not say enough to reach the venue (exit status 2 in the CLI)."""


@dataclass(frozen=True)
class Venue:
    name: str
    title: str
    # Base URL per mode; None where the venue has no such host.
    urls: Mapping[Mode, str | None]
    credential_env: tuple[str, ...]
    build: Callable[[Mapping[str, str], str], Exchange]
    # The same credentials as a user links them (gekko.exchanges.credentials), in the order of
    # credential_env, and the one that names the key (its last characters are shown, never the
    # rest).
    credential_fields: tuple[str, ...] = ("api_key", "api_secret")
    hint_field: str = "api_key"
    # An account a user linked by signing in at the venue (OAuth2): Coinbase only.
    build_linked: Callable[[coinbase.LinkedAccount, str], Exchange] | None = None

    def base_url(self, mode: Mode, env: Mapping[str, str]) -> str:
        """The mode's host, or the override: for Binance.US, hosts in turn (comma-separated)."""
        override = env.get(f"GEKKO_{self.name.upper()}_BASE_URL", "").strip()
        if "," in override and self.name not in VENUES_WITH_ALTERNATE_HOSTS:
            raise VenueSettingsError(
                f"GEKKO_{self.name.upper()}_BASE_URL: one URL (only Binance.US takes alternate "
                "hosts)"
            )
        if override:
            return override
        url = self.urls.get(mode)
        if url is None:
            raise VenueSettingsError(
                f"{self.title} has no {mode} host: use mode "
                + " or ".join(m.value for m, u in self.urls.items() if u)
                + f", or set GEKKO_{self.name.upper()}_BASE_URL"
            )
        return url

    def open(self, mode: Mode, env: Mapping[str, str]) -> Exchange:
        if mode is Mode.PAPER:
            raise VenueSettingsError(
                f"paper mode trades on the built-in exchange, not {self.title}"
            )
        missing = [name for name in self.credential_env if not env.get(name, "").strip()]
        if missing:
            raise VenueSettingsError(
                f"{self.title}: set {' and '.join(missing)} "
                "(in the environment or the secrets store)"
            )
        return self.build(env, self.base_url(mode, env))

    def open_linked(
        self, mode: Mode, base_urls: Mapping[str, str], account: coinbase.LinkedAccount
    ) -> Exchange:
        if self.build_linked is None:
            raise VenueSettingsError(f"{self.title} accounts are linked with API keys only")
        override = {f"GEKKO_{self.name.upper()}_BASE_URL": base_urls.get(self.name, "")}
        return self.build_linked(account, self.base_url(mode, override))


def _binanceus(env: Mapping[str, str], url: str) -> Exchange:
    secret = env["GEKKO_BINANCEUS_API_SECRET"].strip().replace("\\n", "\n")
    if secret.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(secret.encode(), password=None)
        except (ValueError, TypeError) as exc:  # not PEM, or protected by a passphrase
            raise VenueSettingsError(f"GEKKO_BINANCEUS_API_SECRET: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise VenueSettingsError("GEKKO_BINANCEUS_API_SECRET: a PEM key must be Ed25519")
        credentials = binanceus.Credentials(env["GEKKO_BINANCEUS_API_KEY"].strip(), ed25519_key=key)
    else:
        credentials = binanceus.Credentials(env["GEKKO_BINANCEUS_API_KEY"].strip(), secret=secret)
    preferred, *alternates = split_hosts(url)
    return binanceus.BinanceUS(credentials, preferred, alternate_urls=alternates)


def _coinbase(env: Mapping[str, str], url: str) -> Exchange:
    # A secret pasted into an environment variable often has its newlines as "\n".
    pem = env["GEKKO_COINBASE_API_SECRET"].strip().replace("\\n", "\n")
    credentials = coinbase.Credentials(env["GEKKO_COINBASE_API_KEY"].strip(), pem)
    try:
        credentials.private_key()
    except ValueError as exc:
        raise VenueSettingsError(f"GEKKO_COINBASE_API_SECRET: {exc}") from None
    return coinbase.Coinbase(credentials, url)


def _oanda(env: Mapping[str, str], url: str) -> Exchange:
    credentials = oanda.Credentials(
        env["GEKKO_OANDA_API_TOKEN"].strip(), env["GEKKO_OANDA_ACCOUNT_ID"].strip()
    )
    return oanda.Oanda(credentials, url)


VENUES: dict[str, Venue] = {
    "binanceus": Venue(
        "binanceus",
        "Binance.US",
        # Binance.US publishes no testnet.
        {Mode.SANDBOX: None, Mode.LIVE: binanceus.LIVE_URL},
        ("GEKKO_BINANCEUS_API_KEY", "GEKKO_BINANCEUS_API_SECRET"),
        _binanceus,
    ),
    "coinbase": Venue(
        "coinbase",
        "Coinbase Advanced Trade",
        {Mode.SANDBOX: coinbase.SANDBOX_URL, Mode.LIVE: coinbase.LIVE_URL},
        ("GEKKO_COINBASE_API_KEY", "GEKKO_COINBASE_API_SECRET"),
        _coinbase,
        build_linked=coinbase.Coinbase,
    ),
    "oanda": Venue(
        "oanda",
        "OANDA v20",
        {Mode.SANDBOX: oanda.PRACTICE_URL, Mode.LIVE: oanda.LIVE_URL},
        ("GEKKO_OANDA_API_TOKEN", "GEKKO_OANDA_ACCOUNT_ID"),
        _oanda,
        ("api_token", "account_id"),
        # The account names the key: the token is the secret.
        "account_id",
    ),
}


@dataclass(frozen=True)
class CheckResult:
    latency_ms: float
    headroom: str
    answered_by: str | None = None  # the host that answered, where the venue has several


async def check(exchange: Exchange) -> CheckResult:
    """A signed account call, timed, and what is left of the venue's request budget."""
    started = time.perf_counter()
    await exchange.balances()
    latency_ms = (time.perf_counter() - started) * 1000
    if isinstance(exchange, binanceus.BinanceUS):
        used = exchange.used_weight_1m
        host = exchange.answered_by
        limit = await exchange.weight_limit_1m()
        if used is None or limit is None:
            return CheckResult(latency_ms, "not reported by the venue", host)
        headroom = f"{limit - used} of {limit} request weight left this minute"
        return CheckResult(latency_ms, headroom, host)
    if isinstance(exchange, oanda.Oanda):
        return CheckResult(
            latency_ms, f"{oanda.REQUESTS_PER_SECOND} requests/s (documented; no header)"
        )
    return CheckResult(latency_ms, "not reported by the venue")


__all__ = ["VENUES", "CheckResult", "ExchangeError", "Venue", "VenueSettingsError", "check"]
