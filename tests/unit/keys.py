"""One access-token key pair for the unit tests, written once per run."""

from __future__ import annotations

import tempfile

from gekko.security.rbac import Role
from gekko.security.tokens import SigningKey, VerifyKeys, generate_key_files

SIGNING_KEY_FILE, VERIFY_KEYS_FILE = generate_key_files(tempfile.mkdtemp(prefix="gekko-keys-"))
# The settings every component needs (the signing key is used by the users service only).
TOKEN_ENV = {
    "GEKKO_JWT_VERIFY_KEYS_FILE": VERIFY_KEYS_FILE,
    "GEKKO_JWT_SIGNING_KEY_FILE": SIGNING_KEY_FILE,
}
signing_key = SigningKey(SIGNING_KEY_FILE)
verify_keys = VerifyKeys(VERIFY_KEYS_FILE)


def as_role(role: Role, user_id: int = 1) -> dict[str, str]:
    """Bearer headers of a signed-in user with this role."""
    return {"Authorization": "Bearer " + signing_key.issue(user_id, f"s-{role}", role=role)}


OPERATOR = as_role(Role.OPERATOR)
