"""Plain and weighted averaging (FedAvg).

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators._linalg import _HIGHEST, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty


def mean(weighted: bool = True) -> Aggregator:
    """The average of the finite updates; FedAvg when example counts are passed.

    With ``weighted=True`` and ``context.weights`` given, rows are weighted by
    them (FedAvg's example-count weighting); otherwise all rows count equally.
    Rows holding a NaN or an infinity are left out (like every rule, ``mean``
    screens them; with none finite the result is zero).

    Not robust: one huge *finite* row moves the result as far as it likes.
    That is the point of having it as the baseline. The weights are normalised
    before the sum, so the result is finite whenever the rows are (it never
    exceeds the largest entry), also for rows near float32's largest value.

    The common case costs one matrix-vector product: a NaN or infinite entry
    anywhere makes that product non-finite, and only then (under ``lax.cond``)
    are the rows screened and summed again.

    Args:
      weighted: use ``context.weights`` when the simulator passes them.

    Returns:
      An :class:`Aggregator`; ``info`` holds ``num_nonfinite``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = mean()
      >>> out, _, _ = agg.aggregate(jnp.array([[1., 2.], [3., 4.], [jnp.nan, 0.]]),
      ...                           agg.init(2), jax.random.PRNGKey(0))
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

        def normalised(v):  # float[n] -> float[n] summing to 1 (or all 0)
            return v / jnp.maximum(jnp.sum(v), jnp.finfo(updates.dtype).tiny)

        out = jnp.dot(normalised(w), updates, precision=_HIGHEST)  # float[d]

        def screened():  # only when some entry was NaN or infinite
            finite = finite_rows(updates)  # bool[n]
            p = normalised(jnp.where(finite, w, 0.0))
            return weighted_row_sum(updates, p, finite), n - jnp.sum(finite)

        out, num_nonfinite = jax.lax.cond(
            jnp.all(jnp.isfinite(out)), lambda: (out, jnp.zeros((), jnp.int32)), screened)
        return out, state, {"num_nonfinite": num_nonfinite}

    return Aggregator(init_empty, aggregate)
