"""The lab of hosts (lab/lab.py), made for the session and removed after it, by what it recorded.

The hosts get their Docker engines from the project's own role (playbooks/engine.yml over SSH,
from the lab's controller namespace), as a deploy would start them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, str(REPO / "lab" / "lab.py")]
ROOT = Path("/var/lib/gekko-lab")
INVENTORY = ROOT / "inventory" / "hosts.yml"
ANSIBLE_BIN = Path(sys.executable).parent


def controller(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command in the lab's controller namespace (the only place that reaches the hosts)."""
    return subprocess.run(
        [*LAB, "controller", "--", *argv], capture_output=True, text=True, timeout=timeout
    )


def on_host(host: str, script: str, become: bool = True) -> str:
    """Run a shell script on a lab host over SSH, through Ansible; returns its stdout."""
    argv = [str(ANSIBLE_BIN / "ansible"), "-i", str(INVENTORY), host, "-o"]
    argv += ["-b"] if become else ["-e", "ansible_become=false"]
    run = controller(*argv, "-m", "ansible.builtin.shell", "-a", script, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # -o: "host | CHANGED | rc=0 | (stdout) ... (stderr) ...": one line, with \n escaped.
    stdout = run.stdout.split("(stdout) ", 1)[1].split(" (stderr) ", 1)[0]
    return stdout.strip().replace("\\n", "\n")


@pytest.fixture(scope="session")
def lab():
    up = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((ROOT / "state.json").read_text())
    try:
        engines = controller(
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY),
            str(REPO / "playbooks" / "engine.yml"),
            "-e",
            "@" + str(REPO / "tests" / "lab" / "engine-vars.yml"),
        )
        assert engines.returncode == 0, engines.stdout[-3000:]
        yield state
    finally:
        down = subprocess.run([*LAB, "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "gekko-lab-" not in namespaces, "the lab's namespaces are gone"
    assert not (ROOT / "state.json").exists()
