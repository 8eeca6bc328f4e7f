# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: controller_process
short_description: This controller's playbook process, or whether other processes still run
version_added: 0.3.0
description:
  - Without terms, one dict naming the C(ansible-playbook) process running this lookup (the
    parent of the worker that templates it), C(pid), and the controller, C(controller).
  - With process ids as terms, whether each one still runs on this controller (V(true) or
    V(false)), for telling a killed run's lock from a live one.
author:
  - Gekko platform team (@gekko-platform)
options:
  _terms:
    description: Process ids to check.
    type: list
    elements: int
    required: false
"""

EXAMPLES = r"""
- name: Name this run
  ansible.builtin.debug:
    msg: "{{ lookup('gekko.platform.controller_process') }}"
- name: Is process 4242 still running?
  ansible.builtin.debug:
    msg: "{{ lookup('gekko.platform.controller_process', 4242) }}"
"""

RETURN = r"""
_raw:
  description: This process (a dict with C(pid) and C(controller)), or one boolean per term.
  type: list
  elements: raw
"""

import errno
import os
import socket

from ansible.plugins.lookup import LookupBase


def alive(pid):
    try:
        os.kill(int(pid), 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, owned by someone else
    except (TypeError, ValueError):
        return False
    return True


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if not terms:
            return [{"pid": os.getppid(), "controller": socket.gethostname()}]
        return [alive(term) for term in terms]
