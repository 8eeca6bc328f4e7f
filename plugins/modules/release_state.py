#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_state
short_description: Record the current and previous Gekko releases on a host
version_added: 0.1.0
description:
  - Keeps a JSON state file with the current release, the previous one and a short history.
  - A release's id is derived from its content (image ids, configuration checksums), so
    deploying the same content again is the same release and reports no change.
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: full
    description: Computes the new state without writing it.
  diff_mode:
    support: full
    description: Shows the current release id before and after.
options:
  path:
    description: The state file.
    type: path
    default: /var/lib/gekko/releases.json
  state:
    description:
      - V(present) records O(release) as the current release.
      - V(absent) marks that no release is running (after a teardown); history is kept.
      - V(rollback) makes the previous release current again (after M(gekko.platform.service_containers)
        has put its containers back).
      - V(query) only reads the file.
    type: str
    choices: [present, absent, rollback, query]
    default: present
  release:
    description:
      - What the release deploys, for example C(images) (name to image id) and
        C(config_checksums) (file to checksum). Required with O(state=present).
    type: dict
  keep:
    description: How many releases to keep in the history.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Record this deploy
  gekko.platform.release_state:
    release:
      images: {gateway: "sha256:1234"}
      config_checksums: {gateway.env: "0a1b"}

- name: Read the releases
  gekko.platform.release_state:
    state: query
  register: releases
"""

RETURN = r"""
current:
  description: The current release (id, deployed_at and its content), or null.
  returned: always
  type: dict
  sample: {id: r-3f2a9c0d11aa, deployed_at: "2026-11-22T11:00:00Z", images: {}}
previous:
  description: The release that was current before, or null.
  returned: always
  type: dict
history:
  description: The most recent releases, newest first.
  returned: always
  type: list
  elements: dict
"""

import datetime
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gekko.platform.plugins.module_utils import _releases


def _load(module, path):
    if not os.path.exists(path):
        return dict(_releases.EMPTY_STATE)
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError) as exc:
        module.fail_json(
            msg="Cannot read release state %s: %s. Fix: restore it from backup or "
            "move it away to start a new history." % (path, exc)
        )


def _save(module, path, state):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
    module.atomic_move(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/var/lib/gekko/releases.json"),
            state=dict(
                type="str", default="present", choices=["present", "absent", "rollback", "query"]
            ),
            release=dict(type="dict"),
            keep=dict(type="int", default=10),
        ),
        required_if=[("state", "present", ["release"])],
        supports_check_mode=True,
    )
    path = module.params["path"]
    before = _load(module, path)
    if module.params["state"] == "query":
        module.exit_json(changed=False, **before)
    if module.params["state"] == "present":
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        after, changed = _releases.record(
            before, module.params["release"], now, keep=module.params["keep"]
        )
    elif module.params["state"] == "rollback":
        try:
            after, changed = _releases.rollback(before)
        except ValueError as exc:
            module.fail_json(msg="%s (state file %s)" % (exc, path))
    else:
        after, changed = _releases.clear(before)
    if changed and not module.check_mode:
        _save(module, path, after)

    def current_id(state):
        return (state.get("current") or {}).get("id", "none") + "\n"

    module.exit_json(
        changed=changed, diff={"before": current_id(before), "after": current_id(after)}, **after
    )


if __name__ == "__main__":
    main()
