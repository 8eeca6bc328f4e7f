# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: totp_seed_problem
short_description: Why a TOTP seed cannot give an account a second factor, never the seed
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Reads the seed as the platform does (upper case) and answers why authenticator apps and
    C(gekko migrate) cannot use it, or an empty string when they can. A usable seed is base32
    (A-Z, 2-7) of at least 26 characters (128 bits), optionally padded with C(=).
options:
  _input:
    description: The seed.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Check the first admin's seed without showing it
  ansible.builtin.assert:
    that: gekko_admin_totp_secret | gekko.platform.totp_seed_problem == ''
"""

RETURN = r"""
_value:
  description: The problem, for example C(is not base32 (A-Z, 2-7)); empty when there is none.
  type: str
"""

from ansible_collections.gekko.platform.plugins.module_utils import _security_policy as policy


def totp_seed_problem(value):
    return policy.totp_seed_problem(value)


class FilterModule(object):
    def filters(self):
        return {"totp_seed_problem": totp_seed_problem}
