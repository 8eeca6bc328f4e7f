# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: tree_digest
short_description: A content digest of files and directory trees on the controller
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Returns one SHA-256 hex digest over the relative paths and contents of every file under
    the given paths (files or directories), ignoring caches and build leftovers.
  - Used to tag images by their sources, so an unchanged tree is never rebuilt.
options:
  _terms:
    description: Files or directories on the controller (absolute, or relative to the working directory).
    required: true
    type: list
    elements: path
  length:
    description: How many hex characters to return.
    type: int
    default: 12
"""

EXAMPLES = r"""
- name: Tag the application image by its sources
  ansible.builtin.set_fact:
    app_tag: "{{ lookup('gekko.platform.tree_digest', 'app', 'requirements/app.txt') }}"
"""

RETURN = r"""
_raw:
  description: The digest, one string.
  type: list
  elements: str
"""

import hashlib
import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", "build", "dist"}
IGNORED_SUFFIXES = (".pyc", ".pyo")


def _files(root):
    if os.path.isfile(root):
        yield os.path.basename(root), root
        return
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            if not name.endswith(IGNORED_SUFFIXES):
                full = os.path.join(directory, name)
                yield os.path.relpath(full, root), full


def digest(paths):
    sha = hashlib.sha256()
    for path in paths:
        if not os.path.exists(path):
            raise AnsibleLookupError("tree_digest: %s does not exist" % path)
        for relative, full in _files(path):
            sha.update(relative.encode("utf-8") + b"\0")
            with open(full, "rb") as handle:
                sha.update(hashlib.sha256(handle.read()).digest())
    return sha.hexdigest()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        return [digest(terms)[: self.get_option("length")]]
