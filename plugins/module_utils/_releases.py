# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release bookkeeping shared by the release_state module and its tests.

A release is identified by the content it deploys (images, configuration checksums), so a
redeploy of the same content is the same release and changes nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

EMPTY_STATE = {"current": None, "previous": None, "history": []}


def release_id(content):
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "r-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def record(state, content, now, keep=10):
    """Return (new_state, changed) after deploying `content` at time `now`."""
    state = dict(EMPTY_STATE, **(state or {}))
    rid = release_id(content)
    current = state.get("current")
    if current and current.get("id") == rid:
        return state, False
    release = dict(content, id=rid, deployed_at=now)
    history = [r for r in state.get("history", []) if r.get("id") != rid]
    history.insert(0, release)
    return {
        "current": release,
        "previous": current or state.get("previous"),
        "history": history[:keep],
    }, True


def clear(state):
    """Mark that nothing is running (teardown); the releases stay in history."""
    state = dict(EMPTY_STATE, **(state or {}))
    if state.get("current") is None:
        return state, False
    return {
        "current": None,
        "previous": state["current"],
        "history": state.get("history", []),
    }, True


def rollback(state):
    """Make the previous release current again (and the current one previous)."""
    state = dict(EMPTY_STATE, **(state or {}))
    if not state.get("previous"):
        raise ValueError("there is no previous release to roll back to")
    return {
        "current": state["previous"],
        "previous": state.get("current"),
        "history": state.get("history", []),
    }, True
