"""Plain and weighted averaging (FedAvg).

References:
  McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators._linalg import _HIGHEST, weighted_row_sum
from fljax.aggregators.base import Aggregator, Stream, finite_rows, init_empty


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
      An :class:`Aggregator`; ``info`` holds ``num_nonfinite``. It has a
      streaming form (``Σ w_i Δ_i`` and ``Σ w_i`` over the finite rows
      accumulated chunk by chunk, divided once) and column blocks
      (``columns=True``: each output column is a weighted sum of its input
      column).

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
        axis = None if context is None else context.axis  # columns split over a mesh axis
        if weighted and context is not None and context.weights is not None:
            w = context.weights.astype(updates.dtype)
        else:
            w = jnp.ones((n,), updates.dtype)

        def normalised(v):  # float[n] -> float[n] summing to 1 (or all 0)
            return v / jnp.maximum(jnp.sum(v), jnp.finfo(updates.dtype).tiny)

        out = jnp.dot(normalised(w), updates, precision=_HIGHEST)  # float[d]

        def screened():  # only when some entry was NaN or infinite
            finite = finite_rows(updates, axis)  # bool[n]
            p = normalised(jnp.where(finite, w, 0.0))
            return weighted_row_sum(updates, p, finite), n - jnp.sum(finite)

        ok = jnp.all(jnp.isfinite(out))
        if axis is not None:  # one branch on every column block (screened() reduces over axis)
            ok = jax.lax.pmin(ok.astype(jnp.int32), axis) > 0
        out, num_nonfinite = jax.lax.cond(ok, lambda: (out, jnp.zeros((), jnp.int32)), screened)
        return out, state, {"num_nonfinite": num_nonfinite}

    def zero(d, dtype):
        return {"sum": jnp.zeros((d,), dtype), "weight": jnp.zeros((), dtype),
                "num_nonfinite": jnp.zeros((), jnp.int32)}

    def add(acc, rows, weights, mask):  # rows float[c, d]
        finite = finite_rows(rows)  # bool[c]: NaN / inf rows are screened, as in aggregate
        use = mask & finite
        w = weights.astype(rows.dtype) if weighted else jnp.ones(mask.shape, rows.dtype)
        w = jnp.where(use, w, 0.0)
        rows = jnp.where(use[:, None], rows, 0.0)  # padding and non-finite rows never read
        total = jnp.dot(w, rows, precision=_HIGHEST)  # float[d]
        bad = jnp.sum((mask & ~finite).astype(jnp.int32))
        return {"sum": acc["sum"] + total, "weight": acc["weight"] + jnp.sum(w),
                "num_nonfinite": acc["num_nonfinite"] + bad}, {}

    def finish(acc, row_info, state, key, context=None):
        del row_info, key, context
        out = acc["sum"] / jnp.maximum(acc["weight"], 1e-12)
        return out, state, {"num_nonfinite": acc["num_nonfinite"]}

    return Aggregator(init_empty, aggregate, stream=Stream(zero, add, finish), columns=True,
                      memory=lambda n, d, itemsize: d * itemsize)
