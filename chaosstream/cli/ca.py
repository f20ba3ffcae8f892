"""The ``ca`` command: where the intercepting proxy's CA is, its certificate, how to trust it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from chaosstream.cli.args import BadInput

if TYPE_CHECKING:
    from chaosstream.proxy.ca import CertificateAuthority

__all__ = ["ca", "ca_dir_option", "open_ca"]

ca_dir_option = click.option(
    "--ca-dir",
    metavar="DIR",
    default=None,
    envvar="CHAOSSTREAM_HOME",
    help="Folder of the intercepting proxy's CA (made on first use; key mode 0600). "
    "[default: ~/.chaosstream; env: CHAOSSTREAM_HOME]",
)


def open_ca(ca_dir: str | None) -> CertificateAuthority:
    """The CA in ``ca_dir`` (default ``~/.chaosstream``), made there on first use; a
    problem with the folder or its files is bad input (exit 2, the path named)."""
    # cryptography is imported here, not at --help.
    from chaosstream.proxy.ca import CAError, CertificateAuthority

    try:
        return CertificateAuthority(ca_dir)
    except CAError as e:
        raise BadInput(str(e)) from None


@click.group()
def ca() -> None:
    """The local CA of `proxy --mode intercept`: where it is, its certificate, how to trust it.

    The CA is made on first use. Its private key never leaves the folder (mode 0600)
    and is never printed: only the certificate is.
    """


@ca.command("path")
@ca_dir_option
def ca_path(ca_dir: str | None) -> None:
    """Print the path of the CA certificate (PEM), making the CA if there is none."""
    authority = open_ca(ca_dir)
    authority.close()
    click.echo(str(authority.cert_path))


@ca.command("export")
@ca_dir_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pem", "der", "spki"]),
    default="pem",
    show_default=True,
    help="pem or der: the certificate; spki: the SPKI pin for Chromium's "
    "--ignore-certificate-errors-spki-list.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write here instead of stdout.",
)
def ca_export(ca_dir: str | None, fmt: str, out: str | None) -> None:
    """Print the CA certificate (never its key) to stdout or --out."""
    from cryptography.hazmat.primitives import serialization

    authority = open_ca(ca_dir)
    authority.close()
    data: Any
    if fmt == "pem":
        data = authority.cert_pem()
    elif fmt == "der":
        data = authority.cert.public_bytes(serialization.Encoding.DER)
    else:
        data = (authority.spki_pin() + "\n").encode()
    if out is None:
        click.get_binary_stream("stdout").write(data)
        return
    try:
        with open(out, "wb") as f:
            f.write(data)
    except OSError as e:
        raise BadInput(f"--out {out}: {e.strerror or e}") from None


@ca.command("trust-hints")
@ca_dir_option
def ca_trust_hints(ca_dir: str | None) -> None:
    """How to trust the CA from Python, Node, curl, Chromium, an Android emulator, iOS."""
    from chaosstream.proxy.ca import trust_hints

    authority = open_ca(ca_dir)
    authority.close()
    click.echo(trust_hints(authority), nl=False)
