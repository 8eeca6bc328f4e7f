#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tls_identity
short_description: The host side of one TLS identity in one call
description:
  - Makes sure the identity's folder exists with its owner and mode, and that it holds an EC
    P-256 private key (C(tls.key), made when missing, unreadable or of another kind, written
    only through a new file of mode 0600 renamed into place), then returns the key's public key
    fingerprint and the certificates the folder has (C(tls.crt), C(ca.crt)).
  - The folder belongs to the identity's user, so nothing in it is followed as a link; a link
    (or anything but a regular file) where the key or a certificate should be fails the task.
  - The controller decides from that whether a certificate is due (C(gekko.platform.tls) role,
    C(issue) tasks); a redeploy with nothing due makes this one call per identity instead of a
    C(file), an C(openssl_privatekey) and two C(slurp) calls.
  - The fingerprint is computed as community.crypto computes it (the hash of the DER
    SubjectPublicKeyInfo as colon-separated hex pairs), so it compares with
    C(community.crypto.x509_certificate_info)'s C(public_key_fingerprints).
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
options:
  path:
    description: The identity's folder.
    type: path
    required: true
  owner:
    description: Owner of the folder and the key (a user name or a numeric id).
    type: str
    required: true
  group:
    description: Group of the folder and the key (a group name or a numeric id).
    type: str
    default: root
requirements:
  - cryptography (on the host)
notes:
  - Check mode reports the folder or key it would make; a key it would make has no fingerprint
    yet (an empty string).
attributes:
  check_mode:
    support: full
    description: Reports the folder, key, owner or mode it would change without writing anything.
  diff_mode:
    support: none
    description: No diff; the key is never shown.
"""

EXAMPLES = r"""
- name: Make sure the app identity's folder and key exist, and read its certificates
  gekko.platform.tls_identity:
    path: /etc/gekko/tls/app
    owner: "10001"
  register: app_tls
"""

RETURN = r"""
public_key_fingerprint:
  description: SHA-256 fingerprint of the key's public key (colon-separated hex); empty in a
    check run that would make the key.
  returned: always
  type: str
certificate:
  description: The folder's C(tls.crt), or an empty string.
  returned: always
  type: str
ca_certificate:
  description: The folder's C(ca.crt), or an empty string.
  returned: always
  type: str
"""

import grp
import hashlib
import os
import pwd
import stat
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

FOLDER_MODE = 0o750
KEY_MODE = 0o600


def numeric_id(value, database):
    """A user or group given by name or number, as a number."""
    if value.isdigit():
        return int(value)
    return database(value)[2]


def fingerprint(private_key):
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class NotAFile(Exception):
    """A link or special file where the identity keeps a key or a certificate."""


def regular_file(path):
    """Whether `path` is a regular file (never following a link); False when it is missing."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(status.st_mode):
        raise NotAFile("%s is not a regular file (a link or a special file); remove it" % path)
    return True


def ensure_owner_and_mode(path, uid, gid, mode, check_mode):
    """Whether the path's owner or mode had to change (changed unless a check run). Changed
    through a descriptor opened without following a link, so a file swapped for a link in the
    meantime is refused, not followed."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if mode == FOLDER_MODE else 0)
    descriptor = os.open(path, flags)
    try:
        status = os.fstat(descriptor)
        if (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (uid, gid, mode):
            return False
        if not check_mode:
            os.fchown(descriptor, uid, gid)
            os.fchmod(descriptor, mode)
        return True
    finally:
        os.close(descriptor)


def read_file(path):
    """The bytes of a regular file, opened without following a link; None when it is missing."""
    if not regular_file(path):
        return None
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read()


def usable_key(pem):
    """The key in `pem` when it is an unencrypted EC P-256 private key, else None."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        return None
    return key


def write_key(path, uid, gid):
    """A new key, written to a file that is 0600 from its creation, then renamed into place."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    partial = path + ".new"
    if os.path.lexists(partial):
        os.unlink(partial)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        os.write(descriptor, pem)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.chown(partial, uid, gid)
    os.rename(partial, path)
    return key


def read_text(path):
    content = read_file(path)
    return "" if content is None else content.decode("utf-8", "replace")


def ensure_identity(folder, uid, gid, check_mode):
    """(changed, fingerprint, certificate, CA certificate) of the identity in `folder`."""
    changed = False
    if os.path.islink(folder):
        raise NotAFile("%s is a link, not the identity's folder; remove it" % folder)
    if not os.path.isdir(folder):
        changed = True
        if check_mode:
            return changed, "", "", ""
        os.makedirs(folder, mode=FOLDER_MODE)
    changed |= ensure_owner_and_mode(folder, uid, gid, FOLDER_MODE, check_mode)

    key_path = os.path.join(folder, "tls.key")
    pem = read_file(key_path)
    # A key that cannot be read, or of another kind, is replaced (its certificate is then due).
    key = usable_key(pem) if pem is not None else None
    if key is not None:
        changed |= ensure_owner_and_mode(key_path, uid, gid, KEY_MODE, check_mode)
        key_fingerprint = fingerprint(key)
    elif check_mode:
        changed, key_fingerprint = True, ""
    else:
        changed, key_fingerprint = True, fingerprint(write_key(key_path, uid, gid))
    return (
        changed,
        key_fingerprint,
        read_text(os.path.join(folder, "tls.crt")),
        read_text(os.path.join(folder, "ca.crt")),
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            owner=dict(type="str", required=True),
            group=dict(type="str", default="root"),
        ),
        supports_check_mode=True,
    )
    if CRYPTOGRAPHY_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib("cryptography")
            + " Fix: apt-get install python3-cryptography.",
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )
    try:
        uid = numeric_id(module.params["owner"], pwd.getpwnam)
        gid = numeric_id(module.params["group"], grp.getgrnam)
    except KeyError as exc:
        module.fail_json(msg="No such user or group on the host: %s" % exc)
    try:
        changed, key_fingerprint, certificate, ca_certificate = ensure_identity(
            module.params["path"], uid, gid, module.check_mode
        )
    except NotAFile as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=changed,
        public_key_fingerprint=key_fingerprint,
        certificate=certificate,
        ca_certificate=ca_certificate,
    )


if __name__ == "__main__":
    main()
