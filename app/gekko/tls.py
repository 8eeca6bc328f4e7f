"""TLS contexts for traffic between hosts: TLS 1.3 only, certificates from the internal CA that
the deployment creates (gekko.platform.tls). The same files serve and verify, so a service
certificate is also the client certificate its host presents."""

from __future__ import annotations

import ssl

from gekko.config import TlsFiles


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files.cert_file, files.key_file)
    context.load_verify_locations(files.ca_file)
    # Client certificates are verified when sent; requiring them (mTLS) is the security issue's.
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """Verifies the peer against the internal CA and its name (the host's address is a SAN)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files.cert_file, files.key_file)
    return context
