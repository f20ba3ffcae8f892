"""The local CA: created once with a private key only its owner reads; leaves verify under it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chaosstream.proxy.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    HOME_ENV,
    CAError,
    CertificateAuthority,
    default_dir,
    trust_hints,
)


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CertificateAuthority]:
    authority = CertificateAuthority(tmp_path / "home")
    yield authority
    authority.close()


def test_created_on_first_use_key_0600(tmp_path: Path) -> None:
    """The directory and both files appear on first use; the key file is mode 0600."""
    home = tmp_path / "cs"
    ca = CertificateAuthority(home)
    ca.close()
    assert stat.S_IMODE((home / CA_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((home / CA_CERT_FILE).read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_key_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """A umask of 000 does not widen the key file's mode."""
    old = os.umask(0)
    try:
        ca = CertificateAuthority(tmp_path / "cs")
        ca.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600


def test_second_use_loads_the_same_ca(ca: CertificateAuthority) -> None:
    """Opening the directory again gives the same certificate, not a new CA."""
    again = CertificateAuthority(ca.directory)
    again.close()
    assert again.cert_pem() == ca.cert_pem()
    assert again.spki_pin() == ca.spki_pin()


def test_readable_key_is_refused(ca: CertificateAuthority) -> None:
    """A key file others can read is refused with a message naming it and the fix."""
    ca.key_path.chmod(0o644)
    with pytest.raises(CAError, match=r"ca-key\.pem: mode 644 .*chmod 600"):
        CertificateAuthority(ca.directory)


def test_half_a_ca_is_refused(ca: CertificateAuthority) -> None:
    """A directory with the certificate but no key says what is missing."""
    ca.key_path.unlink()
    with pytest.raises(CAError, match=r"ca-key\.pem: missing"):
        CertificateAuthority(ca.directory)


def test_key_of_another_ca_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    """A key that does not belong to the certificate is refused, and never printed."""
    other = CertificateAuthority(tmp_path / "other")
    other.close()
    ca.key_path.write_bytes(other.key_path.read_bytes())
    with pytest.raises(CAError) as info:
        CertificateAuthority(ca.directory)
    assert "not the key of" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_default_dir_follows_the_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$CHAOSSTREAM_HOME moves the CA; without it the CA lives in ~/.chaosstream."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "x"))
    assert default_dir() == tmp_path / "x"
    monkeypatch.delenv(HOME_ENV)
    assert default_dir() == Path.home() / ".chaosstream"


def test_leaf_has_what_strict_verifiers_ask(ca: CertificateAuthority) -> None:
    """A leaf names its host in the SAN, is serverAuth, not a CA, valid under 398 days."""
    leaf = x509.load_pem_x509_certificate(ca.leaf_pem("api.openai.com"))
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days < 398
    ip_leaf = x509.load_pem_x509_certificate(ca.leaf_pem("127.0.0.1"))
    ips = ip_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in ips.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_contexts_are_cached_per_host(ca: CertificateAuthority) -> None:
    """The same host gets the same context; another host gets its own."""
    a = ca.context_for("api.openai.com")
    assert ca.context_for("API.OpenAI.com.") is a
    assert ca.context_for("api.anthropic.com") is not a


def test_spki_pin_is_the_ca_keys_hash(ca: CertificateAuthority) -> None:
    """The pin is base64 SHA-256 of the CA's SubjectPublicKeyInfo, as Chromium expects."""
    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca.spki_pin() == base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_a_client_trusting_the_ca_verifies_a_leaf(ca: CertificateAuthority) -> None:
    """A TLS handshake with a minted leaf passes Python's verification with the CA alone,
    hostname checked, VERIFY_X509_STRICT on (Python 3.13's default); the certificate
    follows the client's SNI; a client without the CA refuses it."""

    async def serve(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello")
        await w.drain()
        w.close()

    server = await asyncio.start_server(
        serve, "127.0.0.1", 0, ssl=ca.context_for("api.anthropic.com")
    )
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        for name in ("api.anthropic.com", "api.openai.com"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname=name
            )
            assert await reader.read() == b"hello"
            peer = writer.get_extra_info("ssl_object").getpeercert()
            assert ("DNS", name) in peer["subjectAltName"]
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(), server_hostname="x.test"
            )
    finally:
        server.close()
        await server.wait_closed()


def test_trust_hints_cover_every_client_and_never_the_key(ca: CertificateAuthority) -> None:
    """The hints name each client's variable or step and the certificate, never the key."""
    text = trust_hints(ca)
    for word in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "curl",
        "--ignore-certificate-errors-spki-list=" + ca.spki_pin(),
        "Android",
        "simctl",
        str(ca.cert_path),
    ):
        assert word in text
    assert "PRIVATE KEY" not in text


def test_bundle_is_the_ca_plus_the_system_roots(ca: CertificateAuthority) -> None:
    """ca-bundle.pem starts with the CA and holds more roots after it, so a client given it
    as SSL_CERT_FILE still verifies the hosts that are tunnelled."""
    data = ca.bundle().read_bytes()
    assert data.startswith(ca.cert_pem())
    assert data.count(b"BEGIN CERTIFICATE") > 10
    assert ssl.create_default_context(cafile=str(ca.bundle())).cert_store_stats()["x509_ca"] > 10
