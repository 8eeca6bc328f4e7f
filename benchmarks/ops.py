"""The bench's own access-token keys and an operator's headers for the gateway's ops routes
(/services needs a viewer, operator or admin). The keys are throwaway: bench tokens are
worthless anywhere else."""

from __future__ import annotations

import tempfile

from gekko.security.rbac import Role
from gekko.security.tokens import SigningKey, generate_key_files

SIGNING_KEY_FILE, VERIFY_KEYS_FILE = generate_key_files(tempfile.mkdtemp(prefix="gekko-bench-"))


def headers() -> dict[str, str]:
    token = SigningKey(SIGNING_KEY_FILE).issue(1, "bench-operator", role=Role.OPERATOR)
    return {"Authorization": f"Bearer {token}"}
