"""Profiles: YAML -> typed, validated fault plans (contract: DESIGN.md, version 1)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chaosstream.faults import AnyFault, Fault
from chaosstream.faults.network import Network, network_faults
from chaosstream.faults.toxiproxy_section import ToxiproxySection
from chaosstream.yamlfile import InputError, cut, did_you_mean, load_file, load_text, validate

PROFILE_DIR = resources.files("chaosstream") / "profiles"


class Profile(BaseModel):
    """A named set of network conditions and faults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = Field(description="Profile format version; always 1.")
    name: str = Field(description="Short name, shown in reports.")
    description: str = Field(
        "", description="What the profile simulates and where its numbers come from."
    )
    seed: int | None = Field(
        None,
        description="Seed for every random choice. Same seed + same request sequence = same "
        "faults. When absent a random seed is chosen and printed.",
    )
    network: Network | None = Field(None, description="Conditions that hold for every exchange.")
    faults: list[AnyFault] = Field(
        default_factory=list, description="Faults, each firing on its trigger."
    )
    toxiproxy: ToxiproxySection | None = Field(
        None,
        description="Toxics chaosstream adds to an external Toxiproxy server at start "
        "and removes at exit.",
    )

    def all_faults(self) -> list[Fault]:
        """The faults to inject, network conditions first."""

        return [*network_faults(self.network), *self.faults]


def builtin_names() -> list[str]:
    """Names of the profiles shipped with chaosstream."""
    return sorted(
        p.name.removesuffix(".yaml") for p in PROFILE_DIR.iterdir() if p.name.endswith(".yaml")
    )


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file by path."""
    if (
        name_or_path.endswith((".yaml", ".yml"))
        or "/" in name_or_path
        or Path(name_or_path).is_file()
    ):
        return load_file(Profile, name_or_path)
    return load_builtin(name_or_path, "not a file and not a built-in")


def load_builtin(name: str, why: str = "not a built-in") -> Profile:
    """A built-in profile by name only: a file of that name nearby never stands in for it."""
    builtin = PROFILE_DIR / f"{name}.yaml"
    if not builtin.is_file():
        raise unknown_profile(name, why)
    return load_text(Profile, builtin.read_text(encoding="utf-8"), f"profiles/{name}.yaml")


def unknown_profile(name: str, why: str = "not a built-in") -> InputError:
    """The error for a profile name nobody knows, with the closest built-in suggested."""
    names = builtin_names()
    return InputError(
        f"unknown profile {cut(name)!r}: {why}{did_you_mean(name, names)} ({', '.join(names)})"
    )


def profile_from_data(data: Any, source: str) -> Profile:
    """A profile given inline (a scenario's mapping, a control-API body)."""
    return validate(Profile, data, source)


def profile_from_text(text: str, source: str) -> Profile:
    """A profile from YAML (or JSON) text, under the file rules: the size cap
    (``CHAOSSTREAM_MAX_INPUT_BYTES``, 1 MiB by default), no duplicate keys, errors
    with ``source`` and line. Synchronous and pure: a server runs it off its event loop."""
    return load_text(Profile, text, source)


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of a profile file, for editors and docs."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "chaosstream profile"
    return schema


def schema_json() -> str:
    return json.dumps(profile_schema(), indent=2, sort_keys=False)
