# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: secret_weaknesses
short_description: The weak secrets among name/value pairs, by name and reason, never by value
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Judges each secret on the controller. A secret is weak when it is shorter than
    O(min_length) characters, a well-known value (O(forbidden_values), case-insensitive), or made
    of fewer than 4 distinct characters.
  - Returns the weak ones only, each as its name and the reasons, in a form the
    M(gekko.platform.security_policy) module takes as O(gekko.platform.security_policy#module:weak_secrets);
    the values themselves never leave the filter.
options:
  _input:
    description: Secret name (a variable or environment variable name) to its value.
    type: dict
    required: true
  min_length:
    description: The shortest accepted secret.
    type: int
    required: true
  forbidden_values:
    description: Values no secret may have.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Find the weak secrets (names only)
  ansible.builtin.set_fact:
    weak: "{{ {'GEKKO_REDIS_PASSWORD': lookup('ansible.builtin.env', 'GEKKO_REDIS_PASSWORD')}
              | gekko.platform.secret_weaknesses(32, ['changeme']) }}"
"""

RETURN = r"""
_value:
  description: One entry per weak secret, in input order.
  type: list
  elements: dict
  contains:
    name:
      description: The secret's name.
      type: str
    weaknesses:
      description: Why it is weak, for example C(is shorter than 32 characters).
      type: list
      elements: str
"""

from ansible_collections.gekko.platform.plugins.module_utils import _security_policy as policy


def secret_weaknesses(values, min_length, forbidden_values=None):
    """[{name, weaknesses}] of the weak secrets in ``values`` (name -> value)."""
    found = []
    for name, value in (values or {}).items():
        weaknesses = policy.secret_weaknesses(value, min_length, forbidden_values)
        if weaknesses:
            found.append({"name": str(name), "weaknesses": weaknesses})
    return found


class FilterModule(object):
    def filters(self):
        return {"secret_weaknesses": secret_weaknesses}
