"""OHLCV candles from the deterministic price feed (the same one quotes and fills use).

Each candle samples the price function at up to SAMPLES_PER_CANDLE evenly spaced seconds;
open/close are the first/last second of the bucket. Volume is synthetic but stable: a hash of
(symbol, bucket), scaled to the symbol's price so notional volumes look plausible.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import lru_cache

from gekko.domain.prices import BASE_PRICES, normalize_symbol, price_at

INTERVALS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14_400,
    "1d": 86_400,
}
SAMPLES_PER_CANDLE = 60
MAX_CANDLES = 500


class UnknownIntervalError(ValueError):
    def __init__(self, interval: str) -> None:
        super().__init__(
            f"unknown interval {interval!r}; supported intervals: {', '.join(INTERVALS)}"
        )


@dataclass(frozen=True)
class Candle:
    ts: int  # bucket start, unix seconds
    open: float
    high: float
    low: float
    close: float
    volume: float


def _volume(symbol: str, seconds: int, bucket: int) -> float:
    digest = hashlib.blake2b(f"vol|{symbol}|{seconds}|{bucket}".encode(), digest_size=4).digest()
    unit = int.from_bytes(digest, "big") / 2**32
    # ~ 50k..250k USD per minute, in units of the asset
    usd = (50_000 + 200_000 * unit) * seconds / 60
    return round(usd / BASE_PRICES[symbol], 6)


def candle_at(symbol: str, seconds: int, bucket: int, now: int) -> Candle:
    if (bucket + 1) * seconds <= now:
        return _closed_candle(symbol, seconds, bucket)
    return _build(symbol, seconds, bucket, now)  # the current candle is still forming


# A closed candle never changes (the feed is a pure function of time): compute it once.
@lru_cache(maxsize=20_000)
def _closed_candle(symbol: str, seconds: int, bucket: int) -> Candle:
    return _build(symbol, seconds, bucket, (bucket + 1) * seconds - 1)


def _build(symbol: str, seconds: int, bucket: int, now: int) -> Candle:
    start = bucket * seconds
    end = min(start + seconds - 1, now)
    step = max(1, seconds // SAMPLES_PER_CANDLE)
    samples = [price_at(symbol, t) for t in range(start, end + 1, step)]
    close = price_at(symbol, end)
    samples.append(close)
    return Candle(
        ts=start,
        open=samples[0],
        high=max(samples),
        low=min(samples),
        close=close,
        volume=_volume(symbol, seconds, bucket),
    )


def candles(symbol: str, interval: str, limit: int, now: float | None = None) -> list[Candle]:
    """The last `limit` candles, oldest first, ending with the one that contains `now`."""
    symbol = normalize_symbol(symbol)
    seconds = INTERVALS.get(interval)
    if seconds is None:
        raise UnknownIntervalError(interval)
    current = int(time.time() if now is None else now)
    last = current // seconds
    return [candle_at(symbol, seconds, b, current) for b in range(last - limit + 1, last + 1)]
