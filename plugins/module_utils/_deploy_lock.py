# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy lock's decisions, as pure functions: whether a run may take the lock a host holds.

A lock names its holder: the run (a random id per playbook run), who ran it, the controller and
its process id, the playbook, and when it was taken. One run may take its own lock again (each
play that needs it); another run waits, unless the lock is stale: past its time to live, or
named by the controller as a run whose process is gone (a killed run).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ACQUIRE = "acquire"
HELD = "held"
OWN = "own"
TAKE_OVER = "take_over"


def decide(existing, run, now, ttl, dead_runs):
    """What to do about `existing` (the lock's holder, or None) for the run `run`."""
    if not existing:
        return ACQUIRE
    if existing.get("run") == run:
        return OWN
    if existing.get("run") in (dead_runs or []):
        return TAKE_OVER
    try:
        taken = float(existing.get("taken_at", 0))
    except (TypeError, ValueError):
        taken = 0.0
    if now - taken > ttl:
        return TAKE_OVER
    return HELD


def describe(holder, now=None):
    """One line naming a holder, for the operator who is kept waiting."""
    if not holder:
        return "nobody"
    age = ""
    if now is not None:
        try:
            age = ", for %d s" % max(now - float(holder.get("taken_at", now)), 0)
        except (TypeError, ValueError):
            age = ""
    return "run %s of %s by %s on %s (process %s)%s" % (
        holder.get("run", "?"),
        holder.get("playbook", "?"),
        holder.get("operator", "?"),
        holder.get("controller", "?"),
        holder.get("pid", "?"),
        age,
    )
