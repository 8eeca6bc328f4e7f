# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: drift_report
type: aggregate
short_description: What a check run found changed outside Ansible
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - In a check run (C(make drift), that is C(deploy.yml --check --diff), or any playbook run
    with C(--check)), every task
    that reports it would change something has found drift, a difference between the inventory
    and the hosts made outside Ansible. This plugin lists each one (host, task, and the files
    or containers it names), prints the list at the end, and keeps it in
    O(report_dir)/drift-report.json, rewritten as each is found so that the playbook's last
    play can publish the count (the absolute path is put in the environment variable
    E(GEKKO_DRIFT_REPORT) for its lookups).
  - Results hidden with C(no_log) are listed by their task alone.
requirements:
  - enable it in callbacks_enabled
extends_documentation_fragment:
  - gekko.platform.report_dir
"""

import json
import os
from datetime import datetime, timezone

from ansible import context
from ansible.plugins.callback import CallbackBase

REPORT = "drift-report.json"


def drifted_item(host, task_name, result):
    """One drift finding, naming what the result says changed: the files (config_files) or the
    containers and what a run would do to them (service_containers), never a value."""
    found = {"host": host, "task": task_name}
    if result.get("_ansible_no_log"):
        return found
    label = result.get("_ansible_item_label", result.get("item"))
    if isinstance(label, (str, int, float)):
        found["item"] = str(label)
    paths = result.get("changed_paths")
    if paths:
        found["paths"] = list(paths)
    actions = [
        "%s: %s" % (a.get("container"), a.get("action"))
        for a in result.get("actions") or []
        if isinstance(a, dict) and a.get("container") and a.get("action") not in (None, "keep")
    ]
    if actions:
        found["containers"] = actions
    return found


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "gekko.platform.drift_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.items = []
        self.active = False
        self.path = None

    def v2_playbook_on_start(self, playbook):
        self.active = bool(context.CLIARGS.get("check"))
        if not self.active:
            return
        directory = os.path.abspath(self.get_option("report_dir"))
        self.path = os.path.join(directory, REPORT)
        # The run's own tasks read it (gekko.platform.exporters, tasks_from=drift); the workers
        # that template them are forked from this process.
        os.environ["GEKKO_DRIFT_REPORT"] = self.path
        self._write()

    def _write(self):
        try:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                os.makedirs(directory)
            report = {
                "checked_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "items": self.items,
            }
            with open(self.path + ".tmp", "w") as handle:
                json.dump(report, handle, indent=2)
            os.rename(self.path + ".tmp", self.path)
        except (IOError, OSError) as exc:
            self._display.warning("drift_report: cannot write the report: %s" % exc)

    def _record(self, result):
        task = result._task
        # Only what the check run judged: a task forced to run for real (check_mode: false),
        # such as a lookup or the report's own, is not drift.
        if not (task.check_mode or context.CLIARGS.get("check")) or task.check_mode is False:
            return
        self.items.append(drifted_item(result._host.get_name(), task.get_name(), result._result))
        self._write()

    def v2_runner_on_ok(self, result):
        if self.active and result._result.get("changed") and "results" not in result._result:
            self._record(result)

    def v2_runner_item_on_ok(self, result):
        if self.active and result._result.get("changed"):
            self._record(result)

    def v2_playbook_on_stats(self, stats):
        if not self.active:
            return
        self._display.banner("GEKKO DRIFT")
        if not self.items:
            self._display.display("  nothing changed outside Ansible")
        for item in self.items:
            what = "; ".join(item.get("paths", []) + item.get("containers", []))
            what = what or item.get("item", "")
            self._display.display(
                "  %s: %s%s" % (item["host"], item["task"], (" (%s)" % what) if what else "")
            )
        self._display.display("  report     %s" % self.path)
