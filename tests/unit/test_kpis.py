import re
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gekko import events as ev
from gekko import kpis


def test_p95_nearest_rank():
    assert kpis.p95([]) == 0.0
    assert kpis.p95([5.0]) == 5.0
    assert kpis.p95(list(range(1, 101))) == 95.0
    assert kpis.p95([float(x) for x in range(20, 0, -1)]) == 19.0  # order does not matter


@pytest.mark.parametrize(
    ("filled", "submitted", "rate"), [(0, 0, 0.0), (3, 4, 0.75), (5, 4, 1.0), (0, 7, 0.0)]
)
def test_fill_rate(filled, submitted, rate):
    assert kpis.fill_rate(filled, submitted) == pytest.approx(rate)


def _event(type_, **payload):
    return ev.Event(str(uuid.uuid4()), type_, "2025-08-02T12:00:00+00:00", payload)


def test_increments_per_event_type():
    executed = _event(ev.ORDER_EXECUTED, user_id=3, notional="32500.06", latency_ms=4.2)
    assert kpis.increments(executed) == (
        {"orders_executed": 1, "notional_volume_cents": 3250006},
        "3",
        "4.200",
    )
    matched = _event(ev.ORDER_EXECUTED, user_id=3, notional="1", latency_ms=None)
    assert kpis.increments(matched)[2] == ""  # resting-limit fills do not skew latency
    assert kpis.increments(_event(ev.ORDER_REJECTED, user_id=3))[0] == {"orders_submitted": 1}
    assert kpis.increments(_event(ev.POINTS_AWARDED, user_id=3, points=45))[0] == {
        "points_awarded": 45
    }
    assert kpis.increments(_event(ev.SOCIAL_FOLLOWED, follower_id=8))[1] == "8"
    assert kpis.increments(_event("something.else")) == ({}, "", "")


def test_compute_derives_the_eight_kpis():
    result = kpis.compute(
        {
            "orders_submitted": 4,
            "orders_executed": 3,
            "notional_volume_cents": 123456,
            "registrations": 2,
            "social_posts": 1,
            "social_follows": 2,
            "social_shares": 3,
            "points_awarded": 90,
        },
        [float(x) for x in range(1, 21)],
        active=2,
    )
    assert {k: result[k] for k in kpis.KPI_NAMES} == {
        "orders_executed": 3,
        "notional_volume_usd": pytest.approx(1234.56),
        "fill_rate": pytest.approx(0.75),
        "execution_latency_p95_ms": 19.0,
        "active_users": 2,
        "registrations": 2,
        "social_engagement": 6,
        "points_awarded": 90,
    }


def test_collector_exports_gekko_kpi_metrics_without_user_labels():
    collector = kpis.KpiCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    assert b"gekko_kpi" not in generate_latest(registry)  # nothing before the first read
    collector.snapshot = kpis.compute({"orders_executed": 3, "social_posts": 2}, [7.0], 1)
    text = generate_latest(registry).decode()
    assert "gekko_kpi_orders_executed_total 3.0" in text
    assert "gekko_kpi_execution_latency_p95_ms 7.0" in text
    assert 'gekko_kpi_social_engagement_total{kind="post"} 2.0' in text
    for name in ("notional_volume_usd", "fill_rate", "active_users", "registrations"):
        assert f"gekko_kpi_{name}" in text
    assert "gekko_kpi_points_awarded_total" in text
    labels = re.findall(r"^gekko_kpi_\w+\{([^}]*)\}", text, flags=re.M)
    assert labels and all(label.startswith("kind=") for label in labels)  # no user ids
