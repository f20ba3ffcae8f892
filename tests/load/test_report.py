"""Load reports: the JSON contract, the objectives gate, the terminal table, the HTML page."""

from __future__ import annotations

from chaosstream.load.metrics import Attempt, LoadStats
from chaosstream.load.report import (
    Objectives,
    check_objectives,
    html_report,
    load_document,
    terminal_summary,
)

CONTRACT = {
    "streams",
    "ttft_ms",
    "itl_ms",
    "tpot_ms",
    "ttlt_ms",
    "interruption_rate",
    "goodput",
    "attempts_per_answer",
    "errors",
}


def _stats() -> LoadStats:
    stats = LoadStats()
    for i in range(10):
        outcome = "reset" if i < 2 else "complete"
        a = Attempt(outcome, 0.0, 200, [0.2, 0.22, 0.24], 300, None, 1.0)
        stats.of("flaky-wifi" if i < 5 else "clean").add_attempt(a, 1000.0 + i)
    for name in ("clean", "flaky-wifi"):
        stats.of(name).sample_open(1000.5, 3)
    return stats


def test_document_has_the_contracts_fields() -> None:
    """profiles.NAME and overall carry every field the issue's contract names."""
    doc = load_document(_stats(), 10.0, {"users": 5}, Objectives())
    assert set(doc["profiles"]) == {"clean", "flaky-wifi"}
    for block in [*doc["profiles"].values(), doc["overall"]]:
        assert set(block) >= CONTRACT
        assert {"p50", "p90", "p99"} <= set(block["ttft_ms"])
    assert doc["overall"]["streams"] == 10 and doc["overall"]["interruption_rate"] == 0.2
    assert doc["overall"]["timeline"]["open_streams"][0] == 6
    assert doc["passed"] is True


def test_objectives_gate() -> None:
    """A missed objective is named in one sentence; met ones say nothing."""
    overall = load_document(_stats(), 10.0, {}, Objectives())["overall"]
    assert check_objectives(overall, Objectives(max_interruption_rate=0.25)) == []
    missed = check_objectives(overall, Objectives(max_interruption_rate=0.1, min_goodput=0.99))
    assert len(missed) == 2 and "interruption rate 20.00%" in missed[0]


def test_terminal_summary_rows() -> None:
    """One row per profile, one overall, and each missed objective on its own line."""
    doc = load_document(_stats(), 10.0, {}, Objectives(max_interruption_rate=0.0))
    text = terminal_summary(doc)
    assert text.splitlines()[1].startswith("clean") and "overall" in text
    assert "objective missed: interruption rate" in text


def test_html_is_self_contained_with_charts() -> None:
    """The HTML page inlines four SVG charts and loads nothing from anywhere."""
    stats = _stats()
    page = html_report(load_document(stats, 10.0, {}, Objectives()), stats)
    assert page.count("<svg") == 4
    # Namespace URIs inside the SVG are names, not loads: no src, no link, no script.
    assert "<script" not in page and "src=" not in page and "<link" not in page
