#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: deploy_metrics
short_description: Record a deploy's start or outcome as Prometheus metrics for the node exporter
version_added: 0.2.0
description:
  - Writes the deploy history to a C(.prom) file that the host's node exporter serves
    (its textfile collector), so Prometheus keeps every deploy and rollback next to the
    platform's error rates, and an alert can fire on a deploy that rolled back.
  - Keeps, from the file's earlier content, when a deploy last ended with each outcome
    (C(gekko_deploy_finished_timestamp_seconds{outcome})), and replaces the last deploy's
    duration, phase durations and release (C(gekko_deploy_duration_seconds),
    C(gekko_deploy_phase_duration_seconds{phase}), C(gekko_deploy_info)).
  - With O(outcome=started), writes only when the deploy began
    (C(gekko_deploy_started_timestamp_seconds)), to a file of its own, before the deploy changes
    anything. A deploy that never records how it ended then shows as started and unfinished.
  - The file is replaced atomically, so a scrape never reads half of it; its folder is made
    when missing (a first deploy that stops early still leaves its start).
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: full
    description: Reports whether the file would change without writing it.
  diff_mode:
    support: full
    description: Shows the file before and after.
options:
  path:
    description: The C(.prom) file, in the node exporter's textfile folder.
    type: path
    required: true
  outcome:
    description: How the deploy ended, or V(started) when it begins.
    type: str
    required: true
    choices: [started, succeeded, rolled_back, failed]
  started_at:
    description: Unix time the deploy began.
    type: float
    required: true
  finished_at:
    description: Unix time the deploy ended (default now).
    type: float
  phase_started:
    description: Unix time each phase began, by phase name; a phase ends where the next begins.
    type: dict
    default: {}
  release:
    description: The release the deploy left running.
    type: str
    default: ""
  environment:
    description: The environment deployed.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Record the deploy for Prometheus
  gekko.platform.deploy_metrics:
    path: /var/lib/gekko/metrics/deploys.prom
    outcome: succeeded
    started_at: 1764748800.0
    phase_started: {validate: 1764748800.0, prepare: 1764748804.2, activate: 1764748823.0}
    release: r-b98033bd5e1a
    environment: local
"""

RETURN = r"""
metrics:
  description: The file's new content.
  returned: always
  type: str
"""

import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.gekko.platform.plugins.module_utils import _deploy_metrics as metrics


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            outcome=dict(
                type="str", required=True, choices=[metrics.STARTED] + list(metrics.OUTCOMES)
            ),
            started_at=dict(type="float", required=True),
            finished_at=dict(type="float"),
            phase_started=dict(type="dict", default={}),
            release=dict(type="str", default=""),
            environment=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    params = module.params
    finished_at = params["finished_at"] or time.time()
    try:
        with open(params["path"]) as handle:
            before = handle.read()
    except (IOError, OSError):
        before = ""
    try:
        marks = dict((k, float(v)) for k, v in params["phase_started"].items())
    except (TypeError, ValueError):
        module.fail_json(msg="phase_started must map phase names to unix times")
    if params["outcome"] == metrics.STARTED:
        after = metrics.render_started(params["started_at"], params["environment"])
    else:
        finished = metrics.finished_times(before)
        finished[params["outcome"]] = finished_at
        after = metrics.render(
            finished,
            max(finished_at - params["started_at"], 0.0),
            metrics.phase_durations(marks, finished_at),
            params["release"],
            params["environment"],
        )
    changed = after != before
    if changed and not module.check_mode:
        folder = os.path.dirname(params["path"]) or "."
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, 0o755)
        except (IOError, OSError) as exc:
            module.fail_json(msg="cannot make %s: %s" % (folder, exc))
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".deploys.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(after)
            os.chmod(temporary, 0o644)
            os.rename(temporary, params["path"])
        except (IOError, OSError) as exc:
            if os.path.exists(temporary):
                os.unlink(temporary)
            module.fail_json(msg="cannot write %s: %s" % (params["path"], exc))
    module.exit_json(changed=changed, metrics=after, diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
