# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: restore_target
short_description: Read the point a PostgreSQL restore should reach
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Reads C(latest), or a timestamp in ISO 8601 with its time zone (V(2026-12-05 08:00:00+00:00),
    V(2026-12-05T08:00:00Z)), as given to C(playbooks/restore.yml).
  - A timestamp without a zone is refused, since the restore would depend on a server's clock
    settings. So is anything else that is not a timestamp.
options:
  _input:
    description: C(latest) or the timestamp.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Read the restore's target
  ansible.builtin.set_fact:
    target: "{{ restore_target | gekko.platform.restore_target }}"
"""

RETURN = r"""
_value:
  description:
    - C(latest) (true or false), C(epoch) (seconds since 1970, null for latest) and C(utc) (the
      time in UTC as pgBackRest and PostgreSQL read it, V(2026-12-05 08:00:00+00), null for
      latest).
  type: dict
"""

import datetime

from ansible.errors import AnsibleFilterError


def restore_target(value):
    """`latest`, or an ISO 8601 timestamp with a zone, as epoch seconds and a UTC string."""
    text = str(value).strip()
    if text == "latest":
        return {"latest": True, "epoch": None, "utc": None}
    try:
        # Python 3.11 reads "Z", "+00", "+00:00" and a space or a "T" between date and time.
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise AnsibleFilterError(
            "The restore target %r is neither 'latest' nor an ISO 8601 timestamp. Fix: give latest "
            "or a time with its zone, for example -e \"target='2026-12-05 08:00:00+00:00'\"." % text
        ) from None
    if moment.tzinfo is None:
        raise AnsibleFilterError(
            "The restore target %r has no time zone. Fix: add one, for example '%s+00:00' (UTC)."
            % (text, text)
        )
    utc = moment.astimezone(datetime.timezone.utc)
    shown = (
        utc.strftime("%Y-%m-%d %H:%M:%S")
        + (".%06d" % utc.microsecond if utc.microsecond else "")
        + "+00"
    )
    return {"latest": False, "epoch": utc.timestamp(), "utc": shown}


class FilterModule(object):
    def filters(self):
        return {"restore_target": restore_target}
