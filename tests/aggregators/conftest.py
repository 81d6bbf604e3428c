"""Aggregator tests: compile the bisection kernel rolled (same results, faster builds)."""

import pytest

from fljax.aggregators import _ops


@pytest.fixture(autouse=True)
def _rolled_bisection(monkeypatch, request):
    if "unrolled" not in request.keywords:
        monkeypatch.setattr(_ops, "BISECT_UNROLL", 1)
