"""Command-line values checked before anything starts: each bad one is one message, exit 2."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import trustme
from click.testing import CliRunner

from chaosstream.cli.args import (
    BadInput,
    ca_file_option,
    cut,
    cut_path,
    hostport_option,
    parse_hostport,
    upstream_option,
    upstream_url,
    writable_file_option,
)
from chaosstream.cli.commands import cli


@click.command()
@click.option("--upstream", callback=upstream_option)
@click.option("--listen", callback=hostport_option)
@click.option("--ca-file", callback=ca_file_option)
@click.option("--out", callback=writable_file_option)
def probe(
    upstream: str | None, listen: tuple[str, int] | None, ca_file: str | None, out: str | None
) -> None:
    """Echo what the callbacks let through."""
    click.echo(repr((upstream, listen, ca_file, out)))


def test_bad_listen_address_is_a_usage_error() -> None:
    """--listen must be HOST:PORT."""
    result = CliRunner().invoke(cli, ["proxy", "--listen", "nowhere"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "https://[::1]:8443/v1", "http://a_b:80/", "https://api.test."],
)
def test_good_upstreams_pass_unchanged(url: str) -> None:
    """http(s) URLs with an address, a bracketed IPv6, a compose-style name pass as given."""
    assert upstream_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "'ftp://x' is not an http:// or https:// URL"),
        ("http://", "'http://' names no host"),
        ("http://[::1", "'http://[::1' is not a valid URL: Invalid IPv6 URL"),
        ("http://127.0.0.1:99999", "is not a valid URL: Port out of range 0-65535"),
        ("http://exa mple.com", "'http://exa mple.com': 'exa mple.com' is not a host name"),
        ("http://-bad.com/", "'-bad.com' is not a host name or address"),
        ("http://h:0/", "'http://h:0/': port 0 cannot be connected to"),
    ],
)
def test_bad_upstreams_say_what_is_wrong(url: str, message: str) -> None:
    """Wrong scheme, no host, broken IPv6, port out of range, bad host, port 0: BadParameter."""
    with pytest.raises(click.BadParameter) as err:
        upstream_url(url)
    assert message in err.value.message


def test_long_bad_input_is_quoted_cut_short() -> None:
    """A 5,000-character URL is quoted to 80 characters and an ellipsis, not echoed whole."""
    assert cut("short") == "'short'"
    assert cut("x" * 100) == repr("x" * 80) + "…"
    with pytest.raises(click.BadParameter) as err:
        upstream_url("ftp://" + "x" * 5000)
    assert len(err.value.message) < 120 and "…" in err.value.message


def test_a_long_path_is_cut_from_its_start_keeping_the_file_name(tmp_path: Path) -> None:
    """A 200-character path to a missing CA file: the message keeps its end, the file
    name the user typed, and stays short."""
    deep = tmp_path / ("d" * 150) / "gone.pem"
    assert cut_path("short.pem") == "'short.pem'"
    assert cut_path(str(deep)) == "…" + repr(str(deep)[-80:])
    with pytest.raises(click.BadParameter) as err:
        ca_file_option(click.Context(click.Command("probe")), click.Option(["--x"]), str(deep))
    assert "d/gone.pem'" in err.value.message and len(err.value.message) < 140


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("[::1]:80", ("::1", 80)),
        (":8080", ("127.0.0.1", 8080)),
        ("8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_host_port_forms(value: str, parsed: tuple[str, int]) -> None:
    """HOST:PORT, [IPv6]:PORT, :PORT and PORT (loopback by default) all parse."""
    assert parse_hostport(value) == parsed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("host:x", "'host:x' is not HOST:PORT"),
        ("h:70000", "port 70000 is out of range 0-65535"),
        ("bad host:1", "'bad host' is not a host name or address"),
    ],
)
def test_bad_host_port_is_bad_parameter(value: str, message: str) -> None:
    """A port that is no number or out of range, or a bad host: the message names which."""
    with pytest.raises(click.BadParameter) as err:
        parse_hostport(value)
    assert err.value.message == message


def test_ca_file_must_hold_a_certificate(tmp_path: Path) -> None:
    """A real PEM CA passes; a text file and a missing file are refused, naming the file."""
    good = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(good))
    assert ca_file_option(click.Context(probe), probe.params[2], str(good)) == str(good)
    (tmp_path / "not.pem").write_text("hello, I am not a certificate\n")
    runner = CliRunner()
    text = runner.invoke(probe, ["--ca-file", str(tmp_path / "not.pem")])
    assert text.exit_code == 2 and "holds no usable PEM certificate" in text.output, text.output
    missing = runner.invoke(probe, ["--ca-file", str(tmp_path / "gone.pem")])
    assert missing.exit_code == 2 and "cannot read" in missing.output, missing.output
    assert "gone.pem" in missing.output


def test_output_file_needs_an_existing_folder_and_no_folder_in_its_place(tmp_path: Path) -> None:
    """An output file in a missing folder, or a path that is a folder, is refused before the run."""
    runner = CliRunner()
    fine = runner.invoke(probe, ["--out", str(tmp_path / "r.json")])
    assert fine.exit_code == 0 and repr(str(tmp_path / "r.json")) in fine.output, fine.output
    assert not (tmp_path / "r.json").exists()  # created only when written
    folder = runner.invoke(probe, ["--out", str(tmp_path)])
    assert folder.exit_code == 2 and "is a folder, not a file" in folder.output, folder.output
    missing = runner.invoke(probe, ["--out", str(tmp_path / "no" / "r.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.output, missing.output


def test_callbacks_pass_absent_options_and_name_the_flag() -> None:
    """Unset options stay None; a bad value is click's one `Invalid value for '--flag'` line."""
    runner = CliRunner()
    unset = runner.invoke(probe, [])
    assert unset.exit_code == 0 and unset.output == "(None, None, None, None)\n", unset.output
    good = runner.invoke(probe, ["--upstream", "http://127.0.0.1:9", "--listen", ":9"])
    assert good.output == "('http://127.0.0.1:9', ('127.0.0.1', 9), None, None)\n"
    bad = runner.invoke(probe, ["--upstream", "http://"])
    assert bad.exit_code == 2
    errors = [line for line in bad.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Invalid value for '--upstream': 'http://' names no host"], bad.output


def test_bad_input_exits_2_with_its_message_alone() -> None:
    """BadInput is a ClickException with exit code 2 and the message as given."""

    @click.command()
    def refuse() -> None:
        raise BadInput("scenarios.yaml:3: name: required field is missing")

    result = CliRunner().invoke(refuse, [])
    assert result.exit_code == 2
    assert result.output == "Error: scenarios.yaml:3: name: required field is missing\n"
