"""gekko.platform.tls_identity: a TLS identity's folder, key and certificates in one call."""

import datetime
import os
import stat

import pytest
from ansible_collections.community.crypto.plugins.filter.x509_certificate_info import (
    x509_certificate_info_filter,
)
from ansible_collections.gekko.platform.plugins.modules import tls_identity
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

UID, GID = os.getuid(), os.getgid()


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_for(key_path) -> str:
    """A self-signed certificate for the key on disk, as PEM."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app@host")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_first_run_makes_a_private_folder_and_key_then_nothing_changes(tmp_path):
    folder = tmp_path / "app"
    changed, fingerprint, cert, ca = tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert changed and (cert, ca) == ("", "")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert stat.S_IMODE((folder / "tls.key").stat().st_mode) == 0o600
    assert not (folder / "tls.key.new").exists()

    again = tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert again == (False, fingerprint, "", "")


def test_the_fingerprint_is_the_one_community_crypto_reads_from_the_certificate(tmp_path):
    """The tls role compares the two to decide whether a certificate is due."""
    folder = tmp_path / "app"
    dummy, fingerprint, dummy, dummy = tls_identity.ensure_identity(str(folder), UID, GID, False)
    pem = certificate_for(folder / "tls.key")
    (folder / "tls.crt").write_text(pem)
    (folder / "ca.crt").write_text("CA")
    changed, again, cert, ca = tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert (changed, cert, ca) == (False, pem, "CA")
    assert x509_certificate_info_filter(pem)["public_key_fingerprints"]["sha256"] == fingerprint


def test_a_loosened_key_is_tightened_and_a_check_run_changes_nothing(tmp_path):
    folder = tmp_path / "app"
    tls_identity.ensure_identity(str(folder), UID, GID, False)
    key = folder / "tls.key"
    key.chmod(0o644)
    assert tls_identity.ensure_identity(str(folder), UID, GID, True)[0] is True
    assert stat.S_IMODE(key.stat().st_mode) == 0o644, "a check run writes nothing"
    assert tls_identity.ensure_identity(str(folder), UID, GID, False)[0] is True
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    missing = tmp_path / "redis"
    assert tls_identity.ensure_identity(str(missing), UID, GID, True) == (True, "", "", "")
    assert not missing.exists()


def test_a_link_in_the_identitys_folder_is_refused_not_followed(tmp_path):
    """The folder belongs to the identity's user: a link where the key was must not make root
    hand another file to that user, nor read one for it."""
    folder = tmp_path / "log-relay"
    tls_identity.ensure_identity(str(folder), UID, GID, False)
    secret = tmp_path / "root-only.pem"
    secret.write_text("not theirs")
    secret.chmod(0o400)
    (folder / "tls.key").unlink()
    (folder / "tls.key").symlink_to(secret)
    with pytest.raises(tls_identity.NotAFile, match="tls.key is not a regular file"):
        tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o400

    (folder / "tls.key").unlink()
    tls_identity.ensure_identity(str(folder), UID, GID, False)
    (folder / "tls.crt").symlink_to(secret)
    with pytest.raises(tls_identity.NotAFile, match="tls.crt"):
        tls_identity.ensure_identity(str(folder), UID, GID, False)


def test_an_unreadable_key_or_one_of_another_kind_is_replaced(tmp_path):
    folder = tmp_path / "app"
    dummy, first, dummy, dummy = tls_identity.ensure_identity(str(folder), UID, GID, False)
    (folder / "tls.key").write_text("garbage")
    changed, second, dummy, dummy = tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert changed and second and second != first

    rsa = rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (folder / "tls.key").write_bytes(rsa)
    changed, third, dummy, dummy = tls_identity.ensure_identity(str(folder), UID, GID, False)
    assert changed and third not in ("", second)
    assert tls_identity.ensure_identity(str(folder), UID, GID, False)[:2] == (False, third)
