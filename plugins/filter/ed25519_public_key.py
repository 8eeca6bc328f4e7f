# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: ed25519_public_key
short_description: The public key (PEM) of an Ed25519 private key (PEM), checked to be Ed25519
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes an unencrypted Ed25519 private key in PEM (PKCS#8, as
    M(community.crypto.openssl_privatekey) and C(openssl genpkey -algorithm ed25519) write it)
    and returns its public key in PEM (SubjectPublicKeyInfo), the form the platform publishes
    for verifying access tokens.
  - Runs on the controller, in the play, without a module call per key.
  - Anything else (another key type, an encrypted key, not a key) is an error that names the
    problem and the fix, never the key.
options:
  _input:
    description: The private key, PEM.
    type: str
    required: true
requirements:
  - cryptography (on the controller)
"""

EXAMPLES = r"""
- name: The keys to publish
  ansible.builtin.set_fact:
    verify_keys: "{{ signing_keys | map('gekko.platform.ed25519_public_key') | list }}"
"""

RETURN = r"""
_value:
  description: The public key, PEM (C(-----BEGIN PUBLIC KEY-----)).
  type: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes, to_text

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

FIX = "Fix: make one with `openssl genpkey -algorithm ed25519` (unencrypted PEM)."


def ed25519_public_key(pem):
    if not HAS_CRYPTOGRAPHY:
        raise AnsibleFilterError(
            "ed25519_public_key needs the cryptography library on the controller"
        )
    try:
        key = serialization.load_pem_private_key(to_bytes(pem), password=None)
    except (ValueError, TypeError) as exc:
        reason = (
            "encrypted" if "password" in str(exc).lower() else "not an unencrypted PEM private key"
        )
        raise AnsibleFilterError("a token signing key is %s. %s" % (reason, FIX)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnsibleFilterError("a token signing key is not an Ed25519 key. %s" % FIX)
    return to_text(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


class FilterModule(object):
    def filters(self):
        return {"ed25519_public_key": ed25519_public_key}
