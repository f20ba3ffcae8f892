"""`chaosstream ca path|export|trust-hints` as a real process: the CA made once, its key kept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509

CLI = [sys.executable, "-m", "chaosstream", "ca"]


def ca(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CHAOSSTREAM_HOME": str(home)}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, timeout=60, check=False)


def test_path_makes_the_ca_once_with_a_private_key(tmp_path: Path) -> None:
    """`ca path` prints the certificate's path under $CHAOSSTREAM_HOME; the key is 0600 and
    the second call finds the same CA."""
    home = tmp_path / "home"
    first = ca(home, "path")
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode().strip() == str(home / "ca.pem")
    assert stat.S_IMODE((home / "ca-key.pem").stat().st_mode) == 0o600
    pem = (home / "ca.pem").read_bytes()
    assert ca(home, "path").returncode == 0
    assert (home / "ca.pem").read_bytes() == pem


def test_ca_dir_option_wins_over_the_env(tmp_path: Path) -> None:
    """--ca-dir names the folder even when $CHAOSSTREAM_HOME says another."""
    out = ca(tmp_path / "env", "path", "--ca-dir", str(tmp_path / "opt"))
    assert out.stdout.decode().strip() == str(tmp_path / "opt" / "ca.pem")
    assert not (tmp_path / "env").exists()


def test_export_prints_the_certificate_never_the_key(tmp_path: Path) -> None:
    """`ca export` prints the PEM certificate (or DER to --out, or the SPKI pin), no key."""
    home = tmp_path / "home"
    pem = ca(home, "export")
    assert pem.returncode == 0
    cert = x509.load_pem_x509_certificate(pem.stdout)
    assert b"PRIVATE KEY" not in pem.stdout + pem.stderr
    der_file = tmp_path / "ca.der"
    assert ca(home, "export", "--format", "der", "--out", str(der_file)).returncode == 0
    assert x509.load_der_x509_certificate(der_file.read_bytes()) == cert
    pin = ca(home, "export", "--format", "spki").stdout.decode().strip()
    assert len(pin) == 44 and pin.endswith("=")


def test_trust_hints_name_every_client(tmp_path: Path) -> None:
    """`ca trust-hints` covers Python, Node, curl, Chromium, Android and iOS, no key."""
    out = ca(tmp_path / "home", "trust-hints")
    text = out.stdout.decode()
    for word in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "curl", "spki-list", "adb", "simctl"):
        assert word in text
    assert "PRIVATE KEY" not in text


def test_unusable_ca_is_exit_2_with_the_path(tmp_path: Path) -> None:
    """A key others can read is refused: exit 2, one line naming the file, no traceback."""
    home = tmp_path / "home"
    assert ca(home, "path").returncode == 0
    (home / "ca-key.pem").chmod(0o644)
    out = ca(home, "export")
    assert out.returncode == 2
    assert str(home / "ca-key.pem") in out.stderr.decode()
    assert b"Traceback" not in out.stderr and b"PRIVATE KEY" not in out.stdout
