"""Benchmarks for chaosstream: pass-through cost and fault fidelity on loopback.

Run ``python -m bench`` (or ``bench/run``) from the repository root; see
``bench/README.md``. Every part runs as its own process so the proxy's CPU and
memory can be measured on its own.
"""
