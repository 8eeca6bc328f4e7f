"""Data keys and AES-256-GCM values: bound to their place, refused when altered, readable after
a rotation until the old key is retired, and re-read when the keys' file is replaced."""

import os

import pytest

from gekko.security import keyfiles
from gekko.security.crypto import DataKeys, DecryptError, generate_data_keys_file
from gekko.security.keyfiles import KeyFileError

OLD = "o" * 8 + "4f1e2d3c4b5a69788796a5b4c3d2e1f0"
NEW = "n" * 8 + "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_a_value_decrypts_only_in_the_place_it_was_encrypted_for():
    keys = DataKeys(text=OLD)
    stored = keys.encrypt(b"JBSWY3DPEHPK3PXP", "users.mfa/1")
    assert stored.startswith(f"gk1.{keys.current_id}.")
    assert b"JBSWY3DPEHPK3PXP" not in stored.encode()
    assert keys.decrypt(stored, "users.mfa/1") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(DecryptError, match="altered or moved"):
        keys.decrypt(stored, "users.mfa/2")  # copied into another user's row


def test_two_encryptions_of_one_value_differ():
    keys = DataKeys(text=OLD)
    assert keys.encrypt(b"x", "c") != keys.encrypt(b"x", "c")  # a fresh nonce each time


def test_an_altered_value_is_refused():
    keys = DataKeys(text=OLD)
    stored = keys.encrypt(b"secret", "c")
    flipped = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(DecryptError):
        keys.decrypt(flipped, "c")
    with pytest.raises(DecryptError, match="not a value encrypted by gekko"):
        keys.decrypt("plain text", "c")


def test_rotation_encrypts_with_the_newest_key_and_still_reads_the_old_until_retired():
    old = DataKeys(text=OLD)
    stored = old.encrypt(b"seed", "c")
    both = DataKeys(text=f"{OLD}\n{NEW}\n")
    assert both.current_id != old.current_id
    assert both.decrypt(stored, "c") == b"seed"
    assert not both.is_current(stored)
    assert both.is_current(both.encrypt(b"seed", "c"))
    retired = DataKeys(text=NEW)
    with pytest.raises(DecryptError, match="no longer in the keyring"):
        retired.decrypt(stored, "c")


def test_short_or_missing_keys_are_refused():
    with pytest.raises(KeyFileError, match="at least 32"):
        DataKeys(text="short")
    with pytest.raises(KeyFileError, match="no data key"):
        DataKeys(text="# only a comment\n")


def test_a_replaced_keys_file_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(keyfiles, "KEY_FILE_CHECK_S", 0.0)
    path = generate_data_keys_file(str(tmp_path))
    assert os.stat(path).st_mode & 0o777 == 0o600
    keys = DataKeys(path=path)
    first = keys.current_id
    stored = keys.encrypt(b"seed", "c")
    replacement = tmp_path / "new"
    replacement.write_text(open(path).read() + NEW + "\n")
    os.replace(replacement, path)
    assert keys.current_id != first
    assert keys.decrypt(stored, "c") == b"seed"
