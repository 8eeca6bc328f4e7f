#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: config_files
short_description: Put a component's folders and files on a host in one call
version_added: 0.1.0
description:
  - Makes sure each folder in O(directories) exists, then that each file in O(files) holds its
    content, each with its mode, owner and group, in that order.
  - One module call for what would take a M(ansible.builtin.file) or M(ansible.builtin.template)
    task per path (two calls for each template). A redeploy that changes nothing costs one call
    per component instead of a dozen.
  - A file that changes is written to a temporary file beside it, checked with its O(files[].validate)
    command when it has one, and moved into place atomically, as M(ansible.builtin.copy) does.
  - Render templates on the controller with the P(ansible.builtin.template#lookup) lookup and pass
    the result as O(files[].content). Tasks whose files hold secrets need C(no_log), since the
    content is a module argument.
author:
  - Gekko platform team (@gekko-platform)
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing anything.
  diff_mode:
    support: full
    description: Shows each changed file's content before and after (unless its O(files[].diff) is off) and each folder's changed attributes.
options:
  directories:
    description: Folders, created with their parents when missing.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The folder.
        type: path
        required: true
      mode:
        description: Its permissions, as octal digits (for example V("0750")).
        type: raw
        required: true
      owner:
        description: Its owner (name or id); unchanged when omitted.
        type: str
      group:
        description: Its group (name or id); unchanged when omitted.
        type: str
  files:
    description: Files and what they hold.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file. Its folder must exist (list it in O(directories)).
        type: path
        required: true
      content:
        description: What the file holds.
        type: str
        required: true
      mode:
        description: Its permissions, as octal digits.
        type: raw
        required: true
      owner:
        description: Its owner (name or id); unchanged when omitted.
        type: str
      group:
        description: Its group (name or id); unchanged when omitted.
        type: str
      validate:
        description:
          - Command that checks the new content before it replaces the file, with V(%s) where the
            temporary file's path goes. A failed check leaves the file as it was and fails the task.
        type: str
      diff:
        description: Show the content in the diff. Off for a file that holds a secret.
        type: bool
        default: true
"""

EXAMPLES = r"""
- name: Put the relay's folders and configuration on the host
  gekko.platform.config_files:
    directories:
      - {path: /etc/gekko/log-relay, mode: "0755", owner: root, group: root}
      - {path: /var/lib/gekko/log-relay, mode: "0700", owner: "65534", group: "65534"}
    files:
      - path: /etc/gekko/log-relay/rsyslog.conf
        content: "{{ lookup('ansible.builtin.template', 'relay.rsyslog.conf.j2') }}"
        mode: "0644"
        validate: rsyslogd -N1 -f %s
  notify: Restart the relay
"""

RETURN = r"""
changed_paths:
  description: The folders and files that were (or in check mode would be) created or changed.
  returned: always
  type: list
  elements: str
  sample: [/etc/gekko/log-relay/rsyslog.conf]
checksums:
  description: The SHA-1 of each file's content, by path, as M(ansible.builtin.copy) returns it.
  returned: always
  type: dict
  sample: {/etc/gekko/log-relay/rsyslog.conf: 6e1d7a0c3c5f0b1a9f1d1f0e2c6b5a4d3c2b1a09}
"""

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text


def _fs_args(entry):
    """The attributes AnsibleModule.set_fs_attributes_if_different compares and sets."""
    return dict(
        path=entry["path"],
        mode=entry["mode"],
        owner=entry.get("owner"),
        group=entry.get("group"),
        secontext=[None, None, None],
        attributes=None,
    )


def ensure_directory(module, entry):
    """Create the folder when missing, then set its attributes. Returns (changed, diff)."""
    b_path = to_bytes(entry["path"], errors="surrogate_or_strict")
    diff = {"before": {"path": entry["path"]}, "after": {"path": entry["path"]}}
    changed = False
    if not os.path.isdir(b_path):
        if os.path.lexists(b_path):
            module.fail_json(
                msg="%s exists and is not a folder" % entry["path"], path=entry["path"]
            )
        diff["before"]["state"], diff["after"]["state"] = "absent", "directory"
        changed = True
        if module.check_mode:
            return changed, diff
        os.makedirs(b_path)
    return module.set_fs_attributes_if_different(_fs_args(entry), changed, diff), diff


def _read(b_path):
    if not os.path.lexists(b_path):
        return None
    with open(b_path, "rb") as handle:
        return handle.read()


def _write_checked(module, entry, b_path, b_content):
    """Write beside the file, run its check, then rename it into place (atomic in one folder).

    The temporary file gets the final owner and mode before the rename, so a secret is never
    readable by others, not even for a moment (atomic_move would create it 0644 first)."""
    b_dir = os.path.dirname(b_path)
    if not os.path.isdir(b_dir):
        module.fail_json(
            msg="the folder of %s does not exist: list it in directories" % entry["path"],
            path=entry["path"],
        )
    fd, b_tmp = tempfile.mkstemp(dir=b_dir, prefix=b".gekko-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(b_content)
        if entry.get("validate"):
            if "%s" not in entry["validate"]:
                module.fail_json(
                    msg="validate must contain %%s: %s" % entry["validate"], path=entry["path"]
                )
            try:
                command = entry["validate"] % to_native(b_tmp)
            except (TypeError, ValueError) as exc:
                module.fail_json(
                    msg="validate of %s: %s (write a literal %% as %%%%)" % (entry["path"], exc)
                )
            rc, out, err = module.run_command(command)
            if rc != 0:
                module.fail_json(
                    msg="the new %s failed its check, the file is unchanged" % entry["path"],
                    path=entry["path"],
                    validate_rc=rc,
                    stdout=out,
                    stderr=err,
                )
        module.set_fs_attributes_if_different(_fs_args(dict(entry, path=to_native(b_tmp))), False)
        os.rename(b_tmp, b_path)
    finally:
        if os.path.lexists(b_tmp):
            os.unlink(b_tmp)


def ensure_file(module, entry):
    """Write the content when it differs, then set the attributes. Returns (changed, diff, checksum)."""
    b_path = to_bytes(entry["path"], errors="surrogate_or_strict")
    if os.path.isdir(b_path):
        module.fail_json(msg="%s is a folder" % entry["path"], path=entry["path"])
    b_content = to_bytes(entry["content"], errors="surrogate_or_strict")
    b_current = _read(b_path)
    diff = {"before_header": entry["path"], "after_header": entry["path"]}
    if entry["diff"]:
        diff["before"] = (
            "" if b_current is None else to_text(b_current, errors="surrogate_or_replace")
        )
        diff["after"] = entry["content"]
    changed = b_current != b_content
    if changed and not module.check_mode:
        _write_checked(module, entry, b_path, b_content)
    if b_current is not None or not module.check_mode:
        changed = module.set_fs_attributes_if_different(_fs_args(entry), changed)
    return changed, diff, hashlib.sha1(b_content, usedforsecurity=False).hexdigest()


def main():
    path_spec = dict(
        path=dict(type="path", required=True),
        mode=dict(type="raw", required=True),
        owner=dict(type="str"),
        group=dict(type="str"),
    )
    file_spec = dict(
        path_spec,
        content=dict(type="str", required=True),
        validate=dict(type="str"),
        diff=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="dict", default=[], options=path_spec),
            files=dict(type="list", elements="dict", default=[], options=file_spec),
        ),
        supports_check_mode=True,
    )
    changed_paths, diffs, checksums = [], [], {}
    for entry in module.params["directories"]:
        changed, diff = ensure_directory(module, entry)
        if changed:
            changed_paths.append(entry["path"])
            diffs.append(diff)
    for entry in module.params["files"]:
        changed, diff, checksums[entry["path"]] = ensure_file(module, entry)
        if changed:
            changed_paths.append(entry["path"])
            diffs.append(diff)
    module.exit_json(
        changed=bool(changed_paths), changed_paths=changed_paths, checksums=checksums, diff=diffs
    )


if __name__ == "__main__":
    main()
