"""The lab of hosts (lab/lab.py), made for the session and removed after it, by what it recorded.

The session deploys the platform to it once, with playbooks/deploy.yml over SSH from the lab's
controller namespace, the lab's inventory (shaped like inventories/prod) and images built on the
controller and shipped to the hosts. Everything that talks to the lab runs in the controller's
namespace: this machine's own namespace has no route to the lab's addresses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .prepare import (  # noqa: F401 - shared with the tests through this module
    ANSIBLE_BIN,
    CONTROLLER_DAEMON_JSON,
    INVENTORY,
    LAB,
    REPO,
    ROOT,
    controller,
    deploy,
    lab_down,
    playbook,
    prepare,
    read_prepared,
)

CLIENT = [sys.executable, str(REPO / "tests" / "lab" / "client.py")]
SERVICES_HOSTS = ["lab-svc-1", "lab-svc-2"]
HOSTS = ["lab-db-1", *SERVICES_HOSTS, "lab-gw-1", "lab-mon-1"]


def on_hosts(pattern: str, script: str, become: bool = True) -> dict[str, str]:
    """Run a shell script on the lab hosts `pattern` names, over SSH through Ansible (one run for
    all of them); returns each host's stdout."""
    argv = [str(ANSIBLE_BIN / "ansible"), "-i", str(INVENTORY), pattern, "-o"]
    argv += ["-b"] if become else ["-e", "ansible_become=false"]
    run = controller(*argv, "-m", "ansible.builtin.shell", "-a", script, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # -o: "host | CHANGED | rc=0 | (stdout) ... (stderr) ...": a line per host, \n escaped.
    found = {}
    for line in run.stdout.splitlines():
        if " | " in line and "(stdout) " in line:
            stdout = line.split("(stdout) ", 1)[1].split(" (stderr) ", 1)[0]
            found[line.split(" | ", 1)[0]] = stdout.strip().replace("\\n", "\n")
    return found


def on_host(host: str, script: str, become: bool = True) -> str:
    """Run a shell script on one lab host; returns its stdout."""
    return on_hosts(host, script, become)[host]


CONTAINERS = (
    'python3 -c \'import docker, json; print(json.dumps({c.name: [c.attrs["Image"],'
    ' c.labels.get("gekko.platform/spec"), c.attrs["State"]["StartedAt"], c.status,'
    ' (c.attrs["State"].get("Health") or {}).get("Status")]'
    " for c in docker.from_env().containers.list(all=True)}))'"
)


def _containers(output: str) -> dict[str, dict]:
    keys = ("image", "spec", "started", "status", "health")
    return {n: dict(zip(keys, v, strict=True)) for n, v in json.loads(output).items()}


def containers_everywhere() -> dict[str, dict[str, dict]]:
    """Every container on every lab host, in one Ansible run: host -> name -> image id, spec
    hash, start time, status, health."""
    return {host: _containers(out) for host, out in on_hosts("gekko", CONTAINERS).items()}


def client(*argv: str) -> dict:
    """The lab's trader client (tests/lab/client.py), run on the controller."""
    run = controller(*CLIENT, *argv, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


# A redeploy that changes the application alone leaves the engines, base images, central logs,
# datastores and monitoring as they stand (deploy.yml's tags); the first and the no-op deploys
# run every part.
APP_ONLY = ("--skip-tags", "engine,base_images,logs,datastores,monitoring")


class Traffic:
    """tests/lab/client.py's steady reads and orders, in the background on the controller, while
    the test changes the lab; leaving the block stops it and returns what it saw (`outcome`)."""

    def __init__(self, directory: Path, users: int = 4, retries: int = 0):
        self.result = directory / f"traffic-{time.monotonic_ns()}.json"
        argv = ["traffic", "--result", str(self.result), "--users", str(users)]
        # A bound, not a target: a rolling deploy across the lab takes up to 8 min on a slow host.
        self.argv = [*argv, "--retries", str(retries), "--max-seconds", "900"]
        self.outcome: dict = {}

    def __enter__(self):
        self.process = subprocess.Popen(
            [*LAB, "controller", "--", *CLIENT, *self.argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not self.result.with_suffix(".started").exists():
            assert self.process.poll() is None, self.process.communicate()[0]
            assert time.monotonic() < deadline, "the lab's client did not start"
            time.sleep(0.2)
        time.sleep(1)  # traffic flows before the change starts
        return self

    def __exit__(self, *exc):
        time.sleep(1)  # and after it ended
        self.result.with_suffix(".stop").touch()
        output, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, output
        self.outcome = json.loads(self.result.read_text())
        summary = {k: v for k, v in self.outcome.items() if k not in ("lost", "unexpected")}
        print(f"traffic: {summary}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """The lab, with the platform deployed to it once: its recorded state and the first deploy's
    report. With GEKKO_LAB_PREPARED=1 (`make test`), prepare.py made and deployed it already,
    beside the late e2e part and at the lowest CPU weight: it gets the normal weight back here.
    GEKKO_LAB_REUSE=1 (while working on these tests) uses a lab with the platform deployed
    already (`make lab`, then a deploy) and leaves it up."""
    if os.environ.get("GEKKO_LAB_REUSE") == "1" and (ROOT / "state.json").exists():
        yield json.loads((ROOT / "state.json").read_text())
        return
    try:
        if os.environ.get("GEKKO_LAB_PREPARED") == "1":
            prepared = read_prepared()
            print(f"lab prepared beside the late e2e part in {prepared['seconds']} s")
            weight = subprocess.run([*LAB, "cpu-weight", "100"], capture_output=True, text=True)
            print(weight.stdout + weight.stderr)  # a machine without a CPU controller: no group
            if not prepared["ok"]:
                # Starved at the lowest weight (a container's health check timed out while the
                # late part held the cores, on a slow machine): made again here, at the
                # normal weight, rather than failing every lab test.
                print(f"the lab made beside the late part failed, made again: {prepared['why']}")
                original = prepared.get("controller_daemon_json")
                prepared = prepare(tmp_path_factory.mktemp("first-deploy"))
                if original is not None:  # the controller's engine as it was before any deploy
                    prepared["controller_daemon_json"] = original
                assert prepared["ok"], prepared["why"]
        else:
            prepared = prepare(tmp_path_factory.mktemp("first-deploy"))
            assert prepared["ok"], prepared["why"]
        state = json.loads((ROOT / "state.json").read_text())
        yield {
            **state,
            "first_deploy": prepared["report"],
            "controller_daemon_json": prepared["controller_daemon_json"],
        }
    finally:
        down = lab_down()
        assert down.returncode == 0, down.stdout + down.stderr
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "gekko-lab-" not in namespaces, "the lab's namespaces are gone"
    assert not (ROOT / "state.json").exists()
