"""Make the repository importable as the gekko.platform collection (via the ./collections link)."""

import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[3] / "collections"
if not (COLLECTIONS / "ansible_collections" / "gekko" / "platform").exists():
    raise RuntimeError(
        "collections/ansible_collections/gekko/platform is missing: run `make setup`"
    )
sys.path.insert(0, str(COLLECTIONS))
