"""One row of the aggregator conformance table (see ``conformance_test.py``)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional


class Entry(NamedTuple):
    """How the conformance tests build, feed and check one rule.

    Attributes:
      name: the factory's name in ``fljax.aggregators.RULES``.
      build: ``(n, f) -> Aggregator``.
      reference: ``(x: float64[n, d], n, f) -> float64[d]`` NumPy reference.
      f_max: ``n -> `` the largest ``f`` the rule accepts for ``n`` clients.
      ns: client counts to test (odd and even); each (n, f) is compiled once
        and shared by the checks.
      robust: False exempts the rule from the huge-row and non-finite checks.
      remaining: ``(n, f, k) -> (n', f')``: which ``(n, f)`` the reference gets
        when the ``k`` non-finite rows are removed; None: the reference itself
        screens non-finite rows (it is called on the full data).
      make_context: optional ``(n, d, rng) -> AggregationContext``.
      stateful: only the first call is compared with the reference.
      rtol, atol: tolerances against the float64 reference.
      order_invariant: False if the output may legitimately depend on client
        order (through the documented tie rule).
      huge_bound: max |output| allowed with f finite rows of any magnitude
        (1e3 up to float32's largest, see ``hostile.HUGE``); honest rows are N(0, 1).
    """

    name: str
    build: Callable[[int, int], Any]
    reference: Callable[..., Any]
    f_max: Callable[[int], int]
    ns: tuple = (7, 12)
    robust: bool = True
    remaining: Optional[Callable[[int, int, int], tuple]] = lambda n, f, k: (n - k, f)
    make_context: Optional[Callable[..., Any]] = None
    stateful: bool = False
    rtol: float = 1e-4
    atol: float = 1e-5
    order_invariant: bool = True
    huge_bound: float = 10.0
