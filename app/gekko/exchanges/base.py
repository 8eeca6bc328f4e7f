"""What every venue adapter speaks: orders, balances, trading rules and the venue's errors.

Adapters translate these to one venue's documented API (gekko.exchanges.binanceus, ...). An
order always carries the platform's client order id: the venue stores it with the order, so a
request whose answer was lost is settled by asking for that id, never by sending it again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, Protocol

import aiohttp
import orjson

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]

# Client order ids the three venues all accept: Binance allows ^[.A-Z:/a-z0-9_-]{1,36}$,
# OANDA 128 characters, Coinbase a free string; the common ground is this.
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


class Mode(StrEnum):
    """Where orders go: the built-in paper exchange (the default everywhere), the venue's
    sandbox or practice host, or the live venue."""

    PAPER = "paper"
    SANDBOX = "sandbox"
    LIVE = "live"


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class OrderRequest:
    client_order_id: str
    symbol: str  # the venue's own symbol (BTCUSD on Binance.US)
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None = None  # limit orders only

    def __post_init__(self) -> None:
        if not CLIENT_ORDER_ID.fullmatch(self.client_order_id):
            raise ValueError(
                f"client order id {self.client_order_id!r}: 1 to 36 of A-Z a-z 0-9 _ -"
            )
        if self.quantity <= 0:
            raise ValueError("quantity must be positive")
        if (self.type == "limit") != (self.price is not None):
            raise ValueError("a limit order needs a price, a market order has none")
        if self.price is not None and self.price <= 0:
            raise ValueError("price must be positive")


@dataclass(frozen=True)
class ExchangeOrder:
    """An order as the venue reports it: its fills so far as their totals, read together (one
    answer, or the order's trades or fill transaction), so quantity, value and fees agree."""

    venue: str
    symbol: str
    venue_order_id: str
    client_order_id: str
    status: OrderStatus
    side: Side
    quantity: Decimal
    filled_quantity: Decimal
    price: Decimal | None = None  # the limit price
    # What the fills were worth in the symbol's quote asset (the sum of quantity x price).
    filled_value: Decimal = Decimal(0)
    # The fees the venue charged for the fills, by the asset it charged them in.
    fees: Mapping[str, Decimal] = field(default_factory=dict)
    # Whether fees come out of what the fill moved (Binance.US: the asset received) rather than
    # from the account's balance.
    fees_in_kind: bool = False
    # False when the venue's answer left part of the fills' detail out (trades not all listed
    # yet, a fee's currency not known): the order is to be asked again for it.
    fills_complete: bool = True

    @property
    def average_price(self) -> Decimal | None:
        """The fills' volume-weighted price; None before the first fill."""
        if self.filled_quantity <= 0 or self.filled_value <= 0:
            return None
        return self.filled_value / self.filled_quantity


def add_fee(fees: dict[str, Decimal], asset: str, amount: Decimal) -> None:
    """Count a fee in its asset; a zero fee leaves no entry."""
    if amount:
        fees[asset] = fees.get(asset, Decimal(0)) + amount


@dataclass(frozen=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True)
class SymbolRules:
    """What an order for this symbol must respect, from the venue's own description."""

    symbol: str
    base_asset: str
    quote_asset: str
    trading: bool
    tick_size: Decimal | None = None
    step_size: Decimal | None = None
    min_quantity: Decimal | None = None
    min_notional: Decimal | None = None


@dataclass
class ExchangeError(Exception):
    """A venue's refusal or failure, with its own code and message kept.

    `retry_after_s` is set when the venue asked to back off (HTTP 429, Binance's 418);
    `unsure` when the request may have reached the venue (no answer): the order must be
    looked up by its client order id before anything is sent again. `credential` when nothing
    was asked of the venue because the credential could not be had (a linked account's token):
    it says nothing of the venue's health. `not_sent` when no connection to the host could be
    opened: the request never left (another host of the venue may be asked)."""

    venue: str
    message: str
    http_status: int | None = None
    code: int | str | None = None
    retry_after_s: float | None = None
    unsure: bool = False
    explanation: str = field(default="")
    credential: bool = False
    not_sent: bool = False

    @property
    def venue_failed(self) -> bool:
        """No answer (or none that can be read), a host out of reach, or a 5xx: the venue's
        failure, not a refusal."""
        return self.unsure or self.not_sent or (self.http_status or 0) >= 500

    def __str__(self) -> str:
        where = f"{self.venue}: " + (f"HTTP {self.http_status} " if self.http_status else "")
        code = f"[{self.code}] " if self.code is not None else ""
        hint = f" ({self.explanation})" if self.explanation else ""
        return f"{where}{code}{self.message}{hint}"


class Exchange(Protocol):
    """One venue, signed with one credential."""

    venue: str

    async def place_order(self, order: OrderRequest) -> ExchangeOrder: ...

    async def get_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None: ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> ExchangeOrder: ...

    async def balances(self) -> list[Balance]: ...

    async def symbols(self) -> dict[str, SymbolRules]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    headers: Mapping[str, str]


class VenueHttp:
    """The HTTP side the adapters share: one aiohttp session, its timeout, the last latency,
    and what a request without an answer, or with an unreadable 2xx one, means (unsure: an
    order may stand)."""

    def __init__(self, venue: str, timeout_s: float) -> None:
        self.venue = venue
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.last_latency_ms: float | None = None
        self._session: aiohttp.ClientSession | None = None

    async def send(
        self, method: str, url: str, what: str, *, data: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        started = time.perf_counter()
        try:
            async with self._session.request(method, url, data=data, headers=dict(headers)) as resp:
                answer = Answer(resp.status, await resp.text(), dict(resp.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Raised before anything is written: the host could not be reached, so nothing is
            # in doubt. Anything else may have reached the venue.
            not_sent = isinstance(exc, aiohttp.ClientConnectorError)
            raise ExchangeError(
                self.venue,
                f"{what}: "
                + ("could not connect" if not_sent else "no answer")
                + f" ({type(exc).__name__})",
                unsure=not not_sent,
                not_sent=not_sent,
            ) from None
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        return answer

    def accepted(self, answer: Answer, what: str) -> Any:
        """The JSON of a 2xx answer."""
        try:
            return orjson.loads(answer.text)
        except orjson.JSONDecodeError:
            raise ExchangeError(
                self.venue, f"{what}: HTTP {answer.status}, unreadable answer", unsure=True
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def error_payload(text: str) -> dict[str, Any]:
    """A refusal's JSON object, or {} for a body that is not one."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def retry_after_s(value: str | None) -> float | None:
    return float(value) if value and value.isdigit() else None
