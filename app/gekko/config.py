"""Runtime configuration, read once from GEKKO_* environment variables.

Every component runs from the same image; the environment is the only thing that differs, so
validation happens here, before anything binds a port, with messages an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from gekko.security.crypto import DataKeys
from gekko.security.keyfiles import KeyFileError
from gekko.security.lockout import LockoutPolicy
from gekko.security.sessions import SessionPolicy
from gekko.security.tokens import SigningKey, VerifyKeys

# Request bodies over this many bytes are refused (gekko.security.body_limit).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Request headers: complete within 10 s, at most 32 KiB (four of nginx's 8 KiB header buffers).
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_HEADER_BYTES = 32 * 1024

GATEWAY = "gateway"
DOMAIN_SERVICES: tuple[str, ...] = (
    "users",
    "trading",
    "portfolio",
    "market_data",
    "social",
    "gamification",
    "signals",
    "alerts",
)
# Public API prefix (/api/v1/<prefix>/...) -> service: the name, with dashes for underscores.
API_ROUTES: dict[str, str] = {name.replace("_", "-"): name for name in DOMAIN_SERVICES}
COMPONENTS: tuple[str, ...] = (GATEWAY, *DOMAIN_SERVICES)

# Documented defaults only; deployments always set GEKKO_PORT explicitly.
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8000,
    "users": 8101,
    "trading": 8102,
    "portfolio": 8103,
    "market_data": 8104,
    "social": 8105,
    "gamification": 8106,
    "signals": 8107,
    "alerts": 8108,
}

# The only component that holds the private key and signs access tokens.
TOKEN_ISSUER_COMPONENT = "users"  # noqa: S105 - a component name, not a secret
# The components that store secrets encrypted with the data keys: TOTP seeds (users), the
# venue keys users link (trading).
DATA_KEY_COMPONENTS = frozenset({"users", "trading"})
# Where orders go (gekko.exchanges.base.Mode): the built-in paper exchange, a venue's sandbox or
# practice host, or the live venue.
EXCHANGE_MODES = ("paper", "sandbox", "live")
VENUE_NAMES = ("binanceus", "coinbase", "oanda")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# Seconds the gateway keeps an idle connection to an upstream open; every server keeps its own
# idle connections longer (gekko.cli), so the gateway, not the service, closes them.
UPSTREAM_KEEPALIVE_S = 30


class ConfigError(ValueError):
    """The environment does not describe a runnable component."""


@dataclass(frozen=True)
class GatewayTuning:
    """Resilience knobs of the gateway (ARCHITECTURE.md "Gateway semantics" are the defaults).

    Each is read from GEKKO_<NAME upper-cased>, e.g. GEKKO_BREAKER_OPEN_S=45.
    """

    health_check_interval_s: float = 5.0
    # While an instance fails its checks or a circuit is open: recovery is seen this soon.
    health_check_recovery_interval_s: float = 1.0
    health_check_timeout_s: float = 1.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    ejection_consecutive: int = 5
    ejection_base_s: float = 30.0
    ejection_max_s: float = 300.0
    breaker_consecutive: int = 5
    breaker_failure_rate: float = 0.5
    breaker_min_requests: int = 20
    breaker_window_s: int = 10
    breaker_open_s: float = 30.0
    breaker_half_open_probes: int = 3
    retry_attempts: int = 2  # extra attempts, each on another instance
    retry_deadline_s: float = 3.0
    retry_backoff_s: float = 0.025
    upstream_timeout_s: float = 5.0
    ratelimit_enabled: bool = True
    ratelimit_user_per_window: int = 200
    ratelimit_service_per_window: int = 1000
    # Calls without a token (register, login, refresh, market data) count per source address,
    # with a quota of their own: a guesser does not share a signed-in user's budget.
    ratelimit_anonymous_per_window: int = 120
    ratelimit_window_s: int = 60
    openapi_refresh_s: float = 30.0
    discovery_interval_s: float = 1.0
    # Load shedding (gekko.gateway.shedding): proxied requests in flight in one gateway process
    # above which social and gamification, then all but orders and cancels, answer 503.
    shed_low_in_flight: int = 64
    shed_normal_in_flight: int = 192


def parse_tuning(env: Mapping[str, str]) -> GatewayTuning:
    values: dict[str, object] = {}
    for name, f in GatewayTuning.__dataclass_fields__.items():
        raw = env.get(f"GEKKO_{name.upper()}", "").strip()
        if not raw:
            continue
        kind = type(f.default)
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                values[name] = raw.lower() in ("1", "true", "yes", "on")
            else:
                value = kind(raw)
                if value < 0 or (value == 0 and not name.startswith("retry_")):
                    raise ValueError(raw)
                values[name] = value
        except ValueError:
            raise ConfigError(
                f"GEKKO_{name.upper()} must be a positive {kind.__name__}, got {raw!r}"
            ) from None
    return GatewayTuning(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the internal CA's certificate and this host's certificate and private key."""

    ca_file: str
    cert_file: str
    key_file: str

    @classmethod
    def in_directory(cls, directory: str) -> TlsFiles:
        """A certificate folder as gekko.platform.tls writes it: ca.crt, tls.crt, tls.key."""
        return cls(f"{directory}/ca.crt", f"{directory}/tls.crt", f"{directory}/tls.key")


def parse_tls(env: Mapping[str, str]) -> TlsFiles | None:
    names = ("GEKKO_TLS_CA_FILE", "GEKKO_TLS_CERT_FILE", "GEKKO_TLS_KEY_FILE")
    values = [env.get(name, "").strip() for name in names]
    if not any(values):
        return None
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"TLS needs all of {', '.join(names)}; {', '.join(missing)} not set")
    for name, path in zip(names, values, strict=True):
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{name}={path} cannot be read (is the TLS directory mounted?)")
    return TlsFiles(*values)


# One year, as the HSTS preload list asks of a site.
DEFAULT_HSTS_MAX_AGE_S = 31_536_000


@dataclass(frozen=True)
class EdgeTls:
    """The gateway's public listener: its certificate (the operator's, or one from the internal
    CA) and how long browsers are told to use HTTPS only (Strict-Transport-Security)."""

    cert_file: str
    key_file: str
    hsts_max_age_s: int = DEFAULT_HSTS_MAX_AGE_S


def parse_edge_tls(env: Mapping[str, str]) -> EdgeTls | None:
    names = ("GEKKO_EDGE_TLS_CERT_FILE", "GEKKO_EDGE_TLS_KEY_FILE")
    values = [env.get(name, "").strip() for name in names]
    if not any(values):
        return None
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"the gateway's TLS needs {' and '.join(names)}; {missing[0]} not set")
    for name, path in zip(names, values, strict=True):
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{name}={path} cannot be read (is the edge certificate mounted?)")
    hsts = positive_int(env, "GEKKO_HSTS_MAX_AGE_S", DEFAULT_HSTS_MAX_AGE_S, "seconds")
    return EdgeTls(values[0], values[1], hsts)


@dataclass(frozen=True)
class VenueOAuth:
    """The platform's OAuth2 client at a venue (Coinbase), for accounts users link by signing in
    there (gekko.services.venue_links)."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    login_url: str


@dataclass(frozen=True)
class MarketFeeds:
    """The venues' market data the market_data service streams into Redis
    (gekko.services.venue_feeds)."""

    # venue -> the venue's own symbols (Binance.US BTCUSD, Coinbase BTC-USD, OANDA EUR_USD)
    symbols: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # GEKKO_<VENUE>_STREAM_URL: a venue's stream host overridden (a double on loopback)
    stream_urls: dict[str, str] = field(default_factory=dict)
    # GEKKO_PLATFORM_VENUE_KEYS_FILE: the platform's own keys, sealed under the keyring in
    # GEKKO_PLATFORM_VENUE_KEY_FILE (gekko.exchanges.platform_keys), for a stream that needs
    # one (OANDA's pricing stream)
    platform_keys_file: str = ""
    platform_key_file: str = ""


@dataclass(frozen=True)
class Settings:
    component: str
    database_url: str
    redis_url: str
    # GEKKO_JWT_VERIFY_KEYS_FILE: the published public keys every component verifies tokens with;
    # GEKKO_JWT_SIGNING_KEY_FILE: the private key, for the users service only.
    jwt_verify_keys_file: str
    jwt_signing_key_file: str = ""
    # GEKKO_DATA_KEYS_FILE: the data keys secrets at rest are encrypted with (users, trading).
    data_keys_file: str = ""
    # GEKKO_KPI_SCRAPE_TOKEN_SHA256: the hash of Prometheus's credential for the gateway's
    # /dashboard/metrics (gekko.gateway.dashboard); empty: only signed-in viewers read it.
    kpi_scrape_token_sha256: str = ""
    # GEKKO_EXCHANGE_MODE: paper (the default everywhere), sandbox or live; and
    # GEKKO_<VENUE>_BASE_URL, a venue's host overridden (a proxy, a double on loopback).
    exchange_mode: str = "paper"
    venue_base_urls: dict[str, str] = field(default_factory=dict)
    # GEKKO_VENUE_RECONCILE_INTERVAL_S: how often the trading service looks up venue orders whose
    # answer was lost (gekko.services.venue_orders).
    venue_reconcile_interval_s: float = 10.0
    # GEKKO_COINBASE_OAUTH_*: Coinbase accounts users link by signing in (trading only); None:
    # only API keys are linked.
    coinbase_oauth: VenueOAuth | None = None
    # GEKKO_MARKET_FEEDS and the rest (market_data only).
    market_feeds: MarketFeeds = field(default_factory=MarketFeeds)
    bind_host: str = "127.0.0.1"
    port: int = 8000
    instance_id: str = ""
    advertise_url: str = ""
    log_level: str = "INFO"
    # One JSON line per API request (method, path, status, time, correlation id): what the central
    # log store follows a request by. GEKKO_ACCESS_LOG=false turns it off.
    access_log: bool = True
    environment: str = "local"
    static_services: dict[str, list[str]] = field(default_factory=dict)
    gateway: GatewayTuning = field(default_factory=GatewayTuning)
    # GEKKO_FEATURE_<NAME>=true|false: defaults of the feature flags (Redis may override them).
    features: dict[str, bool] = field(default_factory=dict)
    # GEKKO_CHAOS_ERROR_RATE: fraction of a service's API requests answered with an injected 500
    # (canary testing); gekko.chaos refuses it in prod.
    chaos_error_rate: float = 0.0
    # GEKKO_DYNCONFIG_POLL_S: how often gekko.dynconfig re-reads Redis besides its pub/sub.
    dynconfig_poll_s: float = 5.0
    # GEKKO_TRACE_SAMPLE_RATIO: the share of new traces whose spans are recorded, when an
    # exporter takes them (gekko.tracing); a caller's sampled flag is followed either way.
    trace_sample_ratio: float = 1.0
    # GEKKO_TLS_*: the host's certificate from the internal CA. A domain service with a
    # certificate serves TLS 1.3 only and wants a client certificate from the same CA (mTLS: only
    # the gateway and peers get in); the gateway verifies its upstreams with it and presents it.
    tls: TlsFiles | None = None
    # GEKKO_EDGE_TLS_*, GEKKO_HSTS_MAX_AGE_S: the gateway's own listener serves TLS 1.3.
    edge_tls: EdgeTls | None = None
    # GEKKO_MAX_BODY_BYTES: larger request bodies get 413 before anything parses them.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # GEKKO_HEADER_TIMEOUT_S, GEKKO_MAX_HEADER_BYTES: a request's headers must arrive within this
    # time and size, or get 408 / 431 and the connection closes (gekko.security.header_guard).
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    # GEKKO_LOGIN_*: how many wrong passwords lock an account or a source address, and for how
    # long at first (each further lockout doubles it).
    login_lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    # GEKKO_REFRESH_TOKEN_TTL_S, GEKKO_SESSION_MAX_LIFETIME_S (users service).
    sessions: SessionPolicy = field(default_factory=SessionPolicy)

    @property
    def serves_tls(self) -> bool:
        """Domain services serve TLS when they have a certificate from the internal CA; the
        gateway when it has an edge certificate (its clients are not the CA's hosts)."""
        if self.component == GATEWAY:
            return self.edge_tls is not None
        return self.tls is not None


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def database_url_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = _require(env, "GEKKO_DATABASE_URL")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "GEKKO_DATABASE_URL must start with postgresql:// (e.g. postgresql://gekko:PASSWORD@127.0.0.1:5432/gekko)"
        )
    return url


def token_key_files(component: str, env: Mapping[str, str]) -> tuple[str, str]:
    """The token key files, checked now so a bad file stops the start with a clear message."""
    verify = env.get("GEKKO_JWT_VERIFY_KEYS_FILE", "").strip()
    if not verify:
        raise ConfigError(
            "GEKKO_JWT_VERIFY_KEYS_FILE is required: the PEM file of the published Ed25519 "
            "public keys that access tokens are verified with"
        )
    signing = env.get("GEKKO_JWT_SIGNING_KEY_FILE", "").strip()
    if component == TOKEN_ISSUER_COMPONENT and not signing:
        raise ConfigError(
            "GEKKO_JWT_SIGNING_KEY_FILE is required for the users service: the PEM file of the "
            "Ed25519 private key it signs access tokens with"
        )
    if component != TOKEN_ISSUER_COMPONENT:
        signing = ""  # no other component may sign
    try:
        verify_keys = VerifyKeys(verify)
        if signing and SigningKey(signing).kid not in verify_keys.kids():
            raise ConfigError(
                f"the signing key in {signing} is not among the published keys in {verify}: "
                "tokens it signs would be refused; publish its public key first"
            )
    except KeyFileError as exc:
        raise ConfigError(f"token keys: {exc}") from None
    return verify, signing


def data_keys_file(component: str, env: Mapping[str, str]) -> str:
    """The data keys' file, for the components that store secrets (the users service keeps
    the TOTP seeds, trading the venue keys), checked now so a bad file stops the start with a
    clear message."""
    if component not in DATA_KEY_COMPONENTS:
        return ""
    path = env.get("GEKKO_DATA_KEYS_FILE", "").strip()
    if not path:
        raise ConfigError(
            f"GEKKO_DATA_KEYS_FILE is required for the {component} service: the file of data "
            "keys (one random secret of 32+ characters per line, the newest last) that the "
            "secrets it stores are encrypted with"
        )
    try:
        DataKeys(path=path)
    except KeyFileError as exc:
        raise ConfigError(f"data keys: {exc}") from None
    return path


def parse_sha256(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip().lower()
    if value and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        raise ConfigError(f"{name} must be a SHA-256 in hex (64 characters)")
    return value


def parse_exchange_mode(env: Mapping[str, str]) -> str:
    mode = (env.get("GEKKO_EXCHANGE_MODE", "").strip() or "paper").lower()
    if mode not in EXCHANGE_MODES:
        raise ConfigError(f"GEKKO_EXCHANGE_MODE must be one of {', '.join(EXCHANGE_MODES)}")
    return mode


# Venues whose base URL may list alternate hosts after the preferred one (comma-separated):
# Binance's API hosts, used in turn when one does not answer (gekko.exchanges.binanceus).
VENUES_WITH_ALTERNATE_HOSTS = ("binanceus",)


def split_hosts(urls: str) -> list[str]:
    """A venue's base URL setting as its hosts, the preferred one first."""
    return [url.strip() for url in urls.split(",") if url.strip()]


def parse_venue_base_urls(env: Mapping[str, str]) -> dict[str, str]:
    urls = {}
    for venue in VENUE_NAMES:
        name = f"GEKKO_{venue.upper()}_BASE_URL"
        hosts = split_hosts(env.get(name, ""))
        if any(not url.startswith(("https://", "http://")) for url in hosts):
            raise ConfigError(f"{name} must be an http(s) URL")
        if len(hosts) > 1 and venue not in VENUES_WITH_ALTERNATE_HOSTS:
            raise ConfigError(f"{name}: one URL (only Binance.US takes alternate hosts)")
        if hosts:
            urls[venue] = ",".join(url.rstrip("/") for url in hosts)
    return urls


# Trading's Coinbase OAuth2 client; the secret is read from a file, like every other secret.
_COINBASE_OAUTH = (
    "GEKKO_COINBASE_OAUTH_CLIENT_ID",
    "GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE",
    "GEKKO_COINBASE_OAUTH_REDIRECT_URI",
)


def parse_coinbase_oauth(component: str, env: Mapping[str, str]) -> VenueOAuth | None:
    if component != "trading":
        return None
    client_id, secret_file, redirect_uri = (env.get(name, "").strip() for name in _COINBASE_OAUTH)
    if not (client_id or secret_file or redirect_uri):
        return None
    missing = [name for name in _COINBASE_OAUTH if not env.get(name, "").strip()]
    if missing:
        raise ConfigError(
            f"Coinbase account linking needs {', '.join(_COINBASE_OAUTH)}: {', '.join(missing)} "
            "not set (or unset them all to link API keys only)"
        )
    if not redirect_uri.startswith("https://"):
        raise ConfigError(
            "GEKKO_COINBASE_OAUTH_REDIRECT_URI must be an https:// URL (the page of the platform "
            "that Coinbase sends the user back to), as registered with the OAuth client"
        )
    try:
        with open(secret_file, encoding="utf-8") as handle:
            client_secret = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE: {exc.strerror}") from None
    if not client_secret:
        raise ConfigError(f"GEKKO_COINBASE_OAUTH_CLIENT_SECRET_FILE: {secret_file} is empty")
    login_url = env.get("GEKKO_COINBASE_OAUTH_URL", "").strip() or "https://login.coinbase.com"
    if not login_url.startswith(("https://", "http://")):
        raise ConfigError("GEKKO_COINBASE_OAUTH_URL must be an http(s) URL")
    return VenueOAuth(client_id, client_secret, redirect_uri, login_url.rstrip("/"))


# A venue symbol as the feeds take it; at most this many per venue.
_FEED_SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_FEED_SYMBOLS = 50
# Venues whose stream needs the platform's own key.
KEYED_FEEDS = frozenset({"oanda"})
# What each venue's stream is reached by: a WebSocket, or OANDA's HTTP stream.
FEED_SCHEMES = {
    "binanceus": ("wss://", "ws://"),
    "coinbase": ("wss://", "ws://"),
    "oanda": ("https://", "http://"),
}


def parse_market_feeds(component: str, env: Mapping[str, str]) -> MarketFeeds:
    """GEKKO_MARKET_FEEDS: a JSON object of venue -> list of the venue's symbols, e.g.
    {"binanceus": ["BTCUSD"], "coinbase": ["BTC-USD"], "oanda": ["EUR_USD"]}."""
    raw = env.get("GEKKO_MARKET_FEEDS", "").strip()
    if component != "market_data" or not raw:
        return MarketFeeds()
    try:
        wanted = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"GEKKO_MARKET_FEEDS is not JSON: {exc}") from None
    if not isinstance(wanted, dict):
        raise ConfigError("GEKKO_MARKET_FEEDS must be a JSON object of venue -> symbols")
    symbols: dict[str, tuple[str, ...]] = {}
    for venue, listed in wanted.items():
        if venue not in VENUE_NAMES:
            raise ConfigError(
                f"GEKKO_MARKET_FEEDS: {venue!r} is not a venue ({', '.join(VENUE_NAMES)})"
            )
        if (
            not isinstance(listed, list)
            or not 1 <= len(listed) <= MAX_FEED_SYMBOLS
            or not all(
                isinstance(s, str) and 0 < len(s) <= 32 and set(s) <= _FEED_SYMBOL_CHARS
                for s in listed
            )
        ):
            raise ConfigError(
                f"GEKKO_MARKET_FEEDS: {venue} needs a list of 1 to {MAX_FEED_SYMBOLS} of its own "
                "symbols (letters, digits, _ and -), e.g. BTCUSD, BTC-USD, EUR_USD"
            )
        # The venues' symbols are upper case (Binance.US's stream names lower them itself).
        symbols[venue] = tuple(dict.fromkeys(s.upper() for s in listed))
    stream_urls = {}
    for venue in symbols:
        url = env.get(f"GEKKO_{venue.upper()}_STREAM_URL", "").strip().rstrip("/")
        if url and not url.startswith(FEED_SCHEMES[venue]):
            raise ConfigError(
                f"GEKKO_{venue.upper()}_STREAM_URL must be a {' or '.join(FEED_SCHEMES[venue])} URL"
            )
        if url:
            stream_urls[venue] = url
    keys_file = env.get("GEKKO_PLATFORM_VENUE_KEYS_FILE", "").strip()
    key_file = env.get("GEKKO_PLATFORM_VENUE_KEY_FILE", "").strip()
    keyed = sorted(KEYED_FEEDS & set(symbols))
    if keyed and not (keys_file and key_file):
        raise ConfigError(
            f"GEKKO_MARKET_FEEDS: the {', '.join(keyed)} stream needs the platform's key: set "
            "GEKKO_PLATFORM_VENUE_KEYS_FILE (sealed with `gekko exchange seal-keys`) and "
            "GEKKO_PLATFORM_VENUE_KEY_FILE (the keyring it was sealed under)"
        )
    return MarketFeeds(symbols, stream_urls, keys_file, key_file)


def parse_static_services(raw: str) -> dict[str, list[str]]:
    """Parse GEKKO_STATIC_SERVICES: a JSON object of service name -> list of base URLs."""
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"GEKKO_STATIC_SERVICES is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("GEKKO_STATIC_SERVICES must be a JSON object of service -> [urls]")
    result: dict[str, list[str]] = {}
    for name, urls in data.items():
        if name not in DOMAIN_SERVICES:
            raise ConfigError(
                f"GEKKO_STATIC_SERVICES names unknown service {name!r}; "
                f"known: {', '.join(DOMAIN_SERVICES)}"
            )
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"GEKKO_STATIC_SERVICES[{name!r}] must be a list of URL strings")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"GEKKO_STATIC_SERVICES[{name!r}] has a non-HTTP URL: {url!r}")
        result[name] = [u.rstrip("/") for u in urls]
    return result


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
FEATURE_ENV_PREFIX = "GEKKO_FEATURE_"


def parse_bool(raw: str) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case); ValueError otherwise."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(raw)


def access_log_setting(env: Mapping[str, str]) -> bool:
    raw = env.get("GEKKO_ACCESS_LOG", "").strip()
    try:
        return parse_bool(raw) if raw else True
    except ValueError:
        raise ConfigError(f"GEKKO_ACCESS_LOG must be true or false, got {raw!r}") from None


def parse_features(env: Mapping[str, str]) -> dict[str, bool]:
    """GEKKO_FEATURE_SOCIAL_POSTS=false -> {"social_posts": False}."""
    features: dict[str, bool] = {}
    for key, raw in env.items():
        if not key.startswith(FEATURE_ENV_PREFIX) or not raw.strip():
            continue
        name = key[len(FEATURE_ENV_PREFIX) :].lower()
        try:
            features[name] = parse_bool(raw)
        except ValueError:
            raise ConfigError(f"{key} must be true or false, got {raw!r}") from None
    return features


def fraction(raw: str, name: str, default: float, example: str) -> float:
    """A number from 0 to 1 (an empty value: `default`)."""
    if not raw.strip():
        return default
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:  # also refuses nan
        raise ConfigError(f"{name} must be a number from 0 to 1 (e.g. {example}), got {raw!r}")
    return rate


def parse_chaos_error_rate(raw: str) -> float:
    return fraction(raw, "GEKKO_CHAOS_ERROR_RATE", 0.0, "0.05")


def positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive whole number of {unit}, got {raw!r}")
    return int(raw)


def _reachable(bind_host: str) -> str:
    # A wildcard bind address is not something another process can connect to.
    if bind_host in ("0.0.0.0", "::"):  # noqa: S104
        return "127.0.0.1"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def load_settings(component: str, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings for one component, or raise ConfigError naming what is wrong."""
    env = os.environ if env is None else env
    if component not in COMPONENTS:
        raise ConfigError(f"unknown component {component!r}; choose one of {', '.join(COMPONENTS)}")

    verify_keys_file, signing_key_file = token_key_files(component, env)
    keys_file = data_keys_file(component, env)
    database_url = database_url_from_env(env)
    # The gateway connects as its own Redis user where the deployment gives it one.
    redis_var = "GEKKO_REDIS_URL"
    if component == GATEWAY and env.get("GEKKO_GATEWAY_REDIS_URL", "").strip():
        redis_var = "GEKKO_GATEWAY_REDIS_URL"
    redis_url = _require(env, redis_var)
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{redis_var} must start with redis:// or rediss://")
    tls = parse_tls(env)
    edge_tls = parse_edge_tls(env) if component == GATEWAY else None
    serves_tls = edge_tls is not None if component == GATEWAY else tls is not None
    scheme = "https" if serves_tls else "http"

    bind_host = env.get("GEKKO_BIND_HOST", "").strip() or "127.0.0.1"
    raw_port = env.get("GEKKO_PORT", "").strip() or str(DEFAULT_PORTS[component])
    try:
        port = int(raw_port)
    except ValueError:
        raise ConfigError(f"GEKKO_PORT must be an integer, got {raw_port!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"GEKKO_PORT must be between 1 and 65535, got {port}")

    log_level = (env.get("GEKKO_LOG_LEVEL", "").strip() or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"GEKKO_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")

    static_services = {}
    tuning = GatewayTuning()
    if component == GATEWAY:
        static_services = parse_static_services(env.get("GEKKO_STATIC_SERVICES", ""))
        tuning = parse_tuning(env)

    return Settings(
        component=component,
        database_url=database_url,
        redis_url=redis_url,
        jwt_verify_keys_file=verify_keys_file,
        jwt_signing_key_file=signing_key_file,
        data_keys_file=keys_file,
        kpi_scrape_token_sha256=(
            parse_sha256(env, "GEKKO_KPI_SCRAPE_TOKEN_SHA256") if component == GATEWAY else ""
        ),
        exchange_mode=parse_exchange_mode(env),
        venue_base_urls=parse_venue_base_urls(env),
        venue_reconcile_interval_s=positive_float(env, "GEKKO_VENUE_RECONCILE_INTERVAL_S", 10.0),
        coinbase_oauth=parse_coinbase_oauth(component, env),
        market_feeds=parse_market_feeds(component, env),
        bind_host=bind_host,
        port=port,
        instance_id=env.get("GEKKO_INSTANCE_ID", "").strip() or f"{component}-{port}",
        advertise_url=(
            env.get("GEKKO_ADVERTISE_URL", "").strip()
            or f"{scheme}://{_reachable(bind_host)}:{port}"
        ).rstrip("/"),
        log_level=log_level,
        access_log=access_log_setting(env),
        environment=env.get("GEKKO_ENVIRONMENT", "").strip() or "local",
        static_services=static_services,
        gateway=tuning,
        features=parse_features(env),
        chaos_error_rate=parse_chaos_error_rate(env.get("GEKKO_CHAOS_ERROR_RATE", "")),
        dynconfig_poll_s=positive_float(env, "GEKKO_DYNCONFIG_POLL_S", 5.0),
        trace_sample_ratio=fraction(
            env.get("GEKKO_TRACE_SAMPLE_RATIO", ""), "GEKKO_TRACE_SAMPLE_RATIO", 1.0, "0.1"
        ),
        tls=tls,
        edge_tls=edge_tls,
        max_body_bytes=positive_int(env, "GEKKO_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, "bytes"),
        header_timeout_s=positive_float(env, "GEKKO_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S),
        max_header_bytes=positive_int(
            env, "GEKKO_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES, "bytes"
        ),
        login_lockout=LockoutPolicy(
            max_failures=positive_int(env, "GEKKO_LOGIN_MAX_FAILURES", 5, "failures"),
            source_max_failures=positive_int(
                env, "GEKKO_LOGIN_SOURCE_MAX_FAILURES", 20, "failures"
            ),
            lockout_s=positive_int(env, "GEKKO_LOGIN_LOCKOUT_SECONDS", 900, "seconds"),
        ),
        sessions=SessionPolicy(
            refresh_ttl_s=positive_int(
                env, "GEKKO_REFRESH_TOKEN_TTL_S", SessionPolicy.refresh_ttl_s, "seconds"
            ),
            max_lifetime_s=positive_int(
                env, "GEKKO_SESSION_MAX_LIFETIME_S", SessionPolicy.max_lifetime_s, "seconds"
            ),
        ),
    )
