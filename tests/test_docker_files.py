"""Dockerfile and docker-compose.yml: parsed, every referenced file, port and command checked.

No Docker engine runs here, so the files are proven consistent instead: each
path a service mounts or copies exists, each command parses with chaosstream's
own CLI, and the ports wire client -> chaosstream -> Toxiproxy -> mock.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from chaosstream.cli.commands import cli
from chaosstream.faults.profile import load_profile
from chaosstream.integrations.control import check_bind
from chaosstream.mock import create_app

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def expand(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the environment empty: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, Any] = data["services"]
    return result


def instructions() -> list[tuple[str, str]]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]


def parse_command(args: list[str]) -> click.Context:
    """Parse a container command with the real CLI, as ``chaosstream ARGS`` would."""
    name, *rest = args
    command = cli.commands[name]
    return command.make_context(name, list(rest), resilient_parsing=False)


def published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> host address:port, from ``ports:`` entries."""
    out = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        out[int(container)] = host
    return out


def test_dockerfile_copies_existing_files_and_runs_the_cli() -> None:
    """Every COPY source exists; the entrypoint is the console script; CMD parses."""
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    for op, arg in steps:
        if op == "COPY":
            *sources, _dest = shlex.split(arg)
            for source in sources:
                assert (ROOT / source).exists(), source
    entry = json.loads(dict(steps)["ENTRYPOINT"])
    assert entry == ["chaosstream"]
    assert 'chaosstream = "chaosstream.cli:main"' in (ROOT / "pyproject.toml").read_text()
    cmd = json.loads(dict(steps)["CMD"])
    ctx = parse_command(cmd)
    assert ctx.params["listen"] == ("0.0.0.0", 8080)
    exposed = {int(p) for p in dict(steps)["EXPOSE"].split()}
    assert exposed == {8080, 9090, 8000}


def test_dockerignore_keeps_what_the_build_needs() -> None:
    """The build context keeps pyproject, README and the package."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "chaosstream"):
        assert needed not in ignored


def test_compose_has_the_three_services(services: dict[str, Any]) -> None:
    """mock, the official Toxiproxy image, and chaosstream in front, built from this repo."""
    assert set(services) == {"mock", "toxiproxy", "chaosstream"}
    assert re.fullmatch(r"ghcr\.io/shopify/toxiproxy:\d+\.\d+\.\d+", services["toxiproxy"]["image"])
    for name in ("mock", "chaosstream"):
        assert services[name]["build"] == "."
    assert DOCKERFILE.is_file()


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    """Every host path a service mounts exists."""
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = expand(volume).split(":")[0]
            assert (ROOT / host).exists(), f"{name}: {host}"


def test_commands_parse_with_the_real_cli(services: dict[str, Any]) -> None:
    """The mock and proxy commands use subcommands and flags chaosstream has."""
    mock = parse_command(services["mock"]["command"])
    assert (mock.params["host"], mock.params["port"]) == ("0.0.0.0", 8000)
    args = [expand(a) for a in services["chaosstream"]["command"]]
    proxy = parse_command(args)
    assert proxy.params["listen"] == ("0.0.0.0", 8080)
    assert proxy.params["control"] == ("0.0.0.0", 9090)


def test_profile_comes_from_the_mounted_folder(services: dict[str, Any]) -> None:
    """The --profile path lies in a mounted folder, and the file there is a valid profile."""
    args = [expand(a) for a in services["chaosstream"]["command"]]
    path = args[args.index("--profile") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["chaosstream"]["volumes"]}
    folder, _, filename = path.rpartition("/")
    assert folder in mounts, f"{path} is not in a mounted folder"
    host_file = ROOT / mounts[folder] / filename
    assert load_profile(str(host_file)).name == "midstream-reset"


def test_control_port_has_a_token(services: dict[str, Any]) -> None:
    """The control API listens beyond loopback, so the compose file sets the token."""
    service = services["chaosstream"]
    token = expand(service["environment"]["CHAOSSTREAM_CONTROL_TOKEN"])
    assert token
    args = service["command"]
    host = args[args.index("--control") + 1].rpartition(":")[0]
    check_bind(host, token)


def test_ports_wire_client_to_mock_through_toxiproxy(services: dict[str, Any]) -> None:
    """chaosstream's upstream is Toxiproxy's 'model' proxy, which forwards to the mock's port."""
    args = [expand(a) for a in services["chaosstream"]["command"]]
    upstream = args[args.index("--upstream") + 1]
    assert upstream == "http://toxiproxy:8001"
    config_mount = next(v for v in services["toxiproxy"]["volumes"] if "toxiproxy.json" in v)
    host_file, container_file = config_mount.split(":")[:2]
    assert f"-config={container_file}" in services["toxiproxy"]["command"]
    proxies = json.loads((ROOT / host_file).read_text())
    model = next(p for p in proxies if p["listen"].endswith(":8001"))
    mock_host, mock_port = model["upstream"].split(":")
    assert mock_host == "mock" and int(mock_port) == 8000
    assert 8000 in published(services["mock"])
    for port in (8080, 9090):
        assert published(services["chaosstream"])[port] == "127.0.0.1:" + str(port)
    assert published(services["toxiproxy"])[8474] == "127.0.0.1:8474"
    depends = services["chaosstream"]["depends_on"]
    assert set(depends) == {"mock", "toxiproxy"}


def test_mock_healthcheck_hits_a_real_route(services: dict[str, Any]) -> None:
    """The mock's healthcheck URL is a route the mock serves, on the port it listens on."""
    test = " ".join(services["mock"]["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", test)
    assert url is not None and int(url.group(1)) == 8000
    routes = {r.resource.canonical for r in create_app().router.routes() if r.resource is not None}
    assert url.group(2) in routes
