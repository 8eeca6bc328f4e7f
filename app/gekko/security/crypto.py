"""Secrets the platform stores (TOTP seeds today, exchange credentials next) are encrypted at rest
with AES-256-GCM under versioned data keys.

The keys come from the secrets store as one key per line, oldest first; the last one encrypts,
every one decrypts, so a rotation is: add a key, re-encrypt (`gekko reencrypt`), then retire the
old one. Each line is a random secret of at least 32 characters from which the AES key is
derived with HKDF-SHA256; its id is a hash of the derived key, so no version counter has to be
kept in step anywhere.

A value is stored as `gk1.<key id>.<base64url(nonce || ciphertext || tag)>`, encrypted with a
fresh 96-bit nonce and the place it belongs to (for example `users.mfa/42`) as associated data:
a ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gekko.security.keyfiles import KeyFileError, WatchedFile

FORMAT = "gk1"
MIN_SECRET_CHARS = 32
_NONCE_BYTES = 12
_HKDF_INFO = b"gekko data encryption key v1"


class DecryptError(Exception):
    """The value is not ours, was altered, belongs elsewhere, or its key was retired."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, AESGCM]  # by id, oldest first
    current: str

    @classmethod
    def parse(cls, text: bytes | str) -> Keyring:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        secrets = [s.strip() for s in raw.splitlines() if s.strip() and not s.startswith("#")]
        if not secrets:
            raise KeyFileError("no data key found (one secret per line, oldest first)")
        keys: dict[str, AESGCM] = {}
        for secret in secrets:
            if len(secret) < MIN_SECRET_CHARS:
                raise KeyFileError(
                    f"a data key is {len(secret)} characters; at least {MIN_SECRET_CHARS} "
                    "random ones are needed"
                )
            material = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO
            ).derive(secret.encode("utf-8"))
            key_id = _b64url(hashlib.sha256(b"gekko data key id:" + material).digest())[:16]
            keys.pop(key_id, None)  # a key listed twice counts where it was listed last
            keys[key_id] = AESGCM(material)
        return cls(keys=keys, current=next(reversed(keys)))


class DataKeys:
    """The keyring, from a file a deploy writes (re-read when replaced) or from text."""

    def __init__(self, *, path: str | None = None, text: str | None = None) -> None:
        if (path is None) == (text is None):
            raise ValueError("give the keys' file or their text")
        self._file = WatchedFile(path, Keyring.parse) if path is not None else None
        self._static = Keyring.parse(text) if text is not None else None

    def _ring(self) -> Keyring:
        return self._file.get() if self._file is not None else self._static  # type: ignore[return-value]

    @property
    def current_id(self) -> str:
        return self._ring().current

    def encrypt(self, plaintext: bytes, context: str) -> str:
        ring = self._ring()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = ring.keys[ring.current].encrypt(nonce, plaintext, context.encode("utf-8"))
        return f"{FORMAT}.{ring.current}.{_b64url(nonce + sealed)}"

    def decrypt(self, stored: str, context: str) -> bytes:
        key_id = self.key_id_of(stored)
        key = self._ring().keys.get(key_id)
        if key is None:
            raise DecryptError(
                f"encrypted with data key {key_id}, which is no longer in the keyring; put it "
                "back until `gekko reencrypt` has moved every value to the current key"
            )
        blob = _unb64url(stored.split(".", 2)[2])
        try:
            return key.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            raise DecryptError(f"the value stored for {context} was altered or moved") from None

    @staticmethod
    def key_id_of(stored: str) -> str:
        parts = stored.split(".", 2)
        if len(parts) != 3 or parts[0] != FORMAT:
            raise DecryptError(f"not a value encrypted by gekko ({FORMAT}.<key id>.<data>)")
        return parts[1]

    def is_current(self, stored: str) -> bool:
        return self.key_id_of(stored) == self.current_id


def generate_data_keys_file(directory: str) -> str:
    """A file with one fresh data key in `directory` (tests and local tools)."""
    path = os.path.join(directory, "data-keys")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(_b64url(os.urandom(32)) + "\n")
    return path
