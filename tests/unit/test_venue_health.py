"""A venue's health from the calls made to it: refusals are the venue answering, failures in a
row degrade it, a probe after each cool-off decides when it is back; all of it exported."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gekko.exchanges.base import ExchangeError
from gekko.exchanges.health import Outcome, VenueHealth, outcome_of

NO_ANSWER = ExchangeError("oanda", "no answer", unsure=True)
DOWN = ExchangeError("oanda", "unavailable", http_status=503)
BAD_KEY = ExchangeError("oanda", "unauthorized", http_status=401)
SLOW_DOWN = ExchangeError("oanda", "too many", http_status=429, retry_after_s=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health() -> tuple[VenueHealth, Clock, CollectorRegistry]:
    clock, registry = Clock(), CollectorRegistry()
    return VenueHealth(registry, failures_to_degrade=3, cool_off_s=30, clock=clock), clock, registry


def test_only_silence_and_5xx_are_failures_of_the_venue():
    assert outcome_of(None) is Outcome.OK
    assert outcome_of(NO_ANSWER) is Outcome.FAILED  # the adapters mark refused connections so
    assert outcome_of(DOWN) is Outcome.FAILED
    assert outcome_of(ExchangeError("binanceus", "bad gateway", http_status=502)) is Outcome.FAILED
    assert outcome_of(BAD_KEY) is Outcome.REFUSED
    assert outcome_of(SLOW_DOWN) is Outcome.REFUSED
    # Answers in a 2xx body, and this side's own budget, are not the venue failing: one user
    # without funds, or with a spent key, must not degrade the venue for everyone.
    no_funds = ExchangeError("coinbase", "order refused: INSUFFICIENT_FUND")
    not_filled = ExchangeError("oanda", "order gk1 not filled: FILL_OR_KILL")
    no_room = ExchangeError("oanda", "no room in the request budget within 30 s", retry_after_s=3)
    for answered in (no_funds, not_filled, no_room):
        assert outcome_of(answered) is Outcome.REFUSED


def test_three_failures_in_a_row_degrade_the_venue_and_a_refusal_between_resets_the_count():
    venues, _, registry = health()
    venues.record("oanda", DOWN)
    venues.record("oanda", NO_ANSWER)
    venues.record("oanda", BAD_KEY)  # it answered: the run is broken
    venues.record("oanda", DOWN)
    venues.record("oanda", DOWN)
    assert venues.retry_after_s("oanda") is None
    venues.record("oanda", DOWN)
    assert venues.is_degraded("oanda")
    assert venues.retry_after_s("oanda") == 30
    assert registry.get_sample_value("gekko_venue_degraded", {"venue": "oanda"}) == 1
    assert venues.retry_after_s("coinbase") is None  # per venue
    assert venues.degraded() == ["oanda"]


def test_after_a_cool_off_one_probe_goes_and_its_outcome_decides():
    venues, clock, registry = health()
    for _ in range(3):
        venues.record("oanda", DOWN)
    clock.now += 29.5
    assert venues.retry_after_s("oanda") == 1  # never less than a second
    clock.now += 1
    assert venues.retry_after_s("oanda") is None  # the probe
    assert venues.retry_after_s("oanda") == 30  # the others wait for it
    venues.record("oanda", DOWN)  # the probe failed: another cool-off
    assert venues.retry_after_s("oanda") == 30
    clock.now += 31
    assert venues.retry_after_s("oanda") is None
    venues.record("oanda", None, 0.2)
    assert not venues.is_degraded("oanda")
    assert venues.retry_after_s("oanda") is None
    assert registry.get_sample_value("gekko_venue_degraded", {"venue": "oanda"}) == 0


def test_a_probe_that_never_reaches_the_venue_lets_another_through_a_cool_off_later():
    venues, clock, _ = health()
    for _ in range(3):
        venues.record("oanda", DOWN)
    clock.now += 31
    assert venues.retry_after_s("oanda") is None  # the probe, refused before it was sent
    clock.now += 31
    assert venues.retry_after_s("oanda") is None


def test_calls_latency_and_headroom_are_exported_from_the_first_scrape():
    venues, _, registry = health()
    venues.watch("binanceus")
    assert registry.get_sample_value("gekko_venue_degraded", {"venue": "binanceus"}) == 0
    labels = {"venue": "binanceus", "outcome": "failed"}
    assert registry.get_sample_value("gekko_venue_requests_total", labels) == 0
    venues.record("binanceus", None, 0.12, headroom=0.75)
    venues.record("binanceus", NO_ANSWER, 10.0)
    venues.record("binanceus", BAD_KEY, 0.05)
    for outcome in ("ok", "failed", "refused"):
        labels = {"venue": "binanceus", "outcome": outcome}
        assert registry.get_sample_value("gekko_venue_requests_total", labels) == 1
    # Only answered calls are timed: a timeout's 10 s is not the venue's latency.
    assert (
        registry.get_sample_value(
            "gekko_venue_request_duration_seconds_count", {"venue": "binanceus"}
        )
        == 2
    )
    assert (
        registry.get_sample_value("gekko_venue_ratelimit_headroom_ratio", {"venue": "binanceus"})
        == 0.75
    )
