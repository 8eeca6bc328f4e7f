"""The point a restore reaches: latest, or a timestamp with its zone, never an ambiguous one."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gekko.platform.plugins.filter.restore_target import restore_target


def test_latest_has_no_time():
    assert restore_target("latest") == {"latest": True, "epoch": None, "utc": None}


@pytest.mark.parametrize(
    "given",
    [
        "2026-12-05 08:00:00+00:00",
        "2026-12-05T08:00:00Z",
        "2026-12-05 09:00:00+01",
        "2026-12-05T03:00:00-05:00",
    ],
)
def test_a_timestamp_in_any_zone_is_the_same_moment_in_utc(given):
    assert restore_target(given) == {
        "latest": False,
        "epoch": 1796457600.0,
        "utc": "2026-12-05 08:00:00+00",
    }


def test_fractions_of_a_second_are_kept():
    assert restore_target("2026-12-05 08:00:00.250+00:00")["utc"] == "2026-12-05 08:00:00.250000+00"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("2026-12-05 08:00:00", "has no time zone"),
        ("yesterday", "neither 'latest' nor an ISO 8601 timestamp"),
        ("2026-13-05 08:00:00+00:00", "neither 'latest' nor an ISO 8601 timestamp"),
        ("", "neither 'latest' nor an ISO 8601 timestamp"),
    ],
)
def test_an_unclear_target_is_refused_with_the_fix(given, says):
    with pytest.raises(AnsibleFilterError, match=says) as refused:
        restore_target(given)
    assert "Fix:" in str(refused.value)
