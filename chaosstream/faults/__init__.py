"""The fault catalog: an explicit list of built-in fault types, keyed by ``type``.

To add a fault family: write one module with one :class:`Fault` subclass, then
add it to ``FAULT_TYPES`` and to the ``AnyFault`` union below.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from chaosstream.faults.base import (
    Chunk,
    Clock,
    Fault,
    FaultContext,
    FaultEvent,
    Match,
    Refusal,
    Refuses,
    RequestInfo,
    StreamEnd,
    SystemClock,
    Uploads,
    Window,
)
from chaosstream.faults.disconnect import Disconnect
from chaosstream.faults.latency import Latency
from chaosstream.faults.noop import Noop

FAULT_TYPES: tuple[type[Fault], ...] = (Noop, Latency, Disconnect)
"""Every built-in fault type, in the order the docs list them."""

AnyFault = Annotated[
    Union[Noop, Latency, Disconnect],  # noqa: UP007 -- keep one line per family as the list grows
    Field(discriminator="type"),
]
"""A fault entry of a profile, chosen by its ``type`` field."""

REGISTRY: dict[str, type[Fault]] = {cls.model_fields["type"].default: cls for cls in FAULT_TYPES}

__all__ = [
    "FAULT_TYPES",
    "REGISTRY",
    "AnyFault",
    "Chunk",
    "Clock",
    "Disconnect",
    "Fault",
    "FaultContext",
    "FaultEvent",
    "Latency",
    "Match",
    "Noop",
    "Refusal",
    "Refuses",
    "RequestInfo",
    "StreamEnd",
    "SystemClock",
    "Uploads",
    "Window",
]
