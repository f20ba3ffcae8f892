"""deploy/ (Kubernetes manifests, Helm chart), the Dockerfile's --workers and action.yml: parsed,
rendered and checked against the real CLI.

No cluster, Helm or Actions runner is here (Helm is not in the package registries this
project installs from), so the chart is rendered by :func:`render`, which knows exactly the
template forms the chart uses and fails on any other; the results are then checked like
the plain manifests: kinds, selectors, ports, probes on ``/~health``, and container
arguments parsed by chaosstream's own CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from chaosstream.cli.commands import cli
from chaosstream.cli.workers import HEALTH_PATH
from chaosstream.faults.profile import load_profile
from chaosstream.integrations.control import check_bind

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "deploy" / "helm" / "chaosstream"


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    value: Any = scope
    for part in path.strip(".").split("."):
        value = value[part]
    return value


def render(template: str, values: dict[str, Any], release: str = "rel") -> str:
    """The chart's template forms: ``{{ .X.y }}``, ``| quote``, ``toYaml … | nindent N``,
    ``{{- if .X }}…{{- end }}``; anything else raises (so the test never passes by skipping)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    scope = {
        "Values": values,
        "Release": {"Name": release},
        "Chart": {"Name": chart["name"], "Version": chart["version"]},
    }

    def cond(m: re.Match[str]) -> str:
        return m.group(2) if _lookup(m.group(1), scope) else ""

    text = re.sub(
        r"[ \t]*\{\{- if (\.[\w.]+) \}\}\n(.*?)[ \t]*\{\{- end \}\}\n", cond, template, flags=re.S
    )

    def action(m: re.Match[str]) -> str:
        expr, line_start = m.group(2).strip(), m.group(1)
        found = re.fullmatch(r"toYaml (\.[\w.]+) \| nindent (\d+)", expr)
        if found:
            dumped = yaml.safe_dump(_lookup(found.group(1), scope), sort_keys=False).rstrip()
            pad = " " * int(found.group(2))
            return "\n" + "\n".join(pad + line for line in dumped.splitlines())
        found = re.fullmatch(r"(\.[\w.]+) \| quote", expr)
        if found:
            return line_start + json.dumps(str(_lookup(found.group(1), scope)))
        found = re.fullmatch(r"\.[\w.]+", expr)
        if found:
            return line_start + str(_lookup(expr, scope))
        raise AssertionError(f"template form not understood: {expr!r}")

    text = re.sub(r"([ \t]*)\{\{-? (.*?) \}\}", lambda m: action(m), text)
    # `{{-` trims the whitespace before it, newline included.
    return text


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def manifests() -> list[dict[str, Any]]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in _docs(f.read_text())]


def chart(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    merged.update(values or {})
    return [
        d
        for f in sorted((CHART / "templates").glob("*.yaml"))
        for d in _docs(render(f.read_text(), merged))
    ]


def parse_args(args: list[str]) -> click.Context:
    name, *rest = args
    return cli.commands[name].make_context(name, list(rest))


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("source", ["manifests", "chart"])
def test_deployment_runs_workers_with_probes_on_health(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployment, Service and ConfigMap agree: selectors, named ports, /~health probes,
    arguments the CLI accepts with --workers, profiles that load, a token for the control port."""
    docs = _by_kind(manifests() if source == "manifests" else chart())
    assert set(docs) == {"Deployment", "Service", "ConfigMap"}
    deploy, service, config = docs["Deployment"], docs["Service"], docs["ConfigMap"]
    spec = deploy["spec"]
    assert spec["replicas"] == 1  # a scope must stay on one pod
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(named)
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == HEALTH_PATH and get["port"] == "proxy"
    ctx = parse_args(container["args"])
    assert ctx.params["workers"] >= 2
    assert ctx.params["listen"][1] == named["proxy"]
    assert ctx.params["control"][1] == named["control"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["CHAOSSTREAM_CONTROL_TOKEN"]["valueFrom"]
    check_bind(ctx.params["control"][0], "a-token")  # exposed, so only with the token
    # The profile named is a file of the mounted ConfigMap, and it loads.
    (mount,) = container["volumeMounts"]
    (volume,) = spec["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    profile = Path(ctx.params["profile_name"])
    assert profile.parent == Path(mount["mountPath"]) and profile.name in config["data"]
    (tmp_path / profile.name).write_text(config["data"][profile.name])
    assert load_profile(str(tmp_path / profile.name)).faults


def test_chart_values_reach_the_rendered_deployment() -> None:
    """workers, image and upstream from values land in the Deployment (upstream only if set)."""
    plain = _by_kind(chart())["Deployment"]
    (c,) = plain["spec"]["template"]["spec"]["containers"]
    assert "--upstream" not in c["args"]
    docs = _by_kind(
        chart(
            {
                "workers": 4,
                "upstream": "http://model:8000",
                "image": {
                    "repository": "ghcr.io/x/chaosstream",
                    "tag": "1.2",
                    "pullPolicy": "Always",
                },
            }
        )
    )
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    ctx = parse_args(c["args"])
    assert ctx.params["workers"] == 4 and ctx.params["upstream"] == "http://model:8000"
    assert c["image"] == "ghcr.io/x/chaosstream:1.2"


def test_render_refuses_what_it_does_not_know() -> None:
    """The stand-in renderer fails on a template form it does not implement."""
    with pytest.raises(AssertionError, match="not understood"):
        render('a: {{ include "x" . }}\n', {})


def test_dockerfile_runs_workers_and_checks_health() -> None:
    """The image's CMD runs --workers; its HEALTHCHECK asks /~health on the proxy port."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert parse_args(cmd).params["workers"] >= 2
    health = re.search(r"^HEALTHCHECK .*$", text, re.M)
    assert health is not None and f"8080{HEALTH_PATH}" in health.group(0)


def test_action_installs_runs_and_uploads_the_junit() -> None:
    """action.yml is a composite action: setup-python, pip install, chaosstream check/run with
    --junit, upload-artifact always; inputs reach scripts through env only."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert action["inputs"]["command"]["required"] is True
    steps = action["runs"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert uses[0].startswith("actions/setup-python@") and uses[-1].startswith(
        "actions/upload-artifact@"
    )
    assert steps[-1]["if"] == "always()"
    assert steps[-1]["with"]["path"] == "${{ inputs.junit }}"
    for step in steps:
        if "run" in step:
            assert step["shell"] == "bash"
            assert "${{" not in step["run"]  # no expression spliced into a script
            for value in step.get("env", {}).values():
                name = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)
                assert name is not None and name.group(1) in action["inputs"]
    script = steps[2]["run"]
    assert 'args=(check --junit "$JUNIT")' in script
    assert 'args=(run "$SCENARIO" --junit "$JUNIT")' in script
    assert 'chaosstream "${args[@]}" -- bash -c "$CLIENT_COMMAND"' in script
    # What the default inputs make of it parses with the real CLI.
    ctx = cli.commands["check"].make_context(
        "check", ["--junit", "chaosstream-junit.xml", "--", "bash", "-c", "python c.py"]
    )
    assert ctx.params


@pytest.mark.parametrize("source", ["manifests", "chart", "load"])
def test_every_object_is_valid_against_the_kubernetes_schema(source: str) -> None:
    """Each object (manifests, rendered chart, load cluster) passes the API schema, strictly."""
    import kubernetes_validate

    if source == "load":
        docs = [
            d
            for p in sorted((ROOT / "deploy" / "load").glob("*.yaml"))
            for d in _docs(p.read_text())
        ]
    else:
        docs = manifests() if source == "manifests" else chart()
    version = kubernetes_validate.latest_version()
    assert docs
    for doc in docs:
        # strict: an unknown or misspelt field is an error, as `kubectl --validate=strict` has it.
        kubernetes_validate.validate(doc, version, strict=True)
