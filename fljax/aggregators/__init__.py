"""Server-side aggregation rules, each a factory returning ``Aggregator(init, aggregate)``.

Select one by name in a config with :func:`get_aggregator` (the factory's
name, e.g. ``'krum'``); see ``base.py`` for the protocol.
"""

from fljax.aggregators.base import (
    AggregationContext,
    Aggregator,
    EmptyState,
    PreAggregator,
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
from fljax.aggregators.arc import arc
from fljax.aggregators.caf import caf
from fljax.aggregators.crfl import crfl
from fljax.aggregators.dnc import dnc
from fljax.aggregators.mda import mda
from fljax.aggregators.meamed import meamed
from fljax.aggregators.monna import monna
from fljax.aggregators.multi_metrics import multi_metrics
from fljax.aggregators.signguard import signguard
from fljax.aggregators.smea import smea
from fljax.aggregators.bucketing import bucketing
from fljax.aggregators.nnm import nnm

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
    # Round two (issue 15): ByzFL's and FLPoison's rules. multi_metrics (on='models')
    # and crfl need context.params.
    "mda",
    "monna",
    "meamed",
    "caf",
    "smea",
    "dnc",
    "signguard",
    "multi_metrics",
    "crfl",
)

# Pre-aggregators (float[n, d] -> float[m, d]), composed in front of a rule with
# compose(*stages, aggregator=rule); a config names them like rules.
PRE_AGGREGATORS = (
    "nnm",
    "bucketing",
    "arc",
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
    "get_pre_aggregator",
    "PreAggregator",
    "PRE_AGGREGATORS",
    "RULES",
] + list(RULES) + list(PRE_AGGREGATORS)


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


def get_pre_aggregator(name: str, **kwargs) -> PreAggregator:
    """Builds a pre-aggregator by its factory name (``'nnm'``, ``'bucketing'``, ``'arc'``).

    Unknown names raise a ``ValueError``. The simulator builds a config's
    ``pre_aggregation`` list with it and passes the stages to :func:`compose`
    in front of the rule.
    """
    if name not in PRE_AGGREGATORS:
        raise ValueError(f"unknown pre-aggregator {name!r}; choose one of {sorted(PRE_AGGREGATORS)}")
    return globals()[name](**kwargs)
