"""Second factors: TOTP (RFC 6238, with pyotp) and single-use recovery codes.

A TOTP code is accepted one time step either side of now (clock drift), and only for a step
later than the last one accepted for the account, so a code seen over a shoulder or in a log
cannot be replayed, not even within its own 30 seconds. The caller stores the step it gets back.

Recovery codes are 50 random bits each, shown once and stored as SHA-256 hashes (like the
refresh tokens, their entropy makes a slow hash unnecessary): they cannot be read back, even by
someone holding the data keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import pyotp

ISSUER = "Gekko"
RECOVERY_CODE_COUNT = 10
_TOTP_CODE = re.compile(r"^\d{6}$")
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread
_RECOVERY_CODE = re.compile(rf"^[{_RECOVERY_ALPHABET}]{{10}}$")
# One step either side: a phone's clock a little off still works.
_DRIFT_STEPS = 1


def new_totp_secret() -> str:
    """160 random bits in base32, as authenticator apps expect (RFC 4226's recommended size)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The otpauth:// URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def totp_step(secret: str, code: str, *, after_step: int, now: float | None = None) -> int | None:
    """The time step `code` belongs to, if it is valid now and later than `after_step`."""
    code = code.strip().replace(" ", "")
    if not _TOTP_CODE.match(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(_utc(now))
    for step in range(current - _DRIFT_STEPS, current + _DRIFT_STEPS + 1):
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _utc(now: float | None) -> int:
    return int(time.time() if now is None else now)


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10)) for _ in range(count)]
    return [f"{c[:5]}-{c[5:]}" for c in codes]


def recovery_code_hash(code: str) -> bytes | None:
    """The stored form of a recovery code as typed (any case, with or without its dash), or
    None if it cannot be one."""
    normalised = code.strip().lower().replace("-", "").replace(" ", "")
    if not _RECOVERY_CODE.match(normalised):
        return None
    return hashlib.sha256(normalised.encode("ascii")).digest()
