"""Kernel tests: compile the jnp paths' bisection rolled (same results, faster builds)."""

import pytest

from fljax.aggregators import _ops


@pytest.fixture(autouse=True)
def _rolled_bisection(monkeypatch):
    monkeypatch.setattr(_ops, "BISECT_UNROLL", 1)
