"""Gamification rules: how many points an event is worth and which achievements it unlocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

POINTS_PER_LEVEL = 100
REGISTRATION_POINTS = 10
TRADE_POINTS = 10
FIRST_TRADE_BONUS = 25
POINTS_PER_1000_USD = 1  # volume bonus: one point per 1000 USD traded

# Cumulative notional (USD) -> achievement code; checked after each trade.
VOLUME_TIERS: tuple[tuple[Decimal, str], ...] = (
    (Decimal(10_000), "volume_10k"),
    (Decimal(100_000), "volume_100k"),
    (Decimal(1_000_000), "volume_1m"),
)
TRADE_COUNT_TIERS: tuple[tuple[int, str], ...] = ((10, "trades_10"), (100, "trades_100"))


def level_for(points: int) -> int:
    return 1 + max(points, 0) // POINTS_PER_LEVEL


@dataclass(frozen=True)
class Award:
    points: int
    achievements: list[str] = field(default_factory=list)


def award_for_registration() -> Award:
    return Award(REGISTRATION_POINTS, ["welcome"])


def award_for_trade(trades_before: int, volume_before: Decimal, notional: Decimal) -> Award:
    """Points for one executed order, given the user's totals before it."""
    points = TRADE_POINTS + int(notional // 1000) * POINTS_PER_1000_USD
    achievements: list[str] = []
    trades_after = trades_before + 1
    volume_after = volume_before + notional
    if trades_before == 0:
        points += FIRST_TRADE_BONUS
        achievements.append("first_trade")
    for count, code in TRADE_COUNT_TIERS:
        if trades_before < count <= trades_after:
            achievements.append(code)
    for threshold, code in VOLUME_TIERS:
        if volume_before < threshold <= volume_after:
            achievements.append(code)
    return Award(points, achievements)
