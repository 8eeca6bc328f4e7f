"""The validate phase checks each venue an environment trades on with the platform's own keys,
as an operator runs it (ansible-playbook playbooks/validate.yml --tags venues), against the OANDA
practice double: a venue that answers is reported with its latency and budget; one that refuses
the keys, or whose keys are missing, stops the run with the venue's error and how to mend it;
the keys appear in no output, even a verbose one."""

from __future__ import annotations

import json

import pytest

from doubles.binanceus import BinanceDouble
from doubles.serve import serve_in_thread

from .conftest import CLOSED_PORT_URL, OANDA_ACCOUNT, OANDA_TOKEN
from .test_security_policy import REPO, recap, validate

LOCAL = REPO / "inventories/local"
VENUE_ENV = [
    f"GEKKO_{venue}_{field}"
    for venue, fields in (
        ("BINANCEUS", ("API_KEY", "API_SECRET", "BASE_URL")),
        ("COINBASE", ("API_KEY", "API_SECRET", "BASE_URL")),
        ("OANDA", ("API_TOKEN", "ACCOUNT_ID", "BASE_URL")),
    )
    for field in fields
]


@pytest.fixture(autouse=True)
def no_venue_keys_of_the_runner(monkeypatch):
    """The run's environment is the controller's: none of the developer's own venue keys."""
    for name in VENUE_ENV:
        monkeypatch.delenv(name, raising=False)


def venues_check(tmp_path, oanda_url: str, credentials: dict, *args: str):
    settings = {
        "gekko_exchange_mode": "sandbox",
        "gekko_exchange_venues": sorted(credentials) or ["oanda"],
        "gekko_exchange_base_urls": {"oanda": oanda_url},
        "gekko_vault_exchange_credentials": credentials,
    }
    return validate(tmp_path, LOCAL, "-e", json.dumps(settings), *args, tags="venues")


def test_a_venue_that_answers_the_platforms_keys_lets_the_deploy_go_on(tmp_path, oanda_double):
    keys = {"oanda": {"api_token": OANDA_TOKEN, "account_id": OANDA_ACCOUNT}}
    run, output = venues_check(tmp_path, oanda_double, keys, "-vvv")
    assert run.returncode == 0, output
    assert "oanda (sandbox): signed account call in" in output
    assert "request budget: 120 requests/s (documented; no header)" in output
    assert recap(output) == {"localhost": (0, 0)}
    assert OANDA_TOKEN not in output


def test_binance_us_hosts_are_asked_in_turn_when_the_preferred_one_cannot_be_reached(tmp_path):
    binance = BinanceDouble(api_key="platform-key", secret="platform-secret-" + "x" * 32)
    url, stop = serve_in_thread(binance.app())
    try:
        hosts = {"binanceus": [CLOSED_PORT_URL, url]}  # nothing listens on the first
        keys = {"binanceus": {"api_key": binance.api_key, "api_secret": binance.secret}}
        settings = {"gekko_exchange_base_urls": hosts}
        run, output = venues_check(tmp_path, "", keys, "-e", json.dumps(settings))
    finally:
        stop()
    assert run.returncode == 0, output
    assert "binanceus (sandbox): signed account call in" in output
    assert f"answered by {url}" in output
    assert binance.secret not in output


def test_a_venue_refusing_the_keys_stops_the_run_with_its_error_and_the_fix(tmp_path, oanda_double):
    keys = {"oanda": {"api_token": "a-revoked-token", "account_id": OANDA_ACCOUNT}}
    run, output = venues_check(tmp_path, oanda_double, keys)
    assert run.returncode != 0, output
    assert "oanda (sandbox) refused the platform's keys or did not answer" in output
    assert "HTTP 401" in output and "Insufficient authorization" in output
    assert "Mend the key (gekko_vault_exchange_credentials.oanda, or GEKKO_OANDA_*" in output
    assert "a-revoked-token" not in output


def test_a_venue_without_the_platforms_keys_is_named_with_where_to_put_them(tmp_path, oanda_double):
    keys = {"oanda": {"api_token": OANDA_TOKEN, "account_id": OANDA_ACCOUNT}, "coinbase": {}}
    # Neither in the vault nor in the environment: both places are named.
    settings = {"gekko_exchange_venues": ["oanda", "binanceus"]}
    run, output = venues_check(tmp_path, oanda_double, keys, "-e", json.dumps(settings))
    assert run.returncode != 0, output
    assert (
        "binanceus is in gekko_exchange_venues but the platform has no key for it: export "
        "GEKKO_BINANCEUS_API_KEY and GEKKO_BINANCEUS_API_SECRET on the controller, or set "
        "gekko_vault_exchange_credentials.binanceus.api_key and .api_secret" in output
    )
    assert "Make a signed account call" not in output  # nothing was sent anywhere
    # In the vault without its keys: the vault entry is named, not the environment.
    keys["coinbase"] = {"api_key": "organizations/o/apiKeys/k"}
    run, output = venues_check(tmp_path, oanda_double, keys)
    assert run.returncode != 0, output
    assert (
        "coinbase is in gekko_exchange_venues but the platform has no key for it: "
        "gekko_vault_exchange_credentials.coinbase lacks api_secret" in output
    )


def test_keys_from_the_controllers_environment_and_none_checked_in_paper_mode(
    tmp_path, oanda_double, monkeypatch
):
    monkeypatch.setenv("GEKKO_OANDA_API_TOKEN", OANDA_TOKEN)
    monkeypatch.setenv("GEKKO_OANDA_ACCOUNT_ID", OANDA_ACCOUNT)
    run, output = venues_check(tmp_path, oanda_double, {}, "-vvv")
    assert run.returncode == 0, output
    assert "oanda (sandbox): signed account call in" in output
    assert OANDA_TOKEN not in output
    # In paper mode there is no venue to trade on: nothing is checked, even without keys
    # (which would stop the run otherwise).
    monkeypatch.delenv("GEKKO_OANDA_API_TOKEN")
    run, output = venues_check(tmp_path, oanda_double, {}, "-e", "gekko_exchange_mode=paper")
    assert run.returncode == 0, output
    assert "signed account call in" not in output


def oauth_check(tmp_path, oanda_url: str, settings: dict):
    return venues_check(tmp_path, oanda_url, {}, "-e", json.dumps(settings))


def test_a_coinbase_oauth_client_without_its_secret_stops_the_run_with_the_fix(
    tmp_path, oanda_double, monkeypatch
):
    monkeypatch.delenv("GEKKO_COINBASE_OAUTH_CLIENT_SECRET", raising=False)
    client = {
        "gekko_coinbase_oauth_client_id": "client-1",
        "gekko_coinbase_oauth_redirect_uri": "https://gekko.example/venue-links/coinbase",
        "gekko_exchange_venues": [],
    }
    run, output = oauth_check(tmp_path, oanda_double, client)
    assert run.returncode != 0, output
    assert "the client secret is missing: set gekko_vault_coinbase_oauth_client_secret" in output
    assert "or export GEKKO_COINBASE_OAUTH_CLIENT_SECRET on the controller" in output

    monkeypatch.setenv("GEKKO_COINBASE_OAUTH_CLIENT_SECRET", "a-client-secret-from-coinbase")
    run, output = oauth_check(tmp_path, oanda_double, client)
    assert run.returncode == 0, output
    assert "a-client-secret-from-coinbase" not in output

    plain = {**client, "gekko_coinbase_oauth_redirect_uri": "http://gekko.example/cb"}
    run, output = oauth_check(tmp_path, oanda_double, plain)
    assert run.returncode != 0, output
    assert "must be the https:// page registered with the client" in output


def feeds_check(tmp_path, oanda_url: str, feeds: dict):
    settings = {"gekko_market_feeds": feeds, "gekko_exchange_venues": []}
    return venues_check(tmp_path, oanda_url, {}, "-e", json.dumps(settings))


def test_market_feeds_name_venues_and_oandas_has_the_platforms_key(
    tmp_path, oanda_double, monkeypatch
):
    run, output = feeds_check(tmp_path, oanda_double, {"kraken": ["BTCUSD"]})
    assert run.returncode != 0, output
    assert "gekko_market_feeds names kraken, which the platform does not stream" in output

    run, output = feeds_check(tmp_path, oanda_double, {"coinbase": "BTC-USD"})
    assert run.returncode != 0, output
    assert "gekko_market_feeds.coinbase must be a list of the venue's" in output

    run, output = feeds_check(tmp_path, oanda_double, {"oanda": ["EUR_USD"]})
    assert run.returncode != 0, output
    assert "export GEKKO_OANDA_API_TOKEN and GEKKO_OANDA_ACCOUNT_ID on the" in output

    monkeypatch.setenv("GEKKO_OANDA_API_TOKEN", "platform-oanda-token-xyz")
    monkeypatch.setenv("GEKKO_OANDA_ACCOUNT_ID", OANDA_ACCOUNT)
    run, output = feeds_check(
        tmp_path, oanda_double, {"oanda": ["EUR_USD"], "coinbase": ["BTC-USD"]}
    )
    assert run.returncode == 0, output
    assert "platform-oanda-token-xyz" not in output
