"""tests/lab/prepare.py holds the lab's first deploy at its activate phase while the late e2e part
runs (`make test`): every process of the deploy is stopped, not merely unread, the hold costs
none of the deploy's timeout, and a deploy that runs past its timeout is killed whole. These run
beside a deploy in `make test`: what they assert does not depend on how fast the machine is."""

import subprocess
import sys
import threading
import time

import psutil
import pytest
from tests.lab.prepare import HoldAtActivate, run_watched

# A deploy in miniature, in a child of the process started (as ansible-playbook is, under
# lab.py and nsenter): its activate banner, then a little work of its own.
WORK = """
import time
print("PLAY [Prepare: images] ***", flush=True)
print("PLAY [Activate: domain services] ***", flush=True)
for _ in range(10):
    time.sleep(0.05)
print("PLAY [Activate: API gateway] ***", flush=True)
"""
DEPLOY = [
    sys.executable,
    "-c",
    f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {WORK!r}]))",
]


def test_the_deploy_is_stopped_at_activate_until_the_late_part_ends_and_the_hold_is_not_timed(
    tmp_path,
):
    done, runs, states = tmp_path / "late-part-done", [], []

    def normal_weight():
        # Called once the late part has ended, before the deploy goes on: every process of it
        # (the one started and its child, the worker) is stopped at that moment.
        top = psutil.Process(runs[0].pid)
        states.extend(p.status() for p in [top, *top.children(recursive=True)])

    hold = HoldAtActivate([], done=done, normal_weight=normal_weight)

    def watch(line, run):
        runs.append(run)
        hold(line, run)

    threading.Timer(6.0, done.touch).start()
    # Held for 6 s with a 5 s timeout: the run would be killed if the hold counted.
    run = run_watched(DEPLOY, watch, timeout=5)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("PLAY [") == 3, "the deploy went on to its end"
    assert hold.held_s is not None and hold.held_s >= 5.5
    assert len(states) == 2 and set(states) == {psutil.STATUS_STOPPED}, states


def test_a_deploy_reaching_activate_after_the_late_part_goes_on_at_once(tmp_path):
    done, weights = tmp_path / "late-part-done", []
    done.touch()
    hold = HoldAtActivate([], done=done, normal_weight=lambda: weights.append(100))
    run = run_watched(DEPLOY, hold, timeout=30)
    assert run.returncode == 0 and run.stdout.count("PLAY [") == 3
    assert hold.held_s is not None and hold.held_s < 1.0 and weights == [100]


def test_a_stopped_run_is_not_held_and_keeps_the_lowest_weight(tmp_path):
    """`make` stopping prepare.py (the late part failed) must not leave the deploy stopped, nor
    give it the normal weight beside the late part."""
    weights = []
    hold = HoldAtActivate([True], done=tmp_path / "never", normal_weight=lambda: weights.append(1))
    run = run_watched(DEPLOY, hold, timeout=30)
    assert run.returncode == 0 and run.stdout.count("PLAY [") == 3
    assert hold.held_s is not None and hold.held_s < 1.0 and weights == []


def test_a_run_past_its_timeout_is_killed_with_its_children():
    script = (
        "import subprocess; child = subprocess.Popen(['sleep', '60']);"
        "print(child.pid, flush=True); child.wait()"
    )
    begun = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_watched([sys.executable, "-c", script], lambda line, run: None, timeout=3)
    assert time.monotonic() - begun < 15
    child = int(expired.value.output)
    deadline = time.monotonic() + 5  # the kill delivered, the orphan reaped by init
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the run's child was left behind"
        time.sleep(0.1)
