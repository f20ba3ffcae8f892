"""The intercepting proxy's local certificate authority: one CA on disk, leaf certificates
minted per host in memory.

The CA lives in the user's config directory (``~/.chaosstream/``, or
``$CHAOSSTREAM_HOME``, or a directory given on the command line): ``ca.pem`` is
the certificate a client is told to trust, ``ca-key.pem`` the private key,
created with mode 0600 and never logged or printed. Leaf certificates are
signed on demand for each intercepted host and cached as :class:`ssl.SSLContext`
objects; they share one per-process key, as mitmproxy's do (signing is cheap,
key generation is not).

Keys and certificates are made with ``cryptography``. The profiles follow what
the strictest verifiers ask (CPython 3.13's VERIFY_X509_STRICT, Apple's rules
for TLS server certificates, Chromium): a critical basicConstraints and
keyUsage on both, subject/authority key identifiers, a subjectAltName and the
serverAuth extended key usage on the leaf, and a leaf validity under 398 days.
No aiohttp here: the ``ca`` command uses it on its own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "HOME_ENV",
    "CAError",
    "CertificateAuthority",
    "default_dir",
    "trust_hints",
]

HOME_ENV = "CHAOSSTREAM_HOME"
"""Where the CA lives when no directory is given (default ``~/.chaosstream``)."""
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CA_BUNDLE_FILE = "ca-bundle.pem"
CA_NAME = "chaosstream local CA"
# Ten years: a QA machine should not have to re-trust a new CA every year. Leaves are short.
CA_DAYS = 3650
# Apple refuses TLS server certificates valid for more than 398 days (since 2020-09).
LEAF_DAYS = 397
# Clocks of emulators and CI machines drift: a certificate valid from "now" may look
# not-yet-valid to them.
BACKDATE = datetime.timedelta(days=1)
# Leaf contexts kept at once; a proxy intercepting more hosts mints the oldest again.
LEAF_CACHE = 256


class CAError(Exception):
    """The CA directory or its files cannot be used (message names the path)."""


def default_dir() -> Path:
    """``$CHAOSSTREAM_HOME`` when set, else ``~/.chaosstream``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".chaosstream"


class CertificateAuthority:
    """A CA certificate and key, loaded from ``directory`` or created there on first use."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_dir()
        self.cert_path = self.directory / CA_CERT_FILE
        self.key_path = self.directory / CA_KEY_FILE
        self._key, self.cert = self._load_or_create()
        # One key for every leaf of this process: EC P-256 keeps minting at about a
        # millisecond per host.
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaves: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()
        self._workdir = tempfile.TemporaryDirectory(prefix="chaosstream-leaf-")

    # -- the CA on disk ------------------------------------------------------

    def _load_or_create(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self.cert_path.exists() or self.key_path.exists():
            return self._load()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CAError(f"{self.directory}: cannot create the CA directory: {_why(e)}") from None
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_certificate(key)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            # O_EXCL: two processes starting at once must not overwrite each other's key.
            _write_new(self.key_path, key_pem, 0o600)
            _write_new(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        except FileExistsError:
            return self._load()  # the other process won: use its CA
        except OSError as e:
            raise CAError(f"{self.directory}: cannot write the CA: {_why(e)}") from None
        return key, cert

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        for path in (self.cert_path, self.key_path):
            if not path.is_file():
                raise CAError(
                    f"{path}: missing (the CA is half there: remove {self.directory} "
                    "to make a new one)"
                )
        mode = self.key_path.stat().st_mode & 0o777
        if mode & 0o077:
            # Like ssh with an id_rsa others can read: refuse rather than use a key that leaked.
            raise CAError(
                f"{self.key_path}: mode {mode:o} lets others read the CA key; "
                f"run: chmod 600 {self.key_path}"
            )
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as e:
            # Never the key's bytes in a message: only the file and what is wrong.
            raise CAError(f"{self.directory}: cannot read the CA: {_why(e)}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(key, cert):
            raise CAError(f"{self.key_path}: not the key of {self.cert_path}")
        return key, cert

    # -- what clients need ---------------------------------------------------

    def cert_pem(self) -> bytes:
        """The CA certificate in PEM: what a client adds to its trust store."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def spki_pin(self) -> str:
        """base64(SHA-256(SubjectPublicKeyInfo)) of the CA's key, for Chromium's
        ``--ignore-certificate-errors-spki-list``: Chromium accepts a chain when any
        certificate in it has a listed key, and every leaf is sent with the CA
        behind it. Stable for as long as the CA lives."""
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def bundle(self) -> Path:
        """``ca-bundle.pem`` beside the CA: its certificate plus the roots trusted already
        ($SSL_CERT_FILE, else certifi's, else the system's), for SSL_CERT_FILE and
        REQUESTS_CA_BUNDLE, which *replace* a client's trust store: tunnelled hosts still
        verify with it."""
        roots = b""
        # The roots the user already trusts come first (a corporate CA in SSL_CERT_FILE),
        # then certifi's, then the system's.
        places = [os.environ.get("SSL_CERT_FILE", "")]
        with contextlib.suppress(ImportError):
            import certifi

            places.append(certifi.where())
        places.append(ssl.get_default_verify_paths().cafile or "")
        for place in places:
            if place and Path(place).resolve() != (self.directory / CA_BUNDLE_FILE).resolve():
                with contextlib.suppress(OSError):
                    roots = Path(place).read_bytes()
                    break
        path = self.directory / CA_BUNDLE_FILE
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(self.cert_pem() + b"\n" + roots)
        tmp.replace(path)  # atomic: a client reading it never sees half a bundle
        return path

    # -- leaves ----------------------------------------------------------------

    def leaf_pem(self, host: str) -> bytes:
        """A certificate for ``host`` (a DNS name or an IP address) signed by the CA, in PEM."""
        return _leaf_certificate(self._key, self.cert, self._leaf_key, host).public_bytes(
            serialization.Encoding.PEM
        )

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``host``; cached per host."""
        host = host.lower().rstrip(".")
        with self._lock:
            ctx = self._leaves.get(host)
            if ctx is not None:
                self._leaves.move_to_end(host)
                return ctx
        ctx = self._mint(host)
        with self._lock:
            self._leaves[host] = ctx
            while len(self._leaves) > LEAF_CACHE:
                self._leaves.popitem(last=False)
        return ctx

    def _mint(self, host: str) -> ssl.SSLContext:
        chain = self.leaf_pem(host) + self.cert_pem()
        key = self._leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The proxy speaks HTTP/1.1 to clients: offering only it makes an h2-capable
        # client (Chromium, Node's undici with allowH2) fall back instead of failing.
        ctx.set_alpn_protocols(["http/1.1"])
        # The client's SNI names the host it will verify: when it differs from the CONNECT
        # target (a CONNECT to an address), present a certificate for that name.
        ctx.sni_callback = self._by_sni
        # ssl loads keys only from files: a private temporary directory, the files
        # removed as soon as they are read.
        fd, path = tempfile.mkstemp(dir=self._workdir.name, suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(chain + key)
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)
        return ctx

    def _by_sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            sslobj.context = self.context_for(name)

    def close(self) -> None:
        """Remove the temporary directory the leaves pass through."""
        self._workdir.cleanup()


def trust_hints(ca: CertificateAuthority) -> str:
    """How to make each kind of client trust the CA (the ``ca trust-hints`` text)."""
    pem = ca.cert_path
    return f"""\
The chaosstream CA certificate: {pem}
(its private key stays in {ca.key_path}, mode 0600: never copy it anywhere)

Python (requests, httpx, openai, anthropic, aiohttp with certifi):
  export SSL_CERT_FILE={pem} REQUESTS_CA_BUNDLE={pem}
  # SSL_CERT_FILE replaces the default bundle: only hosts chaosstream intercepts
  # verify then. `chaosstream run|check --intercept` sets both for you.
Node (openai, @anthropic-ai/sdk, fetch/undici >= 18):
  export NODE_EXTRA_CA_CERTS={pem}
curl:
  curl --proxy http://127.0.0.1:8080 --cacert {pem} https://api.openai.com/...
Chromium / Chrome (Playwright, --proxy-server):
  chromium --proxy-server=http://127.0.0.1:8080 \\
    --ignore-certificate-errors-spki-list={ca.spki_pin()}
  # or add {pem} under Settings > Privacy and security > Manage certificates.
Android emulator (user CAs are trusted by apps that opt in via network_security_config):
  adb push {pem} /sdcard/Download/chaosstream-ca.pem
  # Settings > Security > Encryption & credentials > Install a certificate > CA certificate
  emulator -avd NAME -http-proxy http://127.0.0.1:8080
  # the emulator's own proxy setting runs on the host, so loopback works; a phone needs
  # the proxy on a LAN address: --listen 0.0.0.0:8080 --token SECRET
iOS simulator:
  xcrun simctl keychain booted add-root-cert {pem}
  # the simulator uses the Mac's proxy settings: System Settings > Network > Proxies
"""


# -- certificates -------------------------------------------------------------


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chaosstream"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        # path_length 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    leaf_key: ec.EllipticCurvePrivateKey,
    host: str,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    san: x509.GeneralName
    try:
        san = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        san = x509.DNSName(host)
    # A CN is ignored by verifiers (RFC 6125: the SAN decides) but shown in tools.
    cn = host[:64]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        # Apple counts from notBefore: the backdated day is part of the 397.
        .not_valid_after(now - BACKDATE + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # The mode is set at creation: a key file is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have narrowed it; never widened for the key


def _same_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
    )


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e) or type(e).__name__).splitlines()[0][:200]
