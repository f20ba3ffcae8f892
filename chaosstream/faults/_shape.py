"""Delays that behave like networks do: jitter distributions and time shapes.

Shared by ``latency`` and the ``network:`` block's link delay. The
distributions follow Linux netem's (``tc qdisc ... netem delay MU SIGMA
distribution normal|pareto|paretonormal``): netem draws from a table made by
iproute2's ``netem/maketable.c``, ``pareto.c`` (shape alpha 3) and
``paretonormal.c`` (a quarter normal, three quarters Pareto). Here every draw
comes from the exchange's seeded generator, so a seed replays the same delays.
"""

from __future__ import annotations

import math
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Distribution = Literal["uniform", "normal", "pareto", "pareto_normal"]

DISTRIBUTION_HELP = (
    "How jitter is drawn around the delay: `uniform` (+/- jitter_ms, flat, as netem's "
    "default), `normal` (standard deviation jitter_ms), `pareto` (netem's Pareto, shape "
    "3: mostly a little early, now and then far late; mean 0, standard deviation "
    "jitter_ms) or `pareto_normal` (netem's paretonormal: 1/4 normal + 3/4 Pareto, scaled "
    "to standard deviation jitter_ms). A delay never goes below zero, and bytes are "
    "never reordered."
)

_ALPHA = 3.0  # iproute2 netem/pareto.c: "static const double a = 3.0"
# Pareto(alpha, x_m=1): mean alpha/(alpha-1), variance alpha/((alpha-1)^2 (alpha-2)).
_P_MEAN = _ALPHA / (_ALPHA - 1)
_P_STD = math.sqrt(_ALPHA / ((_ALPHA - 1) ** 2 * (_ALPHA - 2)))
_MIX_STD = math.sqrt(0.25**2 + 0.75**2)  # of 1/4 N(0,1) + 3/4 P, both unit deviation


def _pareto(rng: random.Random) -> float:
    """A Pareto(3) variate moved to mean 0 and scaled to standard deviation 1."""
    return (rng.paretovariate(_ALPHA) - _P_MEAN) / _P_STD


def jitter(rng: random.Random, distribution: Distribution, sigma_ms: float) -> float:
    """One jitter draw in ms: what is added to the delay (may be negative)."""
    if sigma_ms <= 0:
        return 0.0
    if distribution == "uniform":
        return rng.uniform(-sigma_ms, sigma_ms)
    if distribution == "normal":
        return rng.gauss(0.0, sigma_ms)
    if distribution == "pareto":
        return sigma_ms * _pareto(rng)
    return sigma_ms * (0.25 * rng.gauss(0.0, 1.0) + 0.75 * _pareto(rng)) / _MIX_STD


class Shape(BaseModel):
    """A delay that changes with time: an extra delay added to every delay of the fault.

    `ramp` goes from `from_ms` to `to_ms` over `over_s` seconds, then holds
    (a network getting worse, or recovering); `sine` swings between 0 and
    `amplitude_ms` every `period_s` (a train passing cell towers); `sawtooth`
    climbs from 0 to `amplitude_ms` and drops back every `period_s` (a queue
    filling and draining, bufferbloat). Time counts from the proxy's start (or
    its last reset), so every exchange sees the same curve; a seed replays it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["ramp", "sine", "sawtooth"] = Field(..., description="ramp | sine | sawtooth.")
    from_ms: float = Field(0.0, ge=0, description="ramp: the extra delay at time 0.")
    to_ms: float | None = Field(None, ge=0, description="ramp: the extra delay it ends at.")
    over_s: float | None = Field(None, gt=0, description="ramp: how long the ramp takes.")
    period_s: float | None = Field(None, gt=0, description="sine, sawtooth: one cycle.")
    amplitude_ms: float | None = Field(
        None, ge=0, description="sine, sawtooth: the largest extra delay."
    )

    @model_validator(mode="after")
    def _fields_of_kind(self) -> Shape:
        if self.kind == "ramp":
            if self.to_ms is None or self.over_s is None:
                raise ValueError("a ramp needs to_ms and over_s")
            if self.period_s is not None or self.amplitude_ms is not None:
                raise ValueError("period_s and amplitude_ms belong to sine and sawtooth")
        else:
            if self.period_s is None or self.amplitude_ms is None:
                raise ValueError(f"{self.kind} needs period_s and amplitude_ms")
            if self.to_ms is not None or self.over_s is not None or self.from_ms:
                raise ValueError("from_ms, to_ms and over_s belong to ramp")
        return self

    def extra_ms(self, t_s: float) -> float:
        """The extra delay at ``t_s`` seconds since the proxy started."""
        t = max(0.0, t_s)
        if self.kind == "ramp":
            assert self.to_ms is not None and self.over_s is not None
            return self.from_ms + (self.to_ms - self.from_ms) * min(1.0, t / self.over_s)
        assert self.period_s is not None and self.amplitude_ms is not None
        phase = (t / self.period_s) % 1.0
        if self.kind == "sine":
            return self.amplitude_ms * (1.0 - math.cos(2.0 * math.pi * phase)) / 2.0
        return self.amplitude_ms * phase
