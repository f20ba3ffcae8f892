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
    EndMode,
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
from chaosstream.faults.buffer import Buffer
from chaosstream.faults.compress import Gzip
from chaosstream.faults.concurrency_limit import ConcurrencyLimit
from chaosstream.faults.content import Content
from chaosstream.faults.corrupt import Corrupt
from chaosstream.faults.disconnect import Disconnect
from chaosstream.faults.http_error import HttpError
from chaosstream.faults.latency import Latency
from chaosstream.faults.loss import Loss
from chaosstream.faults.noop import Noop
from chaosstream.faults.polite_close import PoliteClose
from chaosstream.faults.session_expiry import SessionExpiry
from chaosstream.faults.stream_error import StreamError
from chaosstream.faults.throttle import Throttle

FAULT_TYPES: tuple[type[Fault], ...] = (
    Latency,
    Throttle,
    Loss,
    Disconnect,
    HttpError,
    StreamError,
    Corrupt,
    Content,
    Buffer,
    Gzip,
    ConcurrencyLimit,
    PoliteClose,
    SessionExpiry,
    Noop,
)
"""Every built-in fault type, in the order the docs list them."""

AnyFault = Annotated[
    Union[  # noqa: UP007 -- keep one line per family as the list grows
        Latency,
        Throttle,
        Loss,
        Disconnect,
        HttpError,
        StreamError,
        Corrupt,
        Content,
        Buffer,
        Gzip,
        ConcurrencyLimit,
        PoliteClose,
        SessionExpiry,
        Noop,
    ],
    Field(discriminator="type"),
]
"""A fault entry of a profile, chosen by its ``type`` field."""

REGISTRY: dict[str, type[Fault]] = {cls.model_fields["type"].default: cls for cls in FAULT_TYPES}

__all__ = [
    "FAULT_TYPES",
    "REGISTRY",
    "AnyFault",
    "Buffer",
    "Chunk",
    "Clock",
    "ConcurrencyLimit",
    "Content",
    "Corrupt",
    "Disconnect",
    "EndMode",
    "Fault",
    "FaultContext",
    "FaultEvent",
    "Gzip",
    "HttpError",
    "Latency",
    "Loss",
    "Match",
    "Noop",
    "PoliteClose",
    "Refusal",
    "Refuses",
    "RequestInfo",
    "SessionExpiry",
    "StreamEnd",
    "StreamError",
    "SystemClock",
    "Throttle",
    "Uploads",
    "Window",
]
