"""Deterministic synthetic prices, shared by market_data (quotes) and trading (fills).

A price is a pure function of (symbol, second): several octaves of hashed value noise around a
per-symbol base price. Any process computes the same price for the same second, without state,
so trading fills at exactly the price market_data quotes.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from functools import lru_cache

BASE_PRICES: dict[str, float] = {
    "BTC-USD": 65_000.0,
    "ETH-USD": 3_200.0,
    "SOL-USD": 150.0,
    "AAPL": 190.0,
    "MSFT": 420.0,
}
SUPPORTED_SYMBOLS: tuple[str, ...] = tuple(BASE_PRICES)

# (period in seconds, amplitude in log-price): slow drift plus faster wiggles.
_OCTAVES: tuple[tuple[int, float], ...] = (
    (86_400, 0.08),
    (3_600, 0.02),
    (300, 0.006),
    (60, 0.002),
    (5, 0.0005),
)


class UnknownSymbolError(KeyError):
    def __init__(self, symbol: str) -> None:
        super().__init__(symbol)
        self.symbol = symbol

    def __str__(self) -> str:
        return f"unknown symbol {self.symbol!r}; supported symbols: {', '.join(SUPPORTED_SYMBOLS)}"


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float
    ts: int


def normalize_symbol(symbol: str) -> str:
    normalized = symbol.strip().upper()
    if normalized not in BASE_PRICES:
        raise UnknownSymbolError(symbol)
    return normalized


# Cached: candles evaluate many seconds that share the same slow-octave buckets.
@lru_cache(maxsize=65_536)
def _noise(symbol: str, period: int, bucket: int) -> float:
    """Uniform value in [-1, 1] from a stable hash (not Python's per-process hash())."""
    digest = hashlib.blake2b(f"{symbol}|{period}|{bucket}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def _octave(symbol: str, period: int, t: float) -> float:
    position = t / period
    bucket = math.floor(position)
    frac = position - bucket
    smooth = frac * frac * (3 - 2 * frac)  # smoothstep keeps the curve continuous
    a = _noise(symbol, period, bucket)
    b = _noise(symbol, period, bucket + 1)
    return a + (b - a) * smooth


def price_at(symbol: str, ts: int) -> float:
    """Price of `symbol` at whole second `ts` (unix time). Raises UnknownSymbolError."""
    symbol = normalize_symbol(symbol)
    log_offset = sum(amp * _octave(symbol, period, ts) for period, amp in _OCTAVES)
    price = BASE_PRICES[symbol] * math.exp(log_offset)
    return round(price, 2 if price >= 1 else 6)


def quote(symbol: str, now: float | None = None) -> Quote:
    ts = int(time.time() if now is None else now)
    symbol = normalize_symbol(symbol)
    return Quote(symbol=symbol, price=price_at(symbol, ts), ts=ts)
