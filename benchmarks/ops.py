"""The bench's own access-token keys and an operator's headers for the gateway's ops routes
(/services needs a viewer, operator or admin). The keys are throwaway: bench tokens are
worthless anywhere else."""

from __future__ import annotations

import tempfile
import time

from gekko.security.crypto import generate_data_keys_file
from gekko.security.rbac import Role
from gekko.security.tokens import SigningKey, generate_key_files

_KEYS_DIR = tempfile.mkdtemp(prefix="gekko-bench-")
SIGNING_KEY_FILE, VERIFY_KEYS_FILE = generate_key_files(_KEYS_DIR)
DATA_KEYS_FILE = generate_data_keys_file(_KEYS_DIR)


def headers() -> dict[str, str]:
    token = SigningKey(SIGNING_KEY_FILE).issue(
        1, "bench-operator", role=Role.OPERATOR, mfa_at=int(time.time())
    )
    return {"Authorization": f"Bearer {token}"}
