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
from fljax.aggregators.centered_clipping import centered_clipping
from fljax.aggregators.compose import compose
from fljax.aggregators.err import err
from fljax.aggregators.flame import flame
from fljax.aggregators.fltrust import fltrust
from fljax.aggregators.foolsgold import foolsgold
from fljax.aggregators.lfr import lfr
from fljax.aggregators.mean import mean
from fljax.aggregators.norm_clipping import norm_clipping
from fljax.aggregators.robust_lr import robust_lr
from fljax.aggregators.weak_dp import weak_dp
from fljax.aggregators.bulyan import bulyan
from fljax.aggregators.geometric_median import geometric_median
from fljax.aggregators.invariant import invariant
from fljax.aggregators.krum import krum, multi_krum
from fljax.aggregators.median import coordinate_median
from fljax.aggregators.trimmed_mean import trimmed_mean

# Public rules: every name here must appear in the conformance table of
# tests/aggregators/conformance_test.py (a meta-test checks it).
RULES = (
    "mean",
    # Model-aware and stateful rules (fltrust, err, lfr need model callables
    # from the simulator: server_update_fn / eval_fn).
    "centered_clipping",
    "err",
    "flame",
    "fltrust",
    "foolsgold",
    "lfr",
    "norm_clipping",
    "robust_lr",
    "weak_dp",
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
    "compose",
    "get_aggregator",
    "resource_arguments",
    "RULES",
] + list(RULES)


# Server resources a rule may take as factory arguments; the simulator builds
# them from the model and the server's data and passes them by these names.
RESOURCES = ("server_update_fn", "eval_fn", "num_clients")


def resource_arguments(factory) -> tuple[str, ...]:
    """Which of :data:`RESOURCES` ``factory`` takes."""
    import inspect

    params = inspect.signature(factory).parameters
    return tuple(r for r in RESOURCES if r in params)


def get_aggregator(name: str, **kwargs) -> Aggregator:
    """Builds a rule by its factory name; unknown names raise a ``ValueError``."""
    if name not in RULES:
        raise ValueError(f"unknown aggregator {name!r}; choose one of {sorted(RULES)}")
    return globals()[name](**kwargs)
