"""One access-token key pair for the unit tests, written once per run."""

from __future__ import annotations

import tempfile
import time

from gekko.security.crypto import generate_data_keys_file
from gekko.security.rbac import Role
from gekko.security.tokens import SigningKey, VerifyKeys, generate_key_files

_KEYS_DIR = tempfile.mkdtemp(prefix="gekko-keys-")
SIGNING_KEY_FILE, VERIFY_KEYS_FILE = generate_key_files(_KEYS_DIR)
DATA_KEYS_FILE = generate_data_keys_file(_KEYS_DIR)
# The settings every component needs (the signing key is used by the users service only, the
# data keys by users and trading).
TOKEN_ENV = {
    "GEKKO_JWT_VERIFY_KEYS_FILE": VERIFY_KEYS_FILE,
    "GEKKO_JWT_SIGNING_KEY_FILE": SIGNING_KEY_FILE,
    "GEKKO_DATA_KEYS_FILE": DATA_KEYS_FILE,
}
signing_key = SigningKey(SIGNING_KEY_FILE)
verify_keys = VerifyKeys(VERIFY_KEYS_FILE)


def as_role(role: Role, user_id: int = 1, *, mfa: bool = True) -> dict[str, str]:
    """Bearer headers of a signed-in user with this role (a second factor proved just now,
    unless `mfa` is False)."""
    mfa_at = int(time.time()) if mfa else None
    token = signing_key.issue(user_id, f"s-{role}", role=role, mfa_at=mfa_at)
    return {"Authorization": "Bearer " + token}


OPERATOR = as_role(Role.OPERATOR)
