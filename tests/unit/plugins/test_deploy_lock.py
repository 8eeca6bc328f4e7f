"""The deploy lock, run as Ansible runs it (a module process reading its arguments), on real
files: one run at a time, the holder named, its own lock taken again, a stale one taken over,
and another run's never released."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ansible_collections.gekko.platform.plugins.module_utils import _deploy_lock as lock

from .module_runner import run_module


def run(tmp_path, **args):
    return run_module("deploy_lock", tmp_path, args)


def holder(run_id: str) -> dict:
    return {"run": run_id, "operator": "alice", "controller": "ci-1", "pid": 4242,
            "playbook": "deploy.yml"}  # fmt: skip


def test_one_run_at_a_time_and_the_holder_is_named(tmp_path):
    path = str(tmp_path / "state" / "deploy.lock")  # its folder made on first use
    first = run(tmp_path, path=path, holder=holder("run-a"))
    assert first["acquired"] is True and first["changed"] is True
    again = run(tmp_path, path=path, holder=holder("run-a"))
    assert again["acquired"] is True and again["changed"] is False
    second = run(tmp_path, path=path, holder=holder("run-b"))
    assert second.get("failed") is True and second["acquired"] is False
    assert "held by run run-a of deploy.yml by alice on ci-1 (process 4242), for" in second["msg"]
    assert second["held_by"]["run"] == "run-a"


def test_another_runs_lock_is_never_released_and_ones_own_is(tmp_path):
    path = str(tmp_path / "deploy.lock")
    run(tmp_path, path=path, holder=holder("run-a"))
    other = run(tmp_path, path=path, holder=holder("run-b"), state="absent")
    assert other["changed"] is False and Path(path).exists()
    own = run(tmp_path, path=path, holder=holder("run-a"), state="absent")
    assert own["changed"] is True and not Path(path).exists()


def test_a_killed_runs_lock_or_an_old_one_is_taken_over(tmp_path):
    path = str(tmp_path / "deploy.lock")
    run(tmp_path, path=path, holder=holder("run-a"))
    taken = run(tmp_path, path=path, holder=holder("run-b"), dead_runs=["run-a"])
    assert taken["acquired"] is True and taken["took_over"] is True
    assert json.loads(Path(path).read_text())["run"] == "run-b"
    old = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps(dict(old, taken_at=time.time() - 100)))
    assert run(tmp_path, path=path, holder=holder("run-c"), ttl=60)["took_over"] is True


def test_decisions():
    mine = {"run": "a", "taken_at": 1000.0}
    assert lock.decide(None, "a", 1000.0, 60, []) == lock.ACQUIRE
    assert lock.decide(mine, "a", 1000.0, 60, []) == lock.OWN
    assert lock.decide(mine, "b", 1030.0, 60, []) == lock.HELD
    assert lock.decide(mine, "b", 1061.0, 60, []) == lock.TAKE_OVER
    assert lock.decide(mine, "b", 1030.0, 60, ["a"]) == lock.TAKE_OVER


def test_the_controller_process_is_the_parent_and_a_finished_process_is_gone():
    from ansible_collections.gekko.platform.plugins.lookup.controller_process import (
        LookupModule,
        alive,
    )

    (me,) = LookupModule().run([])
    assert me["pid"] == os.getppid() and me["controller"]
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert LookupModule().run([os.getpid(), finished.pid]) == [True, False]
    assert alive("not a pid") is False
