"""TOTP codes (accepted one step either side, each step once) and recovery codes."""

import pyotp

from gekko.security.mfa import (
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    recovery_code_hash,
    totp_step,
)

NOW = 1_800_000_015.0  # 15 s into a step
STEP = int(NOW // 30)


def test_a_code_is_accepted_one_step_either_side_and_not_further():
    seed = new_totp_secret()
    totp = pyotp.TOTP(seed)
    for offset in (-1, 0, 1):
        assert totp_step(seed, totp.generate_otp(STEP + offset), after_step=0, now=NOW) == (
            STEP + offset
        )
    for offset in (-2, 2):
        assert totp_step(seed, totp.generate_otp(STEP + offset), after_step=0, now=NOW) is None


def test_a_code_of_a_step_already_used_is_refused():
    seed = new_totp_secret()
    code = pyotp.TOTP(seed).at(NOW)
    assert totp_step(seed, code, after_step=STEP - 1, now=NOW) == STEP
    assert totp_step(seed, code, after_step=STEP, now=NOW) is None
    earlier = pyotp.TOTP(seed).generate_otp(STEP - 1)
    assert totp_step(seed, earlier, after_step=STEP, now=NOW) is None


def test_malformed_codes_are_refused_without_error():
    seed = new_totp_secret()
    for code in ("", "12345", "1234567", "abcdef", "12 34 5x"):
        assert totp_step(seed, code, after_step=0, now=NOW) is None
    assert totp_step(seed, " ".join(pyotp.TOTP(seed).at(NOW)), after_step=0, now=NOW) == STEP


def test_the_seed_and_its_uri_are_what_authenticator_apps_read():
    seed = new_totp_secret()
    assert len(seed) == 32 and set(seed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    uri = provisioning_uri(seed, "alice")
    assert uri.startswith(f"otpauth://totp/Gekko:alice?secret={seed}&issuer=Gekko")


def test_recovery_codes_are_distinct_and_match_however_they_are_typed():
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    code = codes[0]
    assert len(code) == 11 and code[5] == "-"
    digest = recovery_code_hash(code)
    assert digest is not None and len(digest) == 32
    assert recovery_code_hash(code.upper()) == digest
    assert recovery_code_hash(code.replace("-", "")) == digest
    assert recovery_code_hash(f" {code[:5]} {code[6:]} ") == digest
    assert recovery_code_hash("123456") is None  # a TOTP code is not a recovery code
    assert recovery_code_hash(codes[1]) != digest
