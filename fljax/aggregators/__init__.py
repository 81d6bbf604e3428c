"""Server-side aggregation rules, each a factory returning ``Aggregator(init, aggregate)``.

Select one by name in a config with :func:`get_aggregator` (the factory's
name, e.g. ``'krum'``); see ``base.py`` for the protocol.
"""

from fljax.aggregators.base import (
    AggregationContext,
    Aggregator,
    EmptyState,
    finite_rows,
    on_pytree,
)
from fljax.aggregators.bulyan import bulyan
from fljax.aggregators.geometric_median import geometric_median
from fljax.aggregators.invariant import invariant
from fljax.aggregators.krum import krum, multi_krum
from fljax.aggregators.mean import mean
from fljax.aggregators.median import coordinate_median
from fljax.aggregators.trimmed_mean import trimmed_mean

# Public rules: every name here must appear in the conformance table of
# tests/aggregators/conformance_test.py (a meta-test checks it).
RULES = (
    "mean",
    "coordinate_median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "invariant",
)

__all__ = [
    "AggregationContext",
    "Aggregator",
    "EmptyState",
    "finite_rows",
    "on_pytree",
    "get_aggregator",
    "RULES",
] + list(RULES)


def get_aggregator(name: str, **kwargs) -> Aggregator:
    """Builds a rule by its factory name; unknown names raise a ``ValueError``."""
    if name not in RULES:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {sorted(RULES)}")
    return globals()[name](**kwargs)
