import jwt
import pytest

from gekko.security.passwords import hash_password, verify_password
from gekko.security.tokens import TokenError, bearer_token, decode_token, issue_token

SECRET = "s" * 40


def test_token_round_trip_carries_user_id_as_sub():
    token = issue_token(42, SECRET, ttl_s=60)
    assert jwt.decode(token, SECRET, algorithms=["HS256"], issuer="gekko")["sub"] == "42"
    assert decode_token(token, SECRET).user_id == 42


def test_expired_token_is_rejected():
    token = issue_token(1, SECRET, ttl_s=60, now=1_000_000)
    with pytest.raises(TokenError, match="expired"):
        decode_token(token, SECRET)


def test_wrong_secret_and_alg_none_are_rejected():
    with pytest.raises(TokenError):
        decode_token(issue_token(1, SECRET), "x" * 40)
    unsigned = jwt.encode(
        {"sub": "1", "exp": 9_999_999_999, "iss": "gekko"}, None, algorithm="none"
    )
    with pytest.raises(TokenError):
        decode_token(unsigned, SECRET)


def test_token_without_numeric_sub_is_rejected():
    token = jwt.encode({"sub": "alice", "exp": 9_999_999_999, "iss": "gekko"}, SECRET)
    with pytest.raises(TokenError, match="sub"):
        decode_token(token, SECRET)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "token"])
def test_bearer_header_must_be_well_formed(header):
    with pytest.raises(TokenError):
        bearer_token(header)


def test_bearer_header_is_parsed():
    assert bearer_token("bearer abc.def") == "abc.def"


def test_password_hash_verifies_only_the_right_password():
    hashed = hash_password("correct-horse")
    assert hashed != "correct-horse"
    assert verify_password(hashed, "correct-horse")
    assert not verify_password(hashed, "wrong-horse")
    assert not verify_password("not-a-hash", "correct-horse")
