"""`gekko reencrypt`: moves every value encrypted at rest to the newest data key, the step of a
data key rotation between adding the new key and retiring the old ones.

Each value is rewritten only if it is still what was read (compare and set), so a value a user
changes meanwhile is never overwritten with an older one. With `check`, nothing is written: it
counts what is left on older keys. A value that no key in the keyring decrypts (its key was
retired too early, or the value was altered) is counted as unreadable and left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from gekko.exchanges.credentials import link_request_context, venue_key_context
from gekko.security.crypto import DataKeys, DecryptError
from gekko.services.user_mfa import seed_context


@dataclass(frozen=True)
class EncryptedColumn:
    table: str
    key: str  # the primary key column
    column: str
    context: Callable[[object], str]  # where a row's value belongs (associated data)


# Every column that holds a value encrypted with the data keys.
ENCRYPTED_COLUMNS = (
    EncryptedColumn("users.mfa", "user_id", "secret_encrypted", seed_context),  # type: ignore[arg-type]
    EncryptedColumn("trading.venue_keys", "id", "credentials_encrypted", venue_key_context),
    EncryptedColumn(
        "trading.venue_link_requests", "state_hash", "verifier_encrypted", link_request_context
    ),
)


@dataclass
class Outcome:
    moved: int = 0
    left: int = 0
    unreadable: int = 0


async def reencrypt(database_url: str, keys: DataKeys, *, check: bool = False) -> Outcome:
    outcome = Outcome()
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        for col in ENCRYPTED_COLUMNS:
            # Identifiers come from the constant above, never from input.
            rows = await conn.fetch(
                f"SELECT {col.key} AS id, {col.column} AS value FROM {col.table} "  # noqa: S608
                f"WHERE {col.column} NOT LIKE $1",
                f"gk1.{keys.current_id}.%",
            )
            for row in rows:
                try:
                    plain = keys.decrypt(row["value"], col.context(row["id"]))
                except DecryptError:
                    outcome.unreadable += 1
                    continue
                if check:
                    outcome.left += 1
                    continue
                updated = await conn.execute(
                    f"UPDATE {col.table} SET {col.column} = $3 "  # noqa: S608
                    f"WHERE {col.key} = $1 AND {col.column} = $2",
                    row["id"],
                    row["value"],
                    keys.encrypt(plain, col.context(row["id"])),
                )
                # 0 rows: the value changed meanwhile, written by a service with the new key.
                outcome.moved += int(updated.endswith(" 1"))
    finally:
        await conn.close()
    return outcome
