"""DNS fallback, endpoint and bandwidth rules of validate_host."""

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _net_checks as net


class FakeResolver:
    """Answers from a table, or raises like a dead server; remembers what it was asked."""

    def __init__(self, table=None, error=None):
        self.table, self.error, self.asked = table or {}, error, []

    def __call__(self, name):
        self.asked.append(name)
        if self.error:
            raise self.error
        return self.table.get(name, [])


def test_host_port_forms():
    assert net.split_host_port("db:5432") == ("db", 5432)
    assert net.split_host_port("db", 5432) == ("db", 5432)
    assert net.split_host_port("[::1]:6379") == ("::1", 6379)
    assert net.split_host_port("::1", 53) == ("::1", 53)


def test_primary_answer_is_used_and_the_fallback_is_not_asked():
    primary = FakeResolver({"db.internal": ["10.0.0.7"]})
    fallback = FakeResolver({"db.internal": ["10.9.9.9"]})
    resolution = net.resolve_with_fallback("db.internal", [("system", primary), ("fb", fallback)])
    assert resolution == {"addresses": ["10.0.0.7"], "answered_by": "system", "errors": []}
    assert fallback.asked == []
    assert net.check_dns("db.internal", resolution)["status"] == "ok"


def test_dead_primary_falls_back_to_the_next_server_that_answers():
    primary = FakeResolver(error=OSError("timed out"))
    broken = FakeResolver(error=RuntimeError("SERVFAIL"))
    good = FakeResolver({"db.internal": ["10.0.0.7", "10.0.0.7", "10.0.0.8"]})
    resolution = net.resolve_with_fallback(
        "db.internal", [("system", primary), ("10.0.0.2", broken), ("10.0.0.3", good)]
    )
    assert resolution["answered_by"] == "10.0.0.3"
    assert resolution["addresses"] == ["10.0.0.7", "10.0.0.8"]
    assert resolution["errors"] == [("system", "timed out"), ("10.0.0.2", "SERVFAIL")]
    result = net.check_dns("db.internal", resolution)
    assert (result["status"], result["severity"]) == ("warn", "warning")
    assert "only through fallback 10.0.0.3" in result["message"]
    assert "system: timed out" in result["message"]
    assert "/etc/resolv.conf" in result["remediation"]


def test_empty_answer_counts_as_a_failure_of_that_resolver():
    resolution = net.resolve_with_fallback(
        "x", [("system", FakeResolver()), ("fb", FakeResolver({"x": ["1.2.3.4"]}))]
    )
    assert resolution["answered_by"] == "fb"
    assert resolution["errors"] == [("system", "no addresses")]


def test_name_no_resolver_knows_fails_naming_every_attempt():
    resolution = net.resolve_with_fallback(
        "nowhere.invalid",
        [("system", FakeResolver(error=OSError("NXDOMAIN"))), ("fb", FakeResolver())],
    )
    result = net.check_dns("nowhere.invalid", resolution)
    assert (result["status"], result["severity"]) == ("fail", "critical")
    assert "system: NXDOMAIN; fb: no addresses" in result["message"]
    assert "gekko_validation_dns_fallback_servers" in result["remediation"]


def test_missing_dnspython_is_a_warning_only_when_servers_are_named():
    assert net.check_dns_library(False, ["10.0.0.2"]) == []
    (result,) = net.check_dns_library(True, ["10.0.0.2", "10.0.0.3"])
    assert result["status"] == "warn"
    assert "10.0.0.2, 10.0.0.3" in result["message"]
    assert "python3-dnspython" in result["remediation"]


def test_endpoint_outcomes():
    assert net.check_endpoint("db:5432", None, None)["status"] == "ok"
    assert net.check_endpoint("https://api/health", 401, None)["status"] == "ok"
    server_error = net.check_endpoint("https://api/health", 503, None)
    assert server_error["status"] == "fail" and "HTTP 503" in server_error["message"]
    refused = net.check_endpoint("db:5432", None, "Connection refused")
    assert refused["status"] == "fail" and "Connection refused" in refused["message"]
    assert refused["remediation"]


def test_bandwidth_is_bits_per_second_in_megabits():
    assert net.mbit_per_second(1_250_000, 1.0) == pytest.approx(10.0)
    assert net.mbit_per_second(10 * 1024**2, 2.0) == pytest.approx(41.943, rel=1e-3)
    assert net.mbit_per_second(1000, 0) == float("inf")


def test_bandwidth_below_the_minimum_fails_with_the_measurement():
    result = net.check_bandwidth("http://mirror/f", 1_000_000, 1.0, 10, None)
    assert (result["status"], result["severity"]) == ("fail", "critical")
    assert "8.0 Mbit/s" in result["message"] and "10 Mbit/s required" in result["message"]
    assert net.check_bandwidth("http://mirror/f", 1_250_000, 1.0, 10, None)["status"] == "ok"


def test_failed_bandwidth_probe_fails_with_the_url_to_fix():
    result = net.check_bandwidth("http://mirror/f", 0, 0.0, 10, "HTTP 404")
    assert result["status"] == "fail"
    assert "HTTP 404" in result["message"]
    assert "gekko_validation_bandwidth_url" in result["remediation"]
