# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: deploy_summary
type: aggregate
short_description: Phase timings and a JSON deployment report
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Groups plays into phases by the text before the first colon of the play name
    (for example C(validate), C(prepare), C(activate), C(verify)), times each phase and prints
    a summary at the end of the run, with the release recorded by
    M(gekko.platform.release_state).
  - Writes the same summary as JSON to O(report_dir)/deploy-report.json.
requirements:
  - enable it in callbacks_enabled
extends_documentation_fragment:
  - gekko.platform.report_dir
"""

import json
import os
import time
from datetime import datetime, timezone

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "gekko.platform.deploy_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.phases = []
        self.current = None
        self.release = None
        self.playbook = None
        self.started = time.time()

    def _close_phase(self):
        if self.current is not None:
            self.current["duration_s"] = round(time.time() - self.current["started"], 2)

    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.basename(playbook._file_name)
        self.started = time.time()

    def v2_playbook_on_play_start(self, play):
        name = (play.get_name() or "").strip()
        phase = name.split(":", 1)[0].strip().lower() or "play"
        if self.current is not None and self.current["phase"] == phase:
            return
        self._close_phase()
        if self.current is not None:
            self._display.display(
                "[gekko] %s %s in %.1f s"
                % (self.current["phase"], self.current["status"], self.current["duration_s"])
            )
        self._display.display("[gekko] phase %d: %s" % (len(self.phases) + 1, phase))
        self.current = {
            "phase": phase,
            "started": time.time(),
            "status": "ok",
            "changed": 0,
            "failed": 0,
        }
        self.phases.append(self.current)

    def _count(self, result, key):
        if self.current is None:
            return
        if key == "failed" and result._task.ignore_errors:
            return
        self.current[key] += 1
        if key == "failed":
            self.current["status"] = "failed"

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._count(result, "changed")
        if result._task.action in ("gekko.platform.release_state", "release_state"):
            current = result._result.get("current")
            if current:
                self.release = current.get("id")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._count(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._count(result, "failed")

    def v2_playbook_on_stats(self, stats):
        self._close_phase()
        total = round(time.time() - self.started, 2)
        ok = all(p["status"] == "ok" for p in self.phases) and not any(
            stats.summarize(h)["failures"] or stats.summarize(h)["unreachable"]
            for h in stats.processed
        )
        self._display.banner("GEKKO DEPLOYMENT SUMMARY")
        for phase in self.phases:
            self._display.display(
                "  %-10s %-7s %7.1f s   changed=%d"
                % (phase["phase"], phase["status"], phase["duration_s"], phase["changed"])
            )
        self._display.display("  %-10s %-7s %7.1f s" % ("total", "ok" if ok else "failed", total))
        if self.release:
            self._display.display("  release    %s" % self.release)
        report = {
            "playbook": self.playbook,
            "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": "ok" if ok else "failed",
            "duration_s": total,
            "release": self.release,
            "phases": [{k: v for k, v in p.items() if k != "started"} for p in self.phases],
            "hosts": {h: stats.summarize(h) for h in sorted(stats.processed)},
        }
        directory = self.get_option("report_dir")
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory)
            path = os.path.join(directory, "deploy-report.json")
            with open(path, "w") as handle:
                json.dump(report, handle, indent=2)
            self._display.display("  report     %s" % path)
        except (IOError, OSError) as exc:
            self._display.warning("deploy_summary: cannot write report: %s" % exc)
