"""The habits CI holds us to: lint, format, strict types, a tidy public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import chaosstream
import chaosstream.faults

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint_is_clean() -> None:
    """ruff finds nothing in the package, tests, examples or benchmarks."""
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    """Every file is formatted as ruff format would."""
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """The package type-checks under mypy --strict (config in pyproject.toml)."""
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_exports_are_sorted_and_real() -> None:
    """__all__ lists real names with no duplicates (ruff's RUF022 keeps it sorted)."""
    for module in (chaosstream, chaosstream.faults):
        names = list(module.__all__)
        assert len(set(names)) == len(names), module.__name__
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"
