"""MoNNA: the mean of the rows nearest to a trusted pivot row (Farhadkhani et al., ICML 2023).

References:
  Farhadkhani, Guerraoui, Gupta, Hoang, Pinot, Stephan, "Robust Collaborative
  Learning with Linear Gradient Overhead", ICML 2023.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _ops
from fljax.aggregators._linalg import row_norms, weighted_row_sum
from fljax.aggregators.base import Aggregator, EmptyState, finite_rows, init_empty, require
from fljax.aggregators.meamed import check_majority
from fljax.aggregators.median import coordinate_median


def monna(num_byzantine: int, pivot: int = 0) -> Aggregator:
    """The mean of the ``n - f`` rows nearest (L2) to row ``pivot``, itself included.

    ::

        N   = the n - f rows nearest to x_pivot (x_pivot among them)
        y   = mean_{j in N} x_j

    MoNNA is meant for a pivot that is trusted to be correct (in peer-to-peer
    learning, the node's own vector; on a server, e.g. an update computed on
    the server's own data placed at a fixed row). Distances are exact and
    overflow-safe (``_linalg.row_norms`` of ``x_i - x_pivot``, no Gram matrix),
    one pass over the rows; ties in distance are broken by a random rank per
    client drawn from ``key``.

    Non-finite rows are never selected and count towards ``f`` (with ``k`` of
    them, the ``n - f`` nearest finite rows are averaged, or all finite rows
    if fewer remain). If the pivot row itself is non-finite, the coordinate
    median of the finite rows serves as the pivot instead (the rule must not
    turn one NaN row into a NaN model; ByzFL would return NaN).

    Args:
      num_byzantine: ``f`` (static); needs ``n > 2f`` (ByzFL's bound).
      pivot: the trusted row's index (static), ``0 <= pivot < n``.

    Returns:
      An :class:`Aggregator` with ``info = {'selected': bool[n], 'num_nonfinite':
      int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = monna(1, pivot=1)
      >>> x = jnp.array([[1., 2.], [4., 5.], [7., 8.]])
      >>> agg.aggregate(x, agg.init(2), jax.random.PRNGKey(0))[0].tolist()
      [2.5, 3.5]

    References:
      Farhadkhani et al., "Robust Collaborative Learning with Linear Gradient
      Overhead", ICML 2023.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "monna",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")
    require(isinstance(pivot, int) and pivot >= 0, "monna", f"pivot={pivot!r} must be an int >= 0")
    median = coordinate_median()

    def aggregate(updates, state, key, context=None):
        del context
        n = updates.shape[0]
        check_majority("monna", n, num_byzantine)
        require(pivot < n, "monna", f"pivot={pivot} must be < n={n}")
        valid = finite_rows(updates)  # bool[n]
        centre = lax.cond(valid[pivot], lambda: updates[pivot],
                          lambda: median.aggregate(updates, EmptyState(), key)[0])  # float[d]
        # ‖x_i - centre‖ = scale_i · base_i. The pivot (distance 0) is left out: a zero
        # distance would send every row through row_norms' rescaling pass.
        is_pivot = jnp.arange(n) == pivot
        scale, base = row_norms(updates, valid & ~(is_pivot & valid[pivot]), centre)
        log_dist = jnp.where(base > 0, jnp.log2(scale) + jnp.log2(jnp.where(base > 0, base, 1.0)),
                             -jnp.inf)
        log_dist = jnp.where(valid, log_dist, jnp.inf)
        # The pivot first even against duplicates of it; invalid rows last.
        log_dist = jnp.where(is_pivot & valid, -jnp.inf, log_dist)
        order = _ops.tie_break_order(log_dist, valid, key)
        selected = jnp.zeros((n,), bool).at[order[: n - num_byzantine]].set(True) & valid
        count = jnp.maximum(jnp.sum(selected), 1).astype(updates.dtype)
        out = weighted_row_sum(updates, jnp.where(selected, 1.0 / count, 0.0), valid)
        info = {"selected": selected, "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, state, info

    return Aggregator(init_empty, aggregate)
