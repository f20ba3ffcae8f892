"""chaosstream: a network-chaos proxy for streaming AI responses."""

from chaosstream._version import __version__

__all__ = ["__version__"]
