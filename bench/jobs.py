"""Trivial job functions for the benchmarks."""

from __future__ import annotations


def noop(n: int = 0) -> int:
    """Return ``n``: the cheapest job there is."""
    return n
