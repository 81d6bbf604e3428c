"""Plain and weighted averaging (FedAvg).

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators.base import Aggregator, Stream, init_empty


def mean(weighted: bool = True) -> Aggregator:
    """The average of the updates; FedAvg when example counts are passed.

    With ``weighted=True`` and ``context.weights`` given, rows are weighted by
    them (FedAvg's example-count weighting); otherwise all rows count equally.

    Not robust: one NaN, infinite or huge row poisons the result. That is the
    point of having it as the baseline.

    Args:
      weighted: use ``context.weights`` when the simulator passes them.

    Returns:
      An :class:`Aggregator` with a streaming form (``Σ w_i Δ_i`` and
      ``Σ w_i`` accumulated chunk by chunk, divided once) and column blocks
      (``columns=True``: each output column is a weighted sum of its input
      column).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = mean()
      >>> out, _, _ = agg.aggregate(jnp.array([[1., 2.], [3., 4.]]), agg.init(2),
      ...                           jax.random.PRNGKey(0))
      >>> out.tolist()
      [2.0, 3.0]
    """

    def aggregate(updates, state, key, context=None):
        del key
        n = updates.shape[0]
        if weighted and context is not None and context.weights is not None:
            w = context.weights.astype(updates.dtype)
        else:
            w = jnp.ones((n,), updates.dtype)
        w = w / jnp.maximum(jnp.sum(w), 1e-12)
        return w @ updates, state, {}

    def zero(d, dtype):
        return {"sum": jnp.zeros((d,), dtype), "weight": jnp.zeros((), dtype)}

    def add(acc, rows, weights, mask):  # rows float[c, d]
        w = weights.astype(rows.dtype) if weighted else jnp.ones(mask.shape, rows.dtype)
        w = jnp.where(mask, w, 0.0)
        rows = jnp.where(mask[:, None], rows, 0.0)  # padding rows never read as numbers
        total = jnp.dot(w, rows, precision=jax.lax.Precision.HIGHEST)  # float[d]
        return {"sum": acc["sum"] + total, "weight": acc["weight"] + jnp.sum(w)}, {}

    def finish(acc, row_info, state, key, context=None):
        del row_info, key, context
        return acc["sum"] / jnp.maximum(acc["weight"], 1e-12), state, {}

    return Aggregator(init_empty, aggregate, stream=Stream(zero, add, finish), columns=True,
                      memory=lambda n, d, itemsize: d * itemsize)
