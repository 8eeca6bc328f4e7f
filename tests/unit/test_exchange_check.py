"""`gekko exchange check <venue>` against each venue's double on loopback: latency and headroom
when the credentials work, the venue's own error explained when they do not, and exit status 2
when the settings are missing."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from doubles.binanceus import BinanceDouble
from doubles.coinbase import CoinbaseDouble
from doubles.oanda import OandaDouble
from doubles.serve import serve_in_thread
from gekko.cli import main as gekko_main
from gekko.exchanges.cli import main

SECRET = "s" * 64


@pytest.fixture
def serve() -> Iterator:
    """Runs an aiohttp app on a loopback port in a thread (the CLI runs its own event loop)."""
    stops = []

    def start(app) -> str:
        url, stop = serve_in_thread(app)
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


def _binance_env(url: str, secret: str = SECRET) -> dict[str, str]:
    return {
        "GEKKO_BINANCEUS_BASE_URL": url,
        "GEKKO_BINANCEUS_API_KEY": "check-key",
        "GEKKO_BINANCEUS_API_SECRET": secret,
    }


def test_binanceus_check_prints_latency_and_weight_headroom(serve, capsys, monkeypatch):
    url = serve(BinanceDouble(api_key="check-key", secret=SECRET).app())
    for name, value in _binance_env(url).items():
        monkeypatch.setenv(name, value)
    status = gekko_main(["exchange", "check", "binanceus", "--mode", "live"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"Binance.US (live) at {url}: ok" in out
    assert "request weight left this minute" in out and "of 1200" in out


def test_a_bad_signature_fails_with_the_venues_code_explained(serve, capsys):
    url = serve(BinanceDouble(api_key="check-key", secret=SECRET).app())
    status = main(["check", "binanceus", "--json"], env=_binance_env(url, "t" * 64))
    answer = json.loads(capsys.readouterr().out)
    assert status == 1 and answer["ok"] is False and answer["code"] == -1022
    assert "Signature for this request is not valid." in answer["error"]
    assert "does not belong to this API key" in answer["error"]


def test_missing_settings_exit_2_and_name_what_to_set(capsys):
    assert main(["check", "oanda"], env={"GEKKO_OANDA_API_TOKEN": "t"}) == 2
    assert "set GEKKO_OANDA_ACCOUNT_ID" in capsys.readouterr().err
    # Binance.US publishes no sandbox: say what to use instead.
    assert main(["check", "binanceus"], env=_binance_env("")) == 2
    assert "has no sandbox host: use mode live" in capsys.readouterr().err


def test_coinbase_and_oanda_checks(serve, capsys):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    name = "organizations/o/apiKeys/k"
    url = serve(CoinbaseDouble(name, key.public_key()).app())
    env = {
        "GEKKO_COINBASE_BASE_URL": url,
        "GEKKO_COINBASE_API_KEY": name,
        # As pasted into an environment file: newlines written as \n.
        "GEKKO_COINBASE_API_SECRET": pem.replace("\n", "\\n"),
    }
    assert main(["check", "coinbase", "--json"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    url = serve(OandaDouble("tok", "101-1").app())
    env = {
        "GEKKO_OANDA_BASE_URL": url,
        "GEKKO_OANDA_API_TOKEN": "tok",
        "GEKKO_OANDA_ACCOUNT_ID": "101-1",
    }
    assert main(["check", "oanda"], env=env) == 0
    assert "120 requests/s" in capsys.readouterr().out


def test_an_ed25519_pem_secret_signs_binanceus_requests(serve, capsys):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    url = serve(BinanceDouble(api_key="check-key", ed25519_public=key.public_key()).app())
    assert main(["check", "binanceus", "--mode", "live"], env=_binance_env(url, pem)) == 0
    assert "ok" in capsys.readouterr().out
    # An RSA or EC key where Ed25519 is expected is refused before any request.
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    assert main(["check", "binanceus", "--mode", "live"], env=_binance_env(url, ec_pem)) == 2
    assert "must be Ed25519" in capsys.readouterr().err


def test_a_key_that_is_not_pem_exits_2_with_the_reason(capsys):
    broken = "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
    assert main(["check", "binanceus", "--mode", "live"], env=_binance_env("http://x", broken)) == 2
    assert "GEKKO_BINANCEUS_API_SECRET" in capsys.readouterr().err


def test_settings_on_standard_input_are_the_only_ones_read(serve, capsys, monkeypatch):
    url = serve(OandaDouble("tok", "101-1").app())
    given = {"GEKKO_OANDA_API_TOKEN": "tok", "GEKKO_OANDA_ACCOUNT_ID": "101-1"}
    given["GEKKO_OANDA_BASE_URL"] = url
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(given)))
    # A stray variable of the environment neither replaces a key nor redirects the call.
    env = {"GEKKO_OANDA_BASE_URL": "http://127.0.0.1:9", "GEKKO_OANDA_API_TOKEN": "old"}
    assert main(["check", "oanda", "--json", "--settings-stdin"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize(
    "given",
    ['{"PATH": "/tmp"}', '{"GEKKO_OANDA_API_TOKEN": 5}', "[]", "GEKKO_OANDA_API_TOKEN=t"],
    ids=["not-a-gekko-name", "not-a-string", "not-an-object", "not-json"],
)
def test_standard_input_sets_gekko_strings_only(given, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(given))
    assert main(["check", "oanda", "--settings-stdin"], env={}) == 2
    assert "standard input" in capsys.readouterr().err
