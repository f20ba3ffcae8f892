"""The outcome of a run: one result per scenario, with its verdicts and evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaosstream.proxy.record import Exchange
from chaosstream.verify.expectations import ClientRun, Observed, Verdict

if TYPE_CHECKING:
    from chaosstream.verify.page import PageObservation

__all__ = ["RunReport", "ScenarioResult"]


@dataclass(slots=True)
class ScenarioResult:
    """One scenario's outcome."""

    name: str
    profile: str
    seed: int
    observed: Observed
    verdicts: list[Verdict]
    client: ClientRun
    exchanges: list[Exchange]
    page: PageObservation | None = None
    """A browser client's run (screenshot, layout shifts), for the HTML report."""
    answer: str | None = None
    """The full answer the client was judged against, when known (for the HTML report)."""
    unmatched: list[str] = field(default_factory=list)
    """With a cassette upstream: why each request of this scenario matched no recording
    (each line names the request and the nearest recorded one)."""

    @property
    def passed(self) -> bool:
        """There is a verdict and every verdict passed (no verdict is no evidence)."""
        return bool(self.verdicts) and all(v.verdict == "pass" for v in self.verdicts)


@dataclass(slots=True)
class RunReport:
    """All scenarios of one run."""

    seed: int
    results: list[ScenarioResult]
    upstream: str
    interrupted: bool = False
    """A signal stopped the run: ``results`` holds only the scenarios that finished."""
    command: list[str] = field(default_factory=list)
    """The client command every command scenario ran (empty for pages)."""
    origin: list[str] = field(default_factory=list)
    """The command-line words after ``chaosstream`` that set this run up, without
    ``--only``, ``--seed``, the report files and the client command: e.g. ``["check",
    "--upstream", "cassette:tapes"]``. Empty when no command line started the run (then
    there is no ``repro_run``)."""
    strict: bool = False
    """``--strict`` with a cassette: a request that matched no recording fails the run."""

    @property
    def unmatched(self) -> list[str]:
        """Every scenario's cassette misses, in order."""
        return [line for r in self.results for line in r.unmatched]

    @property
    def passed(self) -> bool:
        """Every scenario ran and passed (an interrupted run proved nothing about the rest),
        and with ``strict`` every request matched a recording."""
        if self.strict and self.unmatched:
            return False
        return not self.interrupted and all(r.passed for r in self.results)
