"""Scenario files (contract: DESIGN.md, "Scenarios", version 1).

A scenario names a profile (built-in, file, or an inline mapping), the
expectations the client must meet under it, and how long it may take::

    version: 1
    command: ["python", "my_client.py"]
    scenarios:
      - name: overloaded
        profile: overloaded-api
        expect:
          - retries: {max_attempts: 5}
          - completes: {}
        timeout_s: 60

Every error names the file, the line and the field, inline profiles included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from chaosstream.faults.profile import Profile, load_profile
from chaosstream.yamlfile import InputError, cut, did_you_mean, parse_yaml, read_text, validate

__all__ = [
    "DEFAULT_STOP_AFTER_MS",
    "EXPECTATIONS",
    "AppServer",
    "BrowserClient",
    "BrowserSpec",
    "CompletesOptions",
    "ErrorSignal",
    "Expect",
    "FlagsIncompleteOptions",
    "NoOptions",
    "RetriesOptions",
    "Scenario",
    "ScenarioFile",
    "Selectors",
    "StableLayoutOptions",
    "Suite",
    "load_scenarios",
]

ExpectName = Literal[
    "surfaces_error",
    "retries",
    "falls_back",
    "resumes",
    "reinitializes",
    "completes",
    "flags_incomplete",
    "cancels_upstream",
    "shows_typing",
    "stable_layout",
    "resilient",
]
EXPECTATIONS: tuple[str, ...] = ExpectName.__args__  # type: ignore[attr-defined]


DEFAULT_STOP_AFTER_MS = 200.0
"""A page run clicks Stop this long after the first text when ``cancels_upstream`` is expected."""


def _testid(name: str) -> str:
    return f'[data-testid="{name}"]'


class Selectors(BaseModel):
    """CSS selectors of the page's parts.

    A selector left out is the reference page's ``data-testid`` when the page has
    one, else the part is found the way a person would (docs/web-app.md, "Which
    elements"): the focused or only text field, the form's submit button (or Enter),
    the last text block that grew after Send as the output, ``role=alert`` or
    error words for the error, ``aria-busy``/``role=status`` for typing.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input: str = Field(_testid("input"), description="The prompt field.")
    send: str = Field(_testid("send"), description="The button that sends the prompt.")
    output: str = Field(_testid("output"), description="Where the answer is rendered.")
    error: str = Field(_testid("error"), description="The error notice.")
    retry: str = Field(_testid("retry"), description="The Retry button.")
    stop: str = Field(_testid("stop"), description="The Stop button.")
    typing: str = Field(_testid("typing"), description="The typing indicator.")


class BrowserClient(BaseModel):
    """A chat page as the client under test."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(
        "/",
        description="Page URL: a path is taken relative to the proxy; {proxy} is replaced "
        "by the proxy's base URL (e.g. http://localhost:3000/?api={proxy}).",
    )
    prompt: str = Field("Why do streams break on mobile networks?", min_length=1)
    selectors: Selectors = Field(default_factory=Selectors)
    stop_after_ms: float | None = Field(
        None,
        ge=0,
        description="Click Stop this long after the first answer text appears "
        f"(default {DEFAULT_STOP_AFTER_MS:g} ms when cancels_upstream is expected).",
    )
    settle_ms: float = Field(
        2000.0,
        gt=0,
        description="A page without a data-state on its output counts as settled once "
        "nothing changed and no request was in flight for this long.",
    )


class BrowserSpec(BaseModel):
    """``client: {browser: {...}}`` in a scenario."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    browser: BrowserClient = Field(default_factory=BrowserClient)


class StableLayoutOptions(BaseModel):
    """Options of ``stable_layout``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_cls: float = Field(
        0.1, ge=0, description="Highest cumulative layout shift allowed (0.1 is Web Vitals 'good')."
    )


class NoOptions(BaseModel):
    """An expectation without options: ``completes: {}``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CompletesOptions(BaseModel):
    """Options of ``completes``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    accept_stop: bool = Field(
        False,
        description="Count an answer stopped by length, a content filter or a refusal "
        "(the `content` fault) as complete; by default it is not.",
    )


def _regex(pattern: str) -> str:
    # Compiled when the file loads, so a pattern that cannot compile is bad input
    # (file:line: field, exit 2) instead of a re.error after the client has run.
    # The verifier searches with re.MULTILINE; the flag does not change what compiles.
    try:
        re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise ValueError(f"not a regular expression ({e})") from None
    return pattern


Regex = Annotated[str, AfterValidator(_regex)]
"""A Python regular expression, checked when the file loads."""


INCOMPLETE_WORDS = (
    r"(?i)\b(length|max[_ ]?tokens|truncat\w*|incomplete|cut off|content[_ ]?filter\w*"
    r"|refus\w*|stopped|unfinished)\b"
)
"""What a client may print (stdout or stderr) to tell its user the answer is not whole."""


class FlagsIncompleteOptions(BaseModel):
    """Options of ``flags_incomplete``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pattern: Regex = Field(
        INCOMPLETE_WORDS,
        description="Regular expression on the client's stdout and stderr that counts as "
        "telling the user (a non-zero exit code counts too).",
    )


class RetriesOptions(BaseModel):
    """Options of ``retries``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_attempts: int = Field(
        5, ge=1, description="More equivalent requests than this is a retry storm."
    )
    within_s: float = Field(
        30.0, gt=0, description="The retry must start within this many seconds of the failure."
    )


def _expect_item(value: Any) -> Any:
    # `- completes` is shorthand for `- completes: {}`; `null` options mean none.
    if isinstance(value, str):
        value = {value: {}}
    if isinstance(value, dict):
        unknown = [k for k in value if k not in EXPECTATIONS]
        if unknown:
            hint = did_you_mean(unknown[0], EXPECTATIONS)
            raise ValueError(
                f"unknown expectation {cut(unknown[0])!r}{hint} (one of {', '.join(EXPECTATIONS)})"
            )
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class Expect(BaseModel):
    """One expectation: exactly one of these keys, with its options."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    surfaces_error: NoOptions | None = None
    retries: RetriesOptions | None = None
    falls_back: NoOptions | None = None
    resumes: NoOptions | None = None
    reinitializes: NoOptions | None = Field(
        None,
        description="(MCP) after a 404 for an expired session the client starts a new "
        "session (a fresh `initialize`) instead of failing or retrying the dead one.",
    )
    # NoOptions too: `completes` took no options before `accept_stop`, and callers build it so.
    completes: CompletesOptions | NoOptions | None = Field(None, union_mode="left_to_right")
    flags_incomplete: FlagsIncompleteOptions | None = Field(
        None,
        description="An answer stopped by length, a content filter or a refusal is not "
        "presented as complete: the client tells its user.",
    )
    cancels_upstream: NoOptions | None = None
    shows_typing: NoOptions | None = None
    stable_layout: StableLayoutOptions | None = None
    resilient: NoOptions | None = Field(
        None,
        description="The battery's rule (what `check` judges): completes or surfaces the "
        "error, never truncated text as complete, no retry storm, never sooner than "
        "Retry-After.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Expect:
        given = [n for n in EXPECTATIONS if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one expectation per entry, one of {', '.join(EXPECTATIONS)}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def name(self) -> str:
        """The expectation's name."""
        return next(n for n in EXPECTATIONS if getattr(self, n) is not None)

    @property
    def options(self) -> BaseModel:
        """The expectation's options."""
        value: BaseModel = getattr(self, self.name)
        return value


class ErrorSignal(BaseModel):
    """How the client signals a failure, when not (only) by a non-zero exit code.

    Every given field must hold: a regex found in stderr, one found in stdout,
    an exact exit code.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stderr_regex: Regex | None = None
    stdout_regex: Regex | None = None
    exit_code: int | None = None


class Scenario(BaseModel):
    """One run of the client under one profile."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    profile: str | dict[str, Any] = Field(
        description="Built-in profile name, profile file path, or an inline profile mapping."
    )
    expect: list[Annotated[Expect, BeforeValidator(_expect_item)]] = Field(
        default_factory=list,
        description="Expectations the client must meet; none given (left out, empty or null) "
        "means `[resilient]`, the battery's rule.",
    )
    timeout_s: float = Field(60.0, gt=0, description="Kill the client after this long (a hang).")
    error_signal: ErrorSignal | None = None
    seed: int | None = Field(None, description="Override the profile's seed.")
    client: BrowserSpec | None = Field(
        None, description="A page to drive instead of the command: {browser: {url, prompt, ...}}."
    )

    @model_validator(mode="before")
    @classmethod
    def _null_expect(cls, data: Any) -> Any:
        # `expect:` with nothing after it is YAML null: no expectations, as when left out.
        if isinstance(data, dict) and "expect" in data and data["expect"] is None:
            data = {k: v for k, v in data.items() if k != "expect"}
        return data

    @model_validator(mode="after")
    def _default_expect(self) -> Scenario:
        # A scenario with no expectation would pass on no evidence at all (every verdict
        # of none passes): judge it by the battery's rule instead.
        if not self.expect:
            self.expect = [Expect(resilient=NoOptions())]
        return self

    @model_validator(mode="after")
    def _page_only(self) -> Scenario:
        page_only = [e.name for e in self.expect if e.name in ("shows_typing", "stable_layout")]
        if page_only and self.client is None:
            raise ValueError(
                f"{', '.join(page_only)} can only be judged on a page: add client: {{browser: ...}}"
            )
        return self


class AppServer(BaseModel):
    """``server:`` -- the user's own app server, between the page and the model (two hops).

    The page is driven through a browser-side proxy in front of this server, and
    the server gets the model-side proxy's address in its environment
    (``OPENAI_BASE_URL`` ..., as a client command does) plus ``PORT``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    command: list[str] | None = Field(
        None, min_length=1, description="Start the app with this command (killed at the end)."
    )
    url: str | None = Field(
        None,
        description="An app already running at this base URL (it must read the model "
        "proxy's address, so fix that port with --model-listen).",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The port the command's app listens on, given to it "
        "as PORT (default: a free port).",
    )
    ready: str = Field(
        "/",
        description="A URL or path on the app that answers (any status below 500) once "
        "it is ready.",
    )
    ready_timeout_s: float = Field(60.0, gt=0, description="How long the app may take to start.")

    @model_validator(mode="after")
    def _one_way(self) -> AppServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (start the app) or url (running app)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        return self


class ScenarioFile(BaseModel):
    """A scenario file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1]
    command: list[str] | None = Field(None, min_length=1)
    server: AppServer | None = Field(
        None,
        description="The user's app server: pages are driven through it, with faults "
        "on either hop (a fault's `hop`).",
    )
    scenarios: list[Scenario] = Field(min_length=1)


@dataclass(slots=True)
class Suite:
    """A loaded scenario file: scenarios with their profiles resolved."""

    source: str
    command: list[str] | None
    scenarios: list[Scenario]
    profiles: list[Profile]
    server: AppServer | None = None


def _node(root: yaml.Node | None, *path: str | int) -> yaml.Node | None:
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            # The last entry wins, as in the data (explicit keys follow merged ones).
            node = next((v for k, v in reversed(node.value) if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            return None
    return node


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _resolve_profile(
    spec: str | dict[str, Any], index: int, source: str, base: Path, root: yaml.Node | None
) -> Profile:
    where = f"scenarios[{index}].profile"
    node = _node(root, "scenarios", index, "profile")
    if isinstance(spec, dict):
        try:
            return validate(Profile, spec, source, node)
        except InputError as e:
            # Point each message at the inline profile inside the scenario file.
            lines = []
            for msg in str(e).splitlines():
                head, sep, rest = msg.partition(": ")
                lines.append(f"{head}{sep}{where}.{rest}" if sep else msg)
            raise InputError("\n".join(lines)) from None
    candidate = base / spec
    name = str(candidate) if ("/" in spec or spec.endswith((".yaml", ".yml"))) else spec
    try:
        return load_profile(name)
    except InputError as e:
        raise InputError(f"{source}:{_line(node)}: {where}: {e}") from None


def load_scenarios(path: str | Path) -> Suite:
    """Load and check a scenario file; profile paths are relative to the file."""
    text = read_text(path)
    source = str(path)
    data, root = parse_yaml(text, source)
    model = validate(ScenarioFile, data, source, root)
    names: set[str] = set()
    for i, scenario in enumerate(model.scenarios):
        if scenario.name in names:
            node = _node(root, "scenarios", i, "name")
            raise InputError(
                f"{source}:{_line(node)}: scenarios[{i}].name: "
                f"duplicate scenario name {cut(scenario.name)!r}"
            )
        names.add(scenario.name)
    base = Path(path).parent
    profiles = [
        _resolve_profile(s.profile, i, source, base, root) for i, s in enumerate(model.scenarios)
    ]
    return Suite(source, model.command, model.scenarios, profiles, model.server)
