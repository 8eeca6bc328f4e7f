from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_key

from gekko.config import ConfigError, load_settings, parse_static_services
from gekko.exchanges.base import Mode
from gekko.exchanges.venues import VENUES, VenueSettingsError
from gekko.security.tokens import generate_key_files

from .keys import TOKEN_ENV

ENV = {
    "GEKKO_DATABASE_URL": "postgresql://gekko:pw@127.0.0.1:5432/gekko",
    "GEKKO_REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
    **TOKEN_ENV,
}


def test_every_component_needs_the_published_keys():
    env = {k: v for k, v in ENV.items() if k != "GEKKO_JWT_VERIFY_KEYS_FILE"}
    for component in ("gateway", "users", "trading"):
        with pytest.raises(ConfigError, match="GEKKO_JWT_VERIFY_KEYS_FILE is required"):
            load_settings(component, env)


def test_only_the_users_service_holds_the_signing_key():
    env = {k: v for k, v in ENV.items() if k != "GEKKO_JWT_SIGNING_KEY_FILE"}
    with pytest.raises(ConfigError, match="GEKKO_JWT_SIGNING_KEY_FILE is required for the users"):
        load_settings("users", env)
    assert load_settings("trading", env).jwt_signing_key_file == ""
    # Given to another component by mistake, it is not kept there.
    assert load_settings("trading", ENV).jwt_signing_key_file == ""
    assert load_settings("users", ENV).jwt_signing_key_file == ENV["GEKKO_JWT_SIGNING_KEY_FILE"]


def test_only_the_services_that_store_secrets_hold_the_data_keys_and_they_must_be_strong(
    tmp_path,
):
    env = {k: v for k, v in ENV.items() if k != "GEKKO_DATA_KEYS_FILE"}
    for component in ("users", "trading"):  # TOTP seeds; venue keys
        with pytest.raises(
            ConfigError, match=f"GEKKO_DATA_KEYS_FILE is required for the {component}"
        ):
            load_settings(component, env)
    assert load_settings("portfolio", ENV).data_keys_file == ""
    weak = tmp_path / "data-keys"
    weak.write_text("short\n")
    with pytest.raises(ConfigError, match="data keys: .*at least 32"):
        load_settings("users", {**ENV, "GEKKO_DATA_KEYS_FILE": str(weak)})


def test_the_exchange_mode_is_paper_unless_set_and_venue_hosts_are_urls():
    assert load_settings("trading", ENV).exchange_mode == "paper"
    env = {**ENV, "GEKKO_EXCHANGE_MODE": "Sandbox", "GEKKO_OANDA_BASE_URL": "http://127.0.0.1:9/"}
    settings = load_settings("trading", env)
    assert (settings.exchange_mode, settings.venue_base_urls) == (
        "sandbox",
        {"oanda": "http://127.0.0.1:9"},
    )
    with pytest.raises(ConfigError, match="GEKKO_EXCHANGE_MODE must be one of paper, sandbox"):
        load_settings("trading", {**ENV, "GEKKO_EXCHANGE_MODE": "real"})
    with pytest.raises(ConfigError, match="GEKKO_COINBASE_BASE_URL must be an http"):
        load_settings("trading", {**ENV, "GEKKO_COINBASE_BASE_URL": "ftp://x"})


def test_binance_us_alone_takes_alternate_hosts_after_its_preferred_one():
    hosts = "https://api.binance.us/, https://proxy.example:8443"
    settings = load_settings("trading", {**ENV, "GEKKO_BINANCEUS_BASE_URL": hosts})
    assert settings.venue_base_urls == {
        "binanceus": "https://api.binance.us,https://proxy.example:8443"
    }
    adapter = VENUES["binanceus"].open(
        Mode.LIVE,
        {
            "GEKKO_BINANCEUS_BASE_URL": settings.venue_base_urls["binanceus"],
            "GEKKO_BINANCEUS_API_KEY": "k",
            "GEKKO_BINANCEUS_API_SECRET": "s",
        },
    )
    assert adapter.hosts.in_turn() == ["https://api.binance.us", "https://proxy.example:8443"]
    with pytest.raises(ConfigError, match="one URL .only Binance.US takes alternate hosts"):
        load_settings("trading", {**ENV, "GEKKO_OANDA_BASE_URL": "https://a,https://b"})
    with pytest.raises(ConfigError, match="must be an http"):
        load_settings("trading", {**ENV, "GEKKO_BINANCEUS_BASE_URL": "https://a,b"})
    with pytest.raises(VenueSettingsError, match="only Binance.US takes alternate hosts"):
        VENUES["oanda"].base_url(Mode.LIVE, {"GEKKO_OANDA_BASE_URL": "https://a,https://b"})


def test_the_kpi_scrape_hash_is_the_gateways_alone_and_must_be_a_sha256():
    digest = "ab" * 32
    env = {**ENV, "GEKKO_KPI_SCRAPE_TOKEN_SHA256": digest.upper()}
    assert load_settings("gateway", env).kpi_scrape_token_sha256 == digest
    assert load_settings("trading", env).kpi_scrape_token_sha256 == ""
    with pytest.raises(ConfigError, match="GEKKO_KPI_SCRAPE_TOKEN_SHA256 must be a SHA-256"):
        load_settings("gateway", {**ENV, "GEKKO_KPI_SCRAPE_TOKEN_SHA256": "secret"})


def test_unreadable_or_wrong_key_files_are_clear_errors(tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="nope.pem cannot be read"):
        load_settings("trading", {**ENV, "GEKKO_JWT_VERIFY_KEYS_FILE": missing})
    # The private key where the public keys belong is refused, not published.
    private = ENV["GEKKO_JWT_SIGNING_KEY_FILE"]
    with pytest.raises(ConfigError, match="holds a private key"):
        load_settings("trading", {**ENV, "GEKKO_JWT_VERIFY_KEYS_FILE": private})
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ConfigError, match="no public key"):
        load_settings("trading", {**ENV, "GEKKO_JWT_VERIFY_KEYS_FILE": str(empty)})
    rsa = tmp_path / "rsa.pem"
    rsa.write_bytes(
        rsa_key.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="only Ed25519"):
        load_settings("trading", {**ENV, "GEKKO_JWT_VERIFY_KEYS_FILE": str(rsa)})


def test_a_signing_key_that_is_not_published_is_refused(tmp_path):
    other_private, _ = generate_key_files(str(tmp_path))
    with pytest.raises(ConfigError, match="not among the published keys"):
        load_settings("users", {**ENV, "GEKKO_JWT_SIGNING_KEY_FILE": other_private})


def test_defaults_follow_the_contract():
    s = load_settings("trading", {**ENV, "GEKKO_PORT": "9102"})
    assert (s.bind_host, s.port, s.instance_id) == ("127.0.0.1", 9102, "trading-9102")
    assert s.advertise_url == "http://127.0.0.1:9102"
    assert (s.log_level, s.environment) == ("INFO", "local")


def test_explicit_values_win():
    s = load_settings(
        "gateway",
        {
            **ENV,
            "GEKKO_BIND_HOST": "127.0.0.2",
            "GEKKO_PORT": "9000",
            "GEKKO_INSTANCE_ID": "gw-a",
            "GEKKO_ADVERTISE_URL": "http://10.0.0.5:9000/",
            "GEKKO_LOG_LEVEL": "debug",
            "GEKKO_STATIC_SERVICES": '{"users": ["http://127.0.0.1:9101"]}',
        },
    )
    assert (s.instance_id, s.advertise_url, s.log_level) == (
        "gw-a",
        "http://10.0.0.5:9000",
        "DEBUG",
    )
    assert s.static_services == {"users": ["http://127.0.0.1:9101"]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"GEKKO_PORT": "eighty"}, "GEKKO_PORT must be an integer"),
        ({"GEKKO_PORT": "70000"}, "between 1 and 65535"),
        ({"GEKKO_DATABASE_URL": ""}, "GEKKO_DATABASE_URL is required"),
        ({"GEKKO_DATABASE_URL": "mysql://x"}, "postgresql://"),
        ({"GEKKO_REDIS_URL": ""}, "GEKKO_REDIS_URL is required"),
        ({"GEKKO_LOG_LEVEL": "LOUD"}, "GEKKO_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_variable(override, message):
    with pytest.raises(ConfigError, match=message):
        load_settings("users", {**ENV, **override})


def test_unknown_component_is_refused():
    with pytest.raises(ConfigError, match="unknown component"):
        load_settings("billing", ENV)


@pytest.mark.parametrize(
    "raw", ["not json", "[1]", '{"billing": ["http://x"]}', '{"users": ["ftp://x"]}']
)
def test_bad_static_services_are_refused(raw):
    with pytest.raises(ConfigError, match="GEKKO_STATIC_SERVICES"):
        parse_static_services(raw)


def test_wildcard_bind_advertises_loopback():
    s = load_settings("users", {**ENV, "GEKKO_BIND_HOST": "0.0.0.0", "GEKKO_PORT": "9101"})  # noqa: S104
    assert s.advertise_url == "http://127.0.0.1:9101"


def _tls_files(tmp_path):
    paths = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-")
        paths[f"GEKKO_TLS_{name.upper()}_FILE"] = str(path)
    return paths


def test_services_with_a_certificate_serve_and_advertise_https(tmp_path):
    env = {**ENV, **_tls_files(tmp_path), "GEKKO_BIND_HOST": "10.0.0.5", "GEKKO_PORT": "8104"}
    service = load_settings("market_data", env)
    assert service.serves_tls and service.advertise_url == "https://10.0.0.5:8104"
    # The gateway verifies its upstreams with the CA; its own listener needs an edge certificate.
    gateway = load_settings("gateway", env)
    assert gateway.tls is not None and not gateway.serves_tls
    assert gateway.advertise_url.startswith("http://")


def test_the_gateway_serves_tls_with_an_edge_certificate(tmp_path):
    edge = {"GEKKO_EDGE_TLS_CERT_FILE": str(tmp_path / "e.crt")}
    edge["GEKKO_EDGE_TLS_KEY_FILE"] = str(tmp_path / "e.key")
    for path in edge.values():
        Path(path).write_text("-")
    gateway = load_settings("gateway", {**ENV, **edge, "GEKKO_PORT": "8000"})
    assert gateway.serves_tls and gateway.advertise_url == "https://127.0.0.1:8000"
    assert gateway.edge_tls is not None and gateway.edge_tls.hsts_max_age_s == 31_536_000
    shorter = load_settings("gateway", {**ENV, **edge, "GEKKO_HSTS_MAX_AGE_S": "300"})
    assert shorter.edge_tls is not None and shorter.edge_tls.hsts_max_age_s == 300
    # A domain service ignores the edge settings: its certificate is the internal CA's.
    assert not load_settings("users", {**ENV, **edge}).serves_tls
    with pytest.raises(ConfigError, match="GEKKO_EDGE_TLS_KEY_FILE not set"):
        load_settings("gateway", {**ENV, **edge, "GEKKO_EDGE_TLS_KEY_FILE": ""})
    with pytest.raises(ConfigError, match="GEKKO_HSTS_MAX_AGE_S must be a positive"):
        load_settings("gateway", {**ENV, **edge, "GEKKO_HSTS_MAX_AGE_S": "forever"})


def test_incomplete_or_unreadable_tls_settings_are_refused(tmp_path):
    files = _tls_files(tmp_path)
    with pytest.raises(ConfigError, match="GEKKO_TLS_KEY_FILE not set"):
        load_settings("users", {**ENV, **files, "GEKKO_TLS_KEY_FILE": ""})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings("users", {**ENV, **files, "GEKKO_TLS_CA_FILE": str(tmp_path / "none")})


def test_the_gateway_uses_its_own_redis_user_where_one_is_given():
    own = "redis://gekko-gateway:pw@127.0.0.1:6379/0"
    env = {**ENV, "GEKKO_GATEWAY_REDIS_URL": own}
    assert load_settings("gateway", env).redis_url == own
    assert load_settings("users", env).redis_url == ENV["GEKKO_REDIS_URL"]
    # A gateway-only host has no services' URL at all.
    only_gateway = {k: v for k, v in env.items() if k != "GEKKO_REDIS_URL"}
    assert load_settings("gateway", only_gateway).redis_url == own
