"""tests/lab/prepare.py holds the lab's first deploy at its activate phase while the late e2e part
runs (`make test`): the deploy's processes are stopped, not merely unread, the hold costs none of
the deploy's timeout, and a deploy that runs past its timeout is still stopped."""

import subprocess
import sys
import threading
import time

import psutil
import pytest
from tests.lab.prepare import HoldAtActivate, run_watched

# A deploy in miniature, in a child of the process started (as ansible-playbook is, under
# lab.py and nsenter): its activate banner, then half a second of its own work, timed by itself.
# Stopped for a while in between, it sees more time pass.
WORK = """
import time
print("PLAY [Prepare: images] ***", flush=True)
print("PLAY [Activate: domain services] ***", flush=True)
begun = time.monotonic()
for _ in range(10):
    time.sleep(0.05)
print(f"worked {time.monotonic() - begun:.2f} s", flush=True)
print("PLAY [Activate: API gateway] ***", flush=True)
"""
DEPLOY = [
    sys.executable,
    "-c",
    f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {WORK!r}]))",
]


def worked_s(run: subprocess.CompletedProcess) -> float:
    return float(run.stdout.split("worked ")[1].split()[0])


def test_the_deploy_is_stopped_at_activate_until_the_late_part_ends_and_the_hold_is_not_timed(
    tmp_path,
):
    done, weights = tmp_path / "late-part-done", []
    hold = HoldAtActivate([], done=done, normal_weight=lambda: weights.append(100))
    threading.Timer(4.0, done.touch).start()
    # Over 4 s in all, of which its own work about 1 s: a 3 s timeout counts only the latter.
    run = run_watched(DEPLOY, hold, timeout=3)
    assert run.returncode == 0, run.stderr
    assert hold.held_s is not None and hold.held_s >= 3.5
    assert worked_s(run) >= 3.0, "the deploy's own processes went on while it was held"
    assert weights == [100], "the deploy goes on at the normal weight, once"


def test_a_deploy_reaching_activate_after_the_late_part_goes_on_at_once(tmp_path):
    done, weights = tmp_path / "late-part-done", []
    done.touch()
    hold = HoldAtActivate([], done=done, normal_weight=lambda: weights.append(100))
    run = run_watched(DEPLOY, hold, timeout=30)
    assert run.returncode == 0 and worked_s(run) < 2.0
    assert hold.held_s is not None and hold.held_s < 1.0 and weights == [100]


def test_a_stopped_run_is_not_held_and_keeps_the_lowest_weight(tmp_path):
    """`make` stopping prepare.py (the late part failed) must not leave the deploy stopped, nor
    give it the normal weight beside the late part."""
    weights = []
    hold = HoldAtActivate([True], done=tmp_path / "never", normal_weight=lambda: weights.append(1))
    begun = time.monotonic()
    run = run_watched(DEPLOY, hold, timeout=30)
    assert run.returncode == 0 and time.monotonic() - begun < 5 and weights == []


def test_a_run_past_its_timeout_is_killed_with_its_children():
    script = (
        "import subprocess; child = subprocess.Popen(['sleep', '60']);"
        "print(child.pid, flush=True); child.wait()"
    )
    begun = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_watched([sys.executable, "-c", script], lambda line, run: None, timeout=1)
    assert time.monotonic() - begun < 10
    child = int(expired.value.output)
    time.sleep(0.2)  # the kill is delivered, and the orphan reaped by init
    gone = not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert gone, "the run's child was left behind"
