"""The platform's own venue keys on a host (gekko.exchanges.platform_keys and
`gekko exchange seal-keys`): sealed under the data keys, opened only with them and only as
keys of their venues, and sealed again only when they changed (a deploy writing the file then
changes nothing); and the market feeds' settings (GEKKO_MARKET_FEEDS)."""

from __future__ import annotations

import io
import json

import pytest

from gekko.config import ConfigError, load_settings
from gekko.exchanges import cli, platform_keys
from gekko.security.crypto import DataKeys, generate_data_keys_file

from .keys import DATA_KEYS_FILE
from .test_config import ENV

OANDA = {"oanda": {"api_token": "platform-token", "account_id": "101-004-1-001"}}


def test_sealed_keys_open_only_with_the_data_keys_and_are_not_in_the_clear(tmp_path):
    keys = DataKeys(path=DATA_KEYS_FILE)
    sealed = platform_keys.seal(keys, OANDA)
    assert sealed.startswith("gk1.") and "platform-token" not in sealed
    assert platform_keys.unseal(keys, sealed) == OANDA
    other = DataKeys(path=generate_data_keys_file(str(tmp_path)))
    with pytest.raises(platform_keys.PlatformKeysError, match="do not open"):
        platform_keys.unseal(other, sealed)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"kraken": {"api_key": "k"}}, "'kraken' is not a venue"),
        ({"oanda": {"api_token": "t"}}, "the fields of a oanda key are api_token, account_id"),
        ({"oanda": {"api_token": " ", "account_id": "a"}}, "every field needs a value"),
        (["oanda"], "a JSON object of venue -> fields"),
    ],
)
def test_only_keys_of_their_venues_are_sealed(keys, message):
    with pytest.raises(platform_keys.PlatformKeysError, match=message):
        platform_keys.seal(DataKeys(path=DATA_KEYS_FILE), keys)


def _seal_cli(monkeypatch, capsys, keys: object, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(keys)))
    status = cli.main(["seal-keys", *args], env={"GEKKO_PLATFORM_VENUE_KEY_FILE": DATA_KEYS_FILE})
    out = capsys.readouterr()
    return status, out.out.strip(), out.err


def test_the_cli_seals_again_only_what_changed(tmp_path, monkeypatch, capsys):
    status, sealed, _ = _seal_cli(monkeypatch, capsys, OANDA)
    assert status == 0
    held = tmp_path / "platform-keys"
    held.write_text(sealed + "\n")
    status, same, _ = _seal_cli(monkeypatch, capsys, OANDA, "--unless-same", str(held))
    assert (status, same) == (0, sealed)  # the file's own value: nothing to write
    changed = {"oanda": {**OANDA["oanda"], "api_token": "rotated"}}
    status, new, _ = _seal_cli(monkeypatch, capsys, changed, "--unless-same", str(held))
    assert status == 0 and new != sealed
    assert platform_keys.unseal(DataKeys(path=DATA_KEYS_FILE), new) == changed
    status, _, err = _seal_cli(monkeypatch, capsys, {"oanda": {}})
    assert status == 2 and "the fields of a oanda key" in err


def test_market_feeds_are_market_datas_and_name_venues_and_their_symbols(tmp_path):
    feeds = '{"binanceus": ["BTCUSD", "btcusd"], "coinbase": ["BTC-USD"]}'
    env = {**ENV, "GEKKO_MARKET_FEEDS": feeds, "GEKKO_COINBASE_STREAM_URL": "ws://127.0.0.1:1/ws"}
    settings = load_settings("market_data", env).market_feeds
    assert settings.symbols == {"binanceus": ("BTCUSD",), "coinbase": ("BTC-USD",)}
    assert settings.stream_urls == {"coinbase": "ws://127.0.0.1:1/ws"}
    assert load_settings("trading", env).market_feeds.symbols == {}
    for wrong, message in [
        ("[1]", "must be a JSON object"),
        ('{"kraken": ["X"]}', "'kraken' is not a venue"),
        ('{"coinbase": []}', "needs a list of 1 to 50"),
        ('{"coinbase": ["BTC USD"]}', "letters, digits"),
        ('{"oanda": ["EUR_USD"]}', "the oanda stream needs the platform's key"),
        ('{"oanda": ["EUR_USD"]}', "GEKKO_PLATFORM_VENUE_KEY_FILE"),
        ("{", "is not JSON"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings("market_data", {**ENV, "GEKKO_MARKET_FEEDS": wrong})
    with pytest.raises(ConfigError, match="STREAM_URL must be a wss:// or ws:// URL"):
        load_settings("market_data", {**env, "GEKKO_COINBASE_STREAM_URL": "https://x"})


def test_the_deploys_form_seals_under_a_key_derived_from_the_newest_data_key(monkeypatch, capsys):
    first = ["k" * 43]

    def seal(data_keys: list[str], current: str) -> dict:
        given = {"data_keys": data_keys, "keys": OANDA, "current": current}
        status, out, err = _seal_cli(monkeypatch, capsys, given, "--all-stdin")
        assert status == 0, err
        return json.loads(out)

    made = seal(first, "")
    assert made["key"] == platform_keys.derived_key(first) and made["key"] != first[0]
    assert platform_keys.unseal(DataKeys(text=made["key"]), made["sealed"]) == OANDA
    # The data key itself does not open it: market_data needs only the derived key.
    with pytest.raises(platform_keys.PlatformKeysError):
        platform_keys.unseal(DataKeys(text=first[0]), made["sealed"])
    assert seal(first, made["sealed"]) == made  # unchanged: the deploy writes nothing
    rotated = seal([*first, "n" * 43], made["sealed"])  # a newer data key: a new key, resealed
    assert rotated["key"] != made["key"] and rotated["sealed"] != made["sealed"]
    assert platform_keys.unseal(DataKeys(text=rotated["key"]), rotated["sealed"]) == OANDA
    status, _, err = _seal_cli(monkeypatch, capsys, {"keys": OANDA}, "--all-stdin")
    assert status == 2 and '"data_keys"' in err
