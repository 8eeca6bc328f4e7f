"""The lab made and deployed to once, ahead of its tests: `python tests/lab/prepare.py`.

`make test` runs it beside the late e2e part (`--beside`): the lab is made in a CPU group of its
own at the lowest weight (lab.py), so its first deploy takes the CPU the late part's timed tests
leave idle, and the lab's tests start on a deployed lab once the local stack is down. Building,
shipping and the datastores need CPU, not CPU in time; activating does (a container's health
check times out after 5 s), so the deploy is held at its activate phase until the late part has
ended, then goes on at the normal weight. It writes
PREPARED (the first deploy's outcome and report, and the controller's engine configuration from
before it) whatever happens; the session fixture (conftest.py) reads it. Stopped with SIGTERM,
it stops the step under way and removes the lab.

The helpers the tests share to reach the lab live here too, as they run without pytest.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, str(REPO / "lab" / "lab.py")]
ROOT = Path(os.environ.get("GEKKO_LAB_ROOT", "/var/lib/gekko-lab"))
INVENTORY = ROOT / "inventory" / "hosts.yml"
ANSIBLE_BIN = Path(sys.executable).parent
# Written by this script once it ends: {"ok", "why", "report", "controller_daemon_json"}.
PREPARED = REPO / ".build" / "lab-prepared.json"
# Made by `make test` once the late e2e part has ended (whatever its outcome): the cores are free.
LATE_PART_DONE = REPO / ".build" / "late-part-done"
# The late part takes about 20 minutes in CI; no run waits an hour for it.
LATE_PART_WAIT_S = 3600
# The controller builds the fleet's images with this machine's engine, whose configuration is not
# the fleet's to change.
CONTROLLER_DAEMON_JSON = Path("/etc/docker/daemon.json")
# The first play of deploy.yml's activate phase, as ansible-core's default output names it.
ACTIVATE_BANNER = "PLAY [Activate: "


def controller(*argv: str, timeout: float = 600, env: dict | None = None):
    """Run a command in the lab's controller namespace (the only place that reaches the hosts)."""
    return subprocess.run(
        [*LAB, "controller", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# Called with each line the run prints and the run itself; the time it takes is not the run's.
LineWatch = Callable[[str, subprocess.Popen], None]


def signal_group(run: subprocess.Popen, signum: int) -> None:
    """Signal the process group of a run_watched() run: the run and all it started, orphans
    included (not a process that made a session of its own, as an SSH master does)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signum)


def run_watched(argv: list[str], watch: LineWatch, timeout: float, env: dict | None = None):
    """subprocess.run(capture_output=True, text=True), with each line of the command's output
    handed to `watch` as it comes, and the command in a process group of its own (signal_group).
    The time `watch` takes (a hold) does not count against `timeout`; past it, the group is
    killed and TimeoutExpired raised, as subprocess.run does."""
    run = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(run.stderr.read()), daemon=True)
    reader.start()
    deadline = [time.monotonic() + timeout]
    watching, expired, finished = threading.Lock(), threading.Event(), threading.Event()

    def kill_when_late():
        # Until both pipes are read to their end: an orphan can hold them after the run exits.
        while not finished.wait(1):
            with watching:  # not while `watch` holds the run
                late = time.monotonic() > deadline[0]
            if late:
                expired.set()
                signal_group(run, signal.SIGKILL)
                return

    threading.Thread(target=kill_when_late, daemon=True).start()
    stdout = []
    try:
        for line in run.stdout:
            stdout.append(line)
            with watching:
                begun = time.monotonic()
                watch(line, run)
                deadline[0] += time.monotonic() - begun
        run.wait()
        reader.join()
    except BaseException:
        signal_group(run, signal.SIGKILL)
        raise
    finally:
        finished.set()
    if expired.is_set():
        raise subprocess.TimeoutExpired(run.args, timeout, "".join(stdout), "".join(stderr))
    return subprocess.CompletedProcess(run.args, run.returncode, "".join(stdout), "".join(stderr))


def playbook(
    name: str,
    *args: str,
    env: dict | None = None,
    timeout: float = 900,
    watch: LineWatch | None = None,
) -> subprocess.CompletedProcess:
    """One of the collection's playbooks on the lab's inventory, run from the controller."""
    env = dict(env or os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(INVENTORY)]
    argv += [str(REPO / "playbooks" / name), *args]
    if watch is not None:
        return run_watched([*LAB, "controller", "--", *argv], watch, timeout=timeout, env=env)
    return controller(*argv, timeout=timeout, env=env)


def deploy(
    reports: Path, *args: str, timeout: float = 900, watch: LineWatch | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    """playbooks/deploy.yml on the lab, from the controller: the run and its summary report."""
    reports.mkdir(parents=True, exist_ok=True)
    begun = time.monotonic()
    env = dict(
        os.environ,
        GEKKO_REPORT_DIR=str(reports),
        ANSIBLE_CALLBACKS_ENABLED="gekko.platform.deploy_summary,ansible.posix.profile_tasks",
        PROFILE_TASKS_SORT_ORDER="descending",
        PROFILE_TASKS_TASK_OUTPUT_LIMIT="8",
    )
    run = playbook("deploy.yml", *args, env=env, timeout=timeout, watch=watch)
    written = reports / "deploy-report.json"
    if not written.exists():  # the run ended before its summary (stopped, or a crash)
        raise AssertionError(f"the deploy wrote no report:\n{(run.stdout + run.stderr)[-6000:]}")
    report = json.loads(written.read_text())
    print(f"lab deploy {' '.join(args) or '(as is)'}: {time.monotonic() - begun:.1f} s")
    for phase in report["phases"]:
        print(f"  {phase['phase']:10} {phase['status']:7} {phase['duration_s']:6.1f} s")
    slowest = run.stdout.split("TASKS RECAP", 1)[-1].splitlines()[3:11]
    print("  slowest tasks:\n    " + "\n    ".join(line.strip() for line in slowest))
    return run, report


def lab_down() -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, "down"], capture_output=True, text=True, timeout=120)


def prepare(reports: Path, deploy_timeout: float = 900, watch: LineWatch | None = None) -> dict:
    """Make the lab (removing a leftover one) and deploy to it: what PREPARED records."""
    up = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        return {"ok": False, "why": f"lab.py up failed:\n{up.stdout}{up.stderr}"}
    before = CONTROLLER_DAEMON_JSON.read_bytes() if CONTROLLER_DAEMON_JSON.exists() else None
    run, report = deploy(reports, timeout=deploy_timeout, watch=watch)
    return {
        "ok": run.returncode == 0,
        # ansible-core writes a failed task's message to stderr, the recap to stdout.
        "why": "" if run.returncode == 0 else f"the first deploy failed:\n{failure(run)}",
        "report": report,
        "controller_daemon_json": before,
    }


def failure(run: subprocess.CompletedProcess) -> str:
    """Why a deploy failed (its [ERROR] lines, wherever ansible-core wrote them), then the end of
    its output (the recap)."""
    output = f"{run.stdout}\n{run.stderr}"
    errors = "\n".join(line for line in output.splitlines() if line.startswith("[ERROR]"))
    return f"{errors[-3000:]}\n{run.stdout[-3000:]}"


def normal_weight() -> None:
    """Give the lab's CPU group the normal weight back (a machine without one: nothing)."""
    subprocess.run([*LAB, "cpu-weight", "100"], capture_output=True, text=True)


def late_part_ended(stopping: list, done: Path = LATE_PART_DONE) -> bool:
    """Wait for the late part's end (`done`); False when this run is stopped, the `make` that
    started it is gone (it would never say) or LATE_PART_WAIT_S has passed."""
    parent, deadline = os.getppid(), time.monotonic() + LATE_PART_WAIT_S
    while not done.exists():
        if stopping or os.getppid() != parent or time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


class HoldAtActivate:
    """A LineWatch: the deploy is held (its process group stopped) when its activate phase
    begins, until the late part has ended, then goes on at the normal weight. Stopping mid-task
    is safe: a module on a host finishes, and its answer waits in the SSH channel. Given up
    waiting (stopped, `make` gone, an hour), the deploy goes on at the weight it has."""

    def __init__(
        self,
        stopping: list,
        done: Path = LATE_PART_DONE,
        normal_weight: Callable[[], object] = normal_weight,
    ) -> None:
        self.stopping, self.done, self.normal_weight = stopping, done, normal_weight
        self.held_s: float | None = None  # None: not yet at activate

    def __call__(self, line: str, run: subprocess.Popen) -> None:
        if not line.startswith(ACTIVATE_BANNER) or self.held_s is not None:
            return
        begun, ended = time.monotonic(), self.done.exists()
        if not ended and not self.stopping:
            print(
                "the first deploy reached activate: held until the late part has ended", flush=True
            )
            signal_group(run, signal.SIGSTOP)
            try:
                ended = late_part_ended(self.stopping, self.done)
                if ended:
                    self.normal_weight()
            finally:
                signal_group(run, signal.SIGCONT)
        elif ended:
            self.normal_weight()
        self.held_s = round(time.monotonic() - begun, 1)
        weight = "the normal weight" if ended else "the lowest weight (given up waiting)"
        print(f"the first deploy goes on at {weight} after {self.held_s} s", flush=True)


def deploy_again_once_alone(failed: dict, stopping: list) -> dict:
    """The first deploy reached the hosts and failed beside the late part (starved at the lowest
    weight before its activate phase, or after it). What the operator is told to do then is what
    this does: deploy again, once the late part has ended, at the normal weight. The images are
    on the hosts by now, so this costs about half a fresh lab (whose remaking is the fixture's
    fallback if this fails too). It gives up waiting after LATE_PART_WAIT_S, or when `make` that
    started it is gone (it would never say)."""
    reasons = [line for line in failed["why"].splitlines() if line.startswith("[ERROR]")]
    print(f"the first deploy failed beside the late part: {' '.join(reasons)[:1500]}")
    print("deploying again once the late part has ended, at the normal weight", flush=True)
    if not late_part_ended(stopping):
        return failed
    normal_weight()
    reports = PREPARED.parent / "lab-deploy-again"
    shutil.rmtree(reports, ignore_errors=True)  # an earlier run's report is not this one's
    outcome = {"controller_daemon_json": failed.get("controller_daemon_json"), "again": True}
    try:
        run, report = deploy(reports, timeout=1800)
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        return {**outcome, "ok": False, "why": f"deployed again: {type(exc).__name__}: {exc}"}
    why = "" if run.returncode == 0 else f"deployed again, failed again:\n{failure(run)}"
    return {**outcome, "ok": run.returncode == 0, "why": why, "report": report}


def read_prepared() -> dict:
    """What main() recorded in PREPARED, as prepare() returned it."""
    if not PREPARED.exists():
        why = f"no {PREPARED}: tests/lab/prepare.py did not run"
        return {"ok": False, "why": why, "seconds": 0}
    prepared = json.loads(PREPARED.read_text())
    raw = prepared.get("controller_daemon_json")
    prepared["controller_daemon_json"] = None if raw is None else base64.b64decode(raw)
    return prepared


def main(argv: list[str]) -> int:
    beside = argv == ["--beside"]
    PREPARED.unlink(missing_ok=True)
    PREPARED.parent.mkdir(parents=True, exist_ok=True)
    if beside:
        # What this process starts follows it into the lab's CPU group, at the lowest weight: the
        # hosts' sshd and engines, so the sessions and containers they start too (lab.py).
        joined = subprocess.run(
            [*LAB, "cpu-weight", "1", "--join", str(os.getpid())], capture_output=True, text=True
        )
        if joined.returncode != 0:
            print(f"{joined.stderr.strip()}; the lab is made at the normal weight")
    stopping = []

    def stop(_signum, _frame):
        # Stopped (the late e2e part failed): the step under way is stopped as it would stop
        # itself (lab.py removes what `up` made so far; a deploy, in a group of its own, is
        # ended whole), then the lab is removed.
        stopping.append(True)
        for child in psutil.Process().children():
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                if os.getpgid(child.pid) == child.pid:  # run_watched's
                    os.killpg(child.pid, signal.SIGTERM)
                else:
                    child.terminate()

    signal.signal(signal.SIGTERM, stop)
    begun = time.monotonic()
    try:
        # Beside the late e2e part, with what CPU it leaves: longer than a deploy alone needs.
        hold = HoldAtActivate(stopping) if beside else None
        outcome = prepare(PREPARED.parent / "lab-first-deploy", deploy_timeout=1800, watch=hold)
        if hold is not None:
            outcome["held_s"] = hold.held_s
        if beside and not outcome["ok"] and "report" in outcome and not stopping:
            outcome = deploy_again_once_alone(outcome, stopping)
    except Exception as exc:  # recorded for the fixture, which fails with it
        outcome = {"ok": False, "why": f"{type(exc).__name__}: {exc}"}
    if stopping:
        lab_down()
        outcome = {"ok": False, "why": "stopped before the lab was ready"}
    outcome["seconds"] = round(time.monotonic() - begun, 1)
    before = outcome.get("controller_daemon_json")
    if before is not None:  # bytes, as JSON
        outcome["controller_daemon_json"] = base64.b64encode(before).decode()
    PREPARED.write_text(json.dumps(outcome))
    print(f"lab prepared in {outcome['seconds']} s: {'ok' if outcome['ok'] else outcome['why']}")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
