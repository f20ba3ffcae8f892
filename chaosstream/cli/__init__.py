"""The ``chaosstream`` command: a thin click layer over the library."""

from chaosstream.cli.commands import cli, main

__all__ = ["cli", "main"]
