"""Seeded synthetic price windows with structure a model can learn: trend regimes.

Each series follows a hidden Markov regime (down, flat, up). A regime sets the drift of the log
returns (a fraction of the series' own volatility) and persists from step to step with
probability 1 - SWITCH_P, so the recent returns tell which regime is in force. The label of a
window is the regime of the step after it: sell in a down-trend, hold in a flat market, buy in
an up-trend. The same seed always gives the same windows and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gekko.signals.features import WINDOW

SELL, HOLD, BUY = 0, 1, 2
CLASSES: tuple[str, ...] = ("sell", "hold", "buy")
# Drift per regime in units of the series' volatility.
DRIFT = torch.tensor([-0.35, 0.0, 0.35], dtype=torch.float64)
SWITCH_P = 0.02
VOLATILITY_RANGE = (0.005, 0.03)  # per-step log-return volatility, drawn per series
START_PRICE_RANGE = (1.0, 50_000.0)


@dataclass(frozen=True)
class Windows:
    prices: torch.Tensor  # [N, WINDOW] float64 closes, oldest first
    labels: torch.Tensor  # [N] int64 in CLASSES order


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, dtype=torch.float64, generator=gen)


def generate(n: int, seed: int, window: int = WINDOW) -> Windows:
    """n independent windows of `window` closes and the regime label that follows each."""
    gen = torch.Generator().manual_seed(seed)
    regime = torch.randint(0, len(CLASSES), (n,), generator=gen)
    volatility = _uniform(n, *VOLATILITY_RANGE, gen)
    log_price = torch.log(_uniform(n, *START_PRICE_RANGE, gen))
    closes = [log_price]
    for _ in range(window):  # window - 1 returns inside the window, then one more regime step
        switch = torch.rand(n, generator=gen) < SWITCH_P
        regime = torch.where(switch, torch.randint(0, len(CLASSES), (n,), generator=gen), regime)
        if len(closes) < window:
            noise = torch.randn(n, dtype=torch.float64, generator=gen)
            log_price = log_price + volatility * (DRIFT[regime] + noise)
            closes.append(log_price)
    return Windows(prices=torch.exp(torch.stack(closes, dim=1)), labels=regime.clone())
