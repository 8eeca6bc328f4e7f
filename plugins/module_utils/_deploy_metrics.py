# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy history as Prometheus text exposition, for the node exporter's textfile collector.

Pure functions: the module reads the file, merges one finished deploy in, and writes it back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

OUTCOMES = ("succeeded", "rolled_back", "failed")
# Not an outcome: written before the deploy changes anything, to a file of its own.
STARTED = "started"
_FINISHED = "gekko_deploy_finished_timestamp_seconds"
_STARTED = "gekko_deploy_started_timestamp_seconds"
_LINE = re.compile(r'^%s\{outcome="([a-z_]+)"\} ([0-9.eE+-]+)$' % _FINISHED)


def finished_times(text):
    """{outcome: unix time} of the last deploy that ended each way, from an earlier file."""
    found = {}
    for line in (text or "").splitlines():
        match = _LINE.match(line.strip())
        if match and match.group(1) in OUTCOMES:
            found[match.group(1)] = float(match.group(2))
    return found


def render(finished, duration, phases, release, environment):
    """The whole file: when each outcome last happened, and the last deploy's timings."""
    lines = [
        "# HELP %s Unix time the last deploy that ended with this outcome finished." % _FINISHED,
        "# TYPE %s gauge" % _FINISHED,
    ]
    for outcome in OUTCOMES:
        if outcome in finished:
            lines.append('%s{outcome="%s"} %.3f' % (_FINISHED, outcome, finished[outcome]))
    lines += [
        "# HELP gekko_deploy_duration_seconds Wall time of the last deploy.",
        "# TYPE gekko_deploy_duration_seconds gauge",
        "gekko_deploy_duration_seconds %.3f" % duration,
        "# HELP gekko_deploy_phase_duration_seconds Wall time of each phase of the last deploy.",
        "# TYPE gekko_deploy_phase_duration_seconds gauge",
    ]
    for phase in sorted(phases):
        lines.append(
            'gekko_deploy_phase_duration_seconds{phase="%s"} %.3f' % (_label(phase), phases[phase])
        )
    lines += [
        "# HELP gekko_deploy_info The last deploy's release and environment.",
        "# TYPE gekko_deploy_info gauge",
        'gekko_deploy_info{release="%s",environment="%s"} 1'
        % (_label(release), _label(environment)),
    ]
    return "\n".join(lines) + "\n"


def render_started(started_at, environment):
    """The start of the deploy under way: with no finish after it, the deploy stopped early."""
    return (
        "\n".join(
            [
                "# HELP %s Unix time the last deploy started (before it changed anything)."
                % _STARTED,
                "# TYPE %s gauge" % _STARTED,
                '%s{environment="%s"} %.3f' % (_STARTED, _label(environment), started_at),
            ]
        )
        + "\n"
    )


def phase_durations(marks, finished_at):
    """Seconds per phase from the times each phase began: a phase ends where the next begins."""
    ordered = sorted(marks.items(), key=lambda item: float(item[1]))
    durations = {}
    for index, (phase, began) in enumerate(ordered):
        ends = float(ordered[index + 1][1]) if index + 1 < len(ordered) else float(finished_at)
        durations[phase] = max(ends - float(began), 0.0)
    return durations


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
