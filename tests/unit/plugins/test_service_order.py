"""Start order from the service catalogue's dependencies."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gekko.platform.plugins.filter.service_order import (
    service_order,
    service_wave_map,
    service_waves,
)


def names(services):
    return [s["name"] for s in services]


def test_dependencies_start_first_and_ties_keep_catalogue_order():
    catalogue = [
        {"name": "gateway", "depends_on": ["users", "trading"]},
        {"name": "trading", "depends_on": ["users", "market_data"]},
        {"name": "users", "depends_on": ["postgres"]},
        {"name": "market_data"},
        {"name": "social"},
    ]
    order = names(service_order(catalogue, external=["postgres"]))
    assert order == ["users", "market_data", "social", "trading", "gateway"]


def test_waves_group_services_that_can_start_together():
    catalogue = [
        {"name": "a"},
        {"name": "b", "depends_on": ["a"]},
        {"name": "c", "depends_on": ["a"]},
        {"name": "d", "depends_on": ["b", "c"]},
    ]
    assert [names(w) for w in service_waves(catalogue)] == [["a"], ["b", "c"], ["d"]]
    assert service_wave_map(catalogue) == {"a": 0, "b": 1, "c": 1, "d": 2}


def test_cycle_is_an_error_that_names_the_cycle():
    catalogue = [
        {"name": "a", "depends_on": ["c"]},
        {"name": "b", "depends_on": ["a"]},
        {"name": "c", "depends_on": ["b"]},
    ]
    with pytest.raises(AnsibleFilterError, match=r"dependency cycle between services: .*a.*->"):
        service_order(catalogue)


def test_unknown_dependency_names_service_and_dependency():
    with pytest.raises(AnsibleFilterError, match="trading depends on unknown service.*ledger"):
        service_order([{"name": "trading", "depends_on": ["ledger"]}])


def test_external_dependencies_are_allowed_but_not_returned():
    order = service_order(
        [{"name": "users", "depends_on": ["postgres", "redis"]}], external=["postgres", "redis"]
    )
    assert names(order) == ["users"]


def test_duplicate_and_nameless_services_are_rejected():
    with pytest.raises(AnsibleFilterError, match="declared twice"):
        service_order([{"name": "a"}, {"name": "a"}])
    with pytest.raises(AnsibleFilterError, match="has no name"):
        service_order([{"port": 1}])


def test_sixty_service_chain_and_fan_out_order():
    catalogue = [{"name": "svc-00"}] + [
        {"name": f"svc-{i:02d}", "depends_on": [f"svc-{(i - 1) // 2:02d}"]} for i in range(1, 60)
    ]
    order = names(service_order(list(reversed(catalogue))))
    seen = set()
    for name in order:
        service = next(s for s in catalogue if s["name"] == name)
        assert set(service.get("depends_on", [])) <= seen, name
        seen.add(name)
    assert len(order) == 60
