"""Request fields that reach PostgreSQL (gekko.services.inputs), and the routes the API fuzz test
found answering 500 or taking input its schema refuses (tests/integration/test_fuzz_api.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from gekko.problems import install_problem_handlers
from gekko.services import user_audit
from gekko.services.inputs import StoredText, Timestamp
from gekko.services.social import PostIn, SharingIn
from gekko.services.users import LoginRequest, RegisterRequest

TEXT = TypeAdapter(StoredText)
TIMESTAMP = TypeAdapter(Timestamp)


def test_stored_text_refuses_nul_and_keeps_everything_else():
    assert TEXT.validate_python("héllo\tworld ✓") == "héllo\tworld ✓"
    with pytest.raises(ValidationError, match="NUL"):
        TEXT.validate_python("a\x00b")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-31T09:30:00Z", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),
        (
            "2026-01-31T09:30:00.25+02:00",
            datetime(2026, 1, 31, 9, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_are_rfc3339_date_times(raw, expected):
    assert TIMESTAMP.validate_python(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0.5",  # pydantic alone reads a number as a Unix time
        "1769851800",
        "2026-01-31",
        "2026-01-31T09:30:00",  # no offset: whose local time?
        "2026-01-31 09:30:00Z",
        "",
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: overflowed in the driver
        "9999-12-31T23:59:59-14:00",
    ],
)
def test_timestamps_refuse_numbers_dates_naive_times_and_overflow(raw):
    with pytest.raises(ValidationError):
        TIMESTAMP.validate_python(raw)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (RegisterRequest, '{"username": "alice", "email": "a\\u0000@example.com", '
         '"password": "correct-horse"}'),
        (LoginRequest, '{"username": "alice\\u0000", "password": "correct-horse"}'),
        (PostIn, '{"body": "hello\\u0000"}'),
        (SharingIn, '{"share_trades": 0}'),
        (SharingIn, '{"share_trades": "true"}'),
        (SharingIn, '{"share_trades": "off"}'),
    ],
)  # fmt: skip
def test_request_bodies_the_fuzz_test_broke_are_refused(model, body):
    with pytest.raises(ValidationError):
        model.model_validate_json(body)


def test_sharing_takes_json_booleans():
    assert SharingIn.model_validate_json('{"share_trades": true}').share_trades is True
    assert SharingIn.model_validate_json('{"share_trades": false}').share_trades is False


class _Pool:
    def __init__(self) -> None:
        self.queries: list[tuple] = []

    async def fetch(self, query: str, *args: object) -> list:
        self.queries.append(args)
        return []


def _audit_app() -> tuple[TestClient, _Pool]:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(user_audit.router)
    app.state.pool = _Pool()
    return TestClient(app), app.state.pool


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B14:00",
        "until=9999-12-31T23:59:59-14:00",
        "until=0.5",
        "event=%00",
        "correlation_id=a%00b",
    ],
)
def test_the_audit_log_answers_bad_filters_with_a_422_problem(query):
    client, pool = _audit_app()
    answer = client.get(f"/api/v1/users/audit?{query}")
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pool.queries == []  # refused before the database is asked


def test_the_audit_log_still_takes_rfc3339_filters():
    client, pool = _audit_app()
    answer = client.get(
        "/api/v1/users/audit",
        params={"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00+01:00"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": [], "next_before": None}
    since, until = pool.queries[0][3:5]
    assert since == datetime(2026, 1, 1, tzinfo=UTC)
    assert until == datetime(2026, 1, 31, 23, tzinfo=UTC)
