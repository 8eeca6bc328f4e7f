# -*- coding: utf-8 -*-
# Copyright: Gekko platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: jwk_thumbprint
short_description: The RFC 7638 JWK thumbprint of an Ed25519 public key, the C(kid) of its tokens
version_added: 0.1.0
author:
  - Gekko platform team (@gekko-platform)
description:
  - Takes an Ed25519 public key in PEM (as M(community.crypto.openssl_privatekey_info) returns it
    in C(public_key)) and returns the base64url SHA-256 thumbprint of its JWK (RFC 7638), which
    the users service uses as the C(kid) of the access tokens it signs with that key.
options:
  _input:
    description: The public key, PEM.
    type: str
    required: true
requirements:
  - cryptography (on the controller)
"""

EXAMPLES = r"""
- name: The key id the newest signing key gives its tokens
  ansible.builtin.set_fact:
    kid: "{{ gekko_token_verify_keys[-1] | gekko.platform.jwk_thumbprint }}"
"""

RETURN = r"""
_value:
  description: The thumbprint, base64url without padding (43 characters).
  type: str
"""

import base64
import hashlib
import json

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(pem):
    if not HAS_CRYPTOGRAPHY:
        raise AnsibleFilterError("jwk_thumbprint needs the cryptography library on the controller")
    try:
        key = serialization.load_pem_public_key(to_bytes(pem))
    except (ValueError, TypeError) as exc:
        raise AnsibleFilterError("jwk_thumbprint: not a PEM public key: %s" % exc) from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnsibleFilterError("jwk_thumbprint: only Ed25519 keys are supported")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 7638: the required members only, in lexicographic order, no whitespace.
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":")
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


class FilterModule(object):
    def filters(self):
        return {"jwk_thumbprint": jwk_thumbprint}
