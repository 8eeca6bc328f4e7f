"""Prices -> model input. The same function serves training (batches of generated windows) and
inference (one request's closes), so the two can never disagree on the features."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Closes per request, oldest first; the model sees WINDOW - 1 log returns.
WINDOW = 32
FEATURES = WINDOW - 1
# Standardised returns beyond this many standard deviations carry no more information.
CLIP = 8.0
_EPS = 1e-12


class PriceWindowError(ValueError):
    """A request's prices cannot be turned into features (the message says why)."""


def check_prices(prices: Sequence[float], window: int = WINDOW) -> None:
    if len(prices) != window:
        raise PriceWindowError(
            f"prices must hold exactly {window} closes, oldest first; got {len(prices)}"
        )
    for i, price in enumerate(prices):
        if not math.isfinite(price) or price <= 0:
            raise PriceWindowError(f"prices[{i}] must be a positive finite number, got {price!r}")


def from_prices(prices: torch.Tensor) -> torch.Tensor:
    """[N, W] positive closes -> [N, W-1] float32 log returns, each row scaled to unit
    volatility: the model judges the trend against the window's own noise, whatever the
    asset's price level or volatility."""
    returns = torch.diff(torch.log(prices.to(torch.float64)), dim=1)
    centred_scale = returns.std(dim=1, keepdim=True).clamp_min(_EPS)
    return (returns / centred_scale).clamp(-CLIP, CLIP).to(torch.float32)


def request_features(prices: Sequence[float], window: int = WINDOW) -> torch.Tensor:
    """One request's closes -> one feature row [W-1] (validated first)."""
    check_prices(prices, window)
    return from_prices(torch.tensor([list(prices)], dtype=torch.float64))[0]
