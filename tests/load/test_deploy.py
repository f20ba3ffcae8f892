"""deploy/load/: the Kubernetes recipe for a Locust master and workers, checked by parsing.

No cluster runs here, so the manifests are proven consistent instead: each
container's args parse with chaosstream's own CLI, the workers find the master's
Service on its port, master and workers run the same mix, the upstream is a Service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chaosstream.cli.commands import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "load"


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _find(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def _params(args: list[str]) -> dict[str, Any]:
    """Parse a container's args with the real `chaosstream` command line."""
    group = cli.make_context("chaosstream", list(args), resilient_parsing=True)
    sub = cli.get_command(group, args[0])
    assert sub is not None, args[0]
    return sub.make_context(args[0], list(args[1:])).params


def _args(workload: dict[str, Any]) -> list[str]:
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_every_command_parses() -> None:
    """Every container's args are a valid chaosstream command line."""
    for doc in _docs():
        if doc["kind"] in ("Job", "Deployment"):
            assert _params(_args(doc))


def test_workers_find_the_master() -> None:
    """Workers name the master's Service and port; the Service selects the master Job's pod."""
    master = _find("Job", "chaosstream-load-master")
    service = _find("Service", "chaosstream-load-master")
    workers = _find("Deployment", "chaosstream-load-worker")
    m, w = _params(_args(master)), _params(_args(workers))
    assert m["master"] and w["worker"]
    assert w["master_host"] == service["metadata"]["name"]
    assert m["master_port"] == w["master_port"] in [p["port"] for p in service["spec"]["ports"]]
    labels = master["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert m["expect_workers"] <= workers["spec"]["replicas"]
    assert m["mix"] == w["mix"]


def test_upstream_is_the_mock_service() -> None:
    """The workers' --upstream is the mock's Service on the port the mock listens on."""
    w = _params(_args(_find("Deployment", "chaosstream-load-worker")))
    mock = _params(_args(_find("Deployment", "chaosstream-mock")))
    service = _find("Service", "chaosstream-mock")
    assert w["upstream"] == f"http://{service['metadata']['name']}:{mock['port']}"
    assert service["spec"]["ports"][0]["targetPort"] == mock["port"]
