"""Release bookkeeping: content-addressed ids, previous release kept for rollback."""

import pytest
from ansible_collections.gekko.platform.plugins.module_utils import _releases

V1 = {"images": {"app": "gekko/app:aaa@sha256:1"}, "config_checksums": {"app.env": "c1"}}
V2 = {"images": {"app": "gekko/app:bbb@sha256:2"}, "config_checksums": {"app.env": "c1"}}


def test_first_deploy_becomes_current_with_no_previous():
    state, changed = _releases.record(None, V1, "t1")
    assert changed
    assert state["current"]["id"] == _releases.release_id(V1)
    assert state["current"]["deployed_at"] == "t1"
    assert state["previous"] is None


def test_same_content_again_is_the_same_release_and_no_change():
    state, _unused = _releases.record(None, V1, "t1")
    again, changed = _releases.record(state, dict(V1), "t2")
    assert not changed
    assert again["current"]["deployed_at"] == "t1"


def test_new_content_moves_current_to_previous():
    state, _unused = _releases.record(None, V1, "t1")
    state, changed = _releases.record(state, V2, "t2")
    assert changed
    assert state["current"]["id"] == _releases.release_id(V2)
    assert state["previous"]["id"] == _releases.release_id(V1)
    assert [r["id"] for r in state["history"]] == [
        _releases.release_id(V2),
        _releases.release_id(V1),
    ]


def test_id_does_not_depend_on_key_order():
    reordered = {"config_checksums": {"app.env": "c1"}, "images": {"app": "gekko/app:aaa@sha256:1"}}
    assert _releases.release_id(reordered) == _releases.release_id(V1)


def test_history_is_bounded():
    state = None
    for n in range(15):
        state, _unused = _releases.record(state, {"images": {"app": str(n)}}, f"t{n}")
    assert len(state["history"]) == 10
    assert state["history"][0]["images"] == {"app": "14"}


def test_teardown_clears_current_and_keeps_it_as_previous():
    state, _unused = _releases.record(None, V1, "t1")
    cleared, changed = _releases.clear(state)
    assert changed
    assert cleared["current"] is None
    assert cleared["previous"]["id"] == _releases.release_id(V1)
    assert _releases.clear(cleared) == (cleared, False)


def test_rollback_swaps_current_and_previous():
    state, _unused = _releases.record(None, V1, "t1")
    state, _unused = _releases.record(state, V2, "t2")
    back, changed = _releases.rollback(state)
    assert changed
    assert back["current"]["id"] == _releases.release_id(V1)
    assert back["previous"]["id"] == _releases.release_id(V2)


def test_rollback_without_a_previous_release_is_an_error():
    state, _unused = _releases.record(None, V1, "t1")
    with pytest.raises(ValueError, match="no previous release"):
        _releases.rollback(state)
