"""TLS contexts, TLS 1.3 only. Between hosts, certificates come from the internal CA that the
deployment creates (gekko.platform.tls), and the same files serve and verify: a service's
certificate is also the client certificate its host presents. The gateway's public listener has
a certificate of its own (the edge), and asks its clients for none."""

from __future__ import annotations

import ssl

from gekko.config import EdgeTls, TlsFiles


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A domain service's listener: mutual TLS. Only a client with a certificate from the
    internal CA (the gateway, a peer) completes the handshake, so a direct call to a service
    port from anywhere else is refused before any HTTP is read."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files.cert_file, files.key_file)
    context.load_verify_locations(files.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def edge_context(edge: EdgeTls) -> ssl.SSLContext:
    """The gateway's public listener: TLS 1.3 only, no client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(edge.cert_file, edge.key_file)
    return context


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """Verifies the peer against the internal CA and its name (the host's address is a SAN)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files.cert_file, files.key_file)
    return context
