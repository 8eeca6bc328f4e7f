#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: deploy_lock
short_description: Take or release a host's deploy lock, naming who holds it
version_added: 0.3.0
description:
  - Keeps one lock file per host, so that two runs never change the same host at once. The
    file names its holder (the run, the operator, the controller and its process, the
    playbook, when it was taken).
  - V(present) takes the lock when no run holds it (the file is created exclusively), when
    this run holds it already, or when the holder is stale (older than O(ttl), or one of
    O(dead_runs)); otherwise it fails naming the holder, with RV(held_by).
  - V(absent) releases the lock if this run holds it, and never another run's.
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: full
    description: Reports whether the lock would be taken or released, without writing it.
  diff_mode:
    support: none
    description: The lock is bookkeeping; there is no diff to show.
options:
  path:
    description: The lock file.
    type: path
    default: /var/lib/gekko/deploy.lock
  state:
    description: Take (V(present)) or release (V(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description:
      - This run, as the lock records it. C(run) (a random id per playbook run) is required;
        C(operator), C(controller), C(pid) and C(playbook) name it for others.
    type: dict
    required: true
  ttl:
    description: Seconds after which a lock is stale whoever holds it.
    type: int
    default: 21600
  dead_runs:
    description: Runs whose controller process is gone (killed runs), whose locks are stale.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Take the deploy lock
  gekko.platform.deploy_lock:
    holder: {run: 3f1c0a9e, operator: alice, controller: ci-1, pid: 4242, playbook: deploy.yml}
  register: lock
  until: lock is not failed
  retries: 24
  delay: 5
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock now.
  returned: always
  type: bool
held_by:
  description: The holder found in the lock file before this call (empty when none).
  returned: always
  type: dict
took_over:
  description: Whether a stale lock was replaced.
  returned: always
  type: bool
"""

import json
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gekko.platform.plugins.module_utils import _deploy_lock as lock


def _read(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError:
        return {"run": "unreadable"}


def _create(path, content):
    """True when this call created the file (no other run did first)."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o755)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return True


def _replace(path, content):
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".deploy-lock.")
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(temporary, 0o644)
    os.rename(temporary, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/var/lib/gekko/deploy.lock"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            holder=dict(type="dict", required=True),
            ttl=dict(type="int", default=21600),
            dead_runs=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path, holder = params["path"], dict(params["holder"])
    run = str(holder.get("run") or "")
    if not run:
        module.fail_json(msg="holder.run is required: a random id for this playbook run")
    now = time.time()
    existing = _read(path)
    result = dict(changed=False, acquired=False, took_over=False, held_by=existing or {})

    if params["state"] == "absent":
        if existing and existing.get("run") == run:
            if not module.check_mode:
                os.unlink(path)
            result["changed"] = True
        module.exit_json(**result)

    decision = lock.decide(existing, run, now, params["ttl"], params["dead_runs"])
    if decision == lock.OWN:
        result["acquired"] = True
        module.exit_json(**result)
    if decision == lock.HELD:
        result["msg"] = "the deploy lock %s is held by %s" % (path, lock.describe(existing, now))
        module.fail_json(**result)
    content = json.dumps(dict(holder, taken_at=now), sort_keys=True) + "\n"
    result.update(changed=True, acquired=True, took_over=decision == lock.TAKE_OVER)
    if module.check_mode:
        module.exit_json(**result)
    if decision == lock.TAKE_OVER:
        _replace(path, content)
    elif not _create(path, content):
        # Another run created it between the read and now.
        found = _read(path) or {}
        result.update(changed=False, acquired=False, took_over=False, held_by=found)
        result["msg"] = "the deploy lock %s is held by %s" % (path, lock.describe(found, now))
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
