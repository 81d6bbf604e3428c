"""Plain and weighted averaging (FedAvg).

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.aggregators.base import Aggregator, init_empty


def mean(weighted: bool = True) -> Aggregator:
    """The average of the updates; FedAvg when example counts are passed.

    With ``weighted=True`` and ``context.weights`` given, rows are weighted by
    them (FedAvg's example-count weighting); otherwise all rows count equally.

    Not robust: one NaN, infinite or huge row poisons the result. That is the
    point of having it as the baseline.

    Args:
      weighted: use ``context.weights`` when the simulator passes them.

    Returns:
      An :class:`Aggregator`.

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

    return Aggregator(init_empty, aggregate)
