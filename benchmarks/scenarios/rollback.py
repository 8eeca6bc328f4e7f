"""Rollback after a failed deploy, on the deployed stack (after the private stack is gone and the
deployed one unpaused): NFR "rollback within 30 seconds of failure detection".

The worst case the e2e suite injects (tests/e2e/test_rollback.py): a discovery map that is not
JSON. The domain services do not read it, so they are all replaced and pass; the gateway, which
rolls out last, refuses it. Every container of the release is then restored. The deploy prints
the time from the failure to the last good release serving again; this reads it, and checks
that the release recorded before is still the current one.

It is a real failed deploy: the audit log and the deploy metrics record it (operator "bench"),
and the DeployRolledBack alert fires until the next deploy. BENCH_ROLLBACK=0 leaves it out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.settings import REPO_ROOT

RESTORED = re.compile(r"The last good release was restored in ([0-9.]+) s")
# The e2e suite's redeploys skip these too: nothing of them changes.
APP_ONLY = ("--skip-tags", "engine,base_images,logs,datastores,monitoring")
RELEASES = Path("/var/lib/gekko/releases.json")
TIMEOUT_S = 600


def enabled() -> bool:
    return os.environ.get("BENCH_ROLLBACK", "1").strip().lower() not in ("0", "false", "no")


def current_release() -> str | None:
    try:
        return (json.loads(RELEASES.read_text()).get("current") or {}).get("id")
    except (OSError, ValueError):
        return None


def what_runs() -> list[str]:
    """Each application container: its name, image, spec and state. A failed deploy records no
    release, so "restored" is read here, on what runs, as the e2e tests read it."""
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("docker is not installed: run `make deploy` first")
    listed = subprocess.run(  # noqa: S603 - fixed argv
        [
            docker, "ps", "--all", "--filter", "label=gekko.platform/set", "--format",
            '{{.Names}} {{.Image}} {{.Label "gekko.platform/spec"}} {{.State}}',
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return sorted(listed.stdout.splitlines())


def run() -> dict[str, Any]:
    before = current_release()
    if before is None:
        raise RuntimeError(f"no current release in {RELEASES}: run `make deploy` first")
    running = what_runs()
    with tempfile.TemporaryDirectory(prefix="gekko-bench-") as tmp:
        extra = Path(tmp) / "invalid-configuration.json"
        extra.write_text(json.dumps({"gekko_app_extra_env": {"GEKKO_STATIC_SERVICES": "not-json"}}))
        begun = time.monotonic()
        output = _deploy(extra)
    found = RESTORED.search(output)
    if found is None:
        raise RuntimeError(f"the failed deploy did not report a rollback:\n{output[-3000:]}")
    after = what_runs()
    return {
        "seconds": float(found.group(1)),
        "deploy_s": round(time.monotonic() - begun, 1),
        # The same containers, images, specs, all running, and the same release recorded.
        "restored": after == running and current_release() == before,
        "not_restored": sorted(set(running) ^ set(after)),
    }


def _deploy(extra: Path) -> str:
    """The deploy's output. It runs in a session of its own, so a Ctrl-C meant for the bench
    does not cut it short mid-rollout: the bench waits for it, its rollback included."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        GEKKO_OPERATOR="bench",
    )
    argv = [
        # The bench's own virtualenv, as tests/lab/prepare.py finds it.
        str(Path(sys.executable).parent / "ansible-playbook"),
        "playbooks/deploy.yml",
        "-i",
        "inventories/local",
        *APP_ONLY,
        "-e",
        f"@{extra}",
    ]
    deploy = subprocess.Popen(  # noqa: S603 - fixed argv
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = deploy.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        deploy.kill()
        deploy.communicate()
        raise RuntimeError(f"the deploy took over {TIMEOUT_S} s: run `make deploy`") from None
    except BaseException:  # interrupted: let the deploy end as it would, rollback included
        print("  stopping: waiting for the deploy to end (it rolls itself back)", flush=True)
        deploy.communicate(timeout=TIMEOUT_S)
        raise
    if deploy.returncode == 0:
        raise RuntimeError("the deploy of a configuration the gateway refuses succeeded")
    return output
