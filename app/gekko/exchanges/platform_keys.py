"""The platform's own venue keys on a host (for a market-data stream that needs one: OANDA's
pricing stream), never in the clear: one file holding a `gk1.` value (AES-256-GCM,
gekko.security.crypto) of the JSON {venue: {field: value}}, sealed under a key of its own.

That key is derived from the newest data key (HKDF-SHA256, its own label), so the deploy makes
it without a new secret and a data key rotation changes it, while the data keys themselves
(which open users' venue keys and TOTP seeds) stay out of the market_data containers: they get
the derived key and the sealed file, nothing else.

`gekko exchange seal-keys` seals keys from standard input; the value in place is printed again
when it already holds the same keys under the same key, so a deploy that writes the file
changes nothing when nothing changed (a new seal would differ: its nonce is random).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gekko.exchanges.venues import VENUES
from gekko.security.crypto import DataKeys, DecryptError

CONTEXT = "platform/venue-keys"
DERIVATION_LABEL = b"gekko platform venue keys v1"

Keys = dict[str, dict[str, str]]


class PlatformKeysError(ValueError):
    """The keys do not make keys of their venues, or the file does not open."""


def checked(keys: Mapping[str, Mapping[str, str]]) -> Keys:
    if not isinstance(keys, Mapping):
        raise PlatformKeysError("the platform's keys are a JSON object of venue -> fields")
    out: Keys = {}
    for venue, fields in keys.items():
        if venue not in VENUES:
            raise PlatformKeysError(f"{venue!r} is not a venue ({', '.join(VENUES)})")
        expected = VENUES[venue].credential_fields
        if not isinstance(fields, Mapping) or set(fields) != set(expected):
            raise PlatformKeysError(f"the fields of a {venue} key are {', '.join(expected)}")
        if any(not isinstance(v, str) or not v.strip() for v in fields.values()):
            raise PlatformKeysError(f"{venue}: every field needs a value")
        out[venue] = {name: fields[name].strip() for name in expected}
    return out


def derived_key(data_keys: Sequence[str]) -> str:
    """The platform keys' own key (a keyring line, as DataKeys reads it), from the newest data
    key; it does not give the data key back."""
    if not data_keys:
        raise PlatformKeysError("no data key to derive the platform keys' key from")
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=DERIVATION_LABEL).derive(
        str(data_keys[-1]).strip().encode()
    )
    return base64.urlsafe_b64encode(material).rstrip(b"=").decode()


def seal(data_keys: DataKeys, keys: Mapping[str, Mapping[str, str]]) -> str:
    plain = json.dumps(checked(keys), sort_keys=True).encode()
    return data_keys.encrypt(plain, CONTEXT)


def unseal(data_keys: DataKeys, sealed: str) -> Keys:
    try:
        return checked(json.loads(data_keys.decrypt(sealed.strip(), CONTEXT)))
    except DecryptError as exc:
        raise PlatformKeysError(f"the sealed keys do not open with the data keys: {exc}") from None


def load(path: str, data_keys: DataKeys) -> Keys:
    try:
        sealed = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlatformKeysError(f"{path}: {exc.strerror}") from None
    return unseal(data_keys, sealed)


def seal_unless_current(
    data_keys: DataKeys, keys: Mapping[str, Mapping[str, str]], current: str
) -> str:
    """`current` (a sealed value) again if it holds these very keys and is sealed under the
    newest data key; a new seal otherwise."""
    wanted = checked(keys)
    current = current.strip()
    try:
        # Sealed under an older key, it is sealed again: a data key rotation reaches it too.
        if data_keys.is_current(current) and unseal(data_keys, current) == wanted:
            return current
    except (PlatformKeysError, DecryptError, binascii.Error, ValueError):
        pass
    return seal(data_keys, wanted)


def seal_unless_same(data_keys: DataKeys, keys: Mapping[str, Mapping[str, str]], path: str) -> str:
    """`path`'s own sealed value if it holds these very keys; a new seal otherwise."""
    try:
        current = Path(path).read_text(encoding="utf-8")
    except OSError:
        current = ""
    return seal_unless_current(data_keys, keys, current)
