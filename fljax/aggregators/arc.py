"""Adaptive robust clipping (ARC), a pre-aggregator (Allouah et al., 2024).

References:
  Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, "The Vital Role of
  Gradient Clipping in Byzantine-Resilient Distributed Learning", arXiv
  2405.14432, 2024.
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.aggregators._linalg import row_norms
from fljax.aggregators.base import PreAggregator, finite_rows, require


def arc_num_clipped(n: int, num_byzantine: int) -> int:
    """``k = floor(2 f (n - f) / n)``, in integer arithmetic."""
    return (2 * num_byzantine * (n - num_byzantine)) // n


def arc(num_byzantine: int) -> PreAggregator:
    """Clips the ``k = floor(2 f (n - f) / n)`` largest rows to the next largest norm.

    ::

        k     = floor(2 f / n · (n - f))
        τ     = the (k + 1)-th largest row norm
        y_i   = x_i · min(1, τ / ‖x_i‖)

    Only rows with a norm above ``τ`` change, so the result does not depend
    on how norm ties are ordered. ``compose(arc(f), aggregator=mean(weighted=
    False))`` equals ByzFL's ``Average()(ARC(f)(x))`` (tested). ``k`` is
    computed in integers; ByzFL computes ``int(2 * f / n * (n - f))`` in
    floating point, which agrees except where rounding lands just below an
    integer.

    Norms are overflow-safe (``_linalg.row_norms``: a row of 1e38 entries is
    ranked and clipped exactly). Non-finite rows rank as the largest (they use
    up clipping slots, as Byzantine rows would) and come out unchanged, for
    the rule after ARC to screen.

    Args:
      num_byzantine: ``f`` (static), ``0 <= f <= n`` (ByzFL's bound).

    Returns:
      A :class:`PreAggregator` mapping ``float[n, d]`` to ``float[n, d]`` with
      ``info = {'clipped': bool[n], 'threshold': float[]`` (``τ``; ``inf`` if
      the ``(k+1)``-th largest row is non-finite or its norm overflows),
      ``'num_nonfinite': int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y, _, info = arc(1).apply(jnp.array([[3., 4.], [0., 1.], [6., 8.]]),
      ...                           jax.random.PRNGKey(0))
      >>> y.tolist()
      [[3.0, 4.0], [0.0, 1.0], [3.0, 4.0]]

    References:
      Allouah et al., "The Vital Role of Gradient Clipping in
      Byzantine-Resilient Distributed Learning", 2024.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "arc",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")

    def apply(updates, key, context=None):
        del key
        n = updates.shape[0]
        require(num_byzantine <= n, "arc",
                f"needs num_byzantine <= n, got n={n}, num_byzantine={num_byzantine}")
        k = arc_num_clipped(n, num_byzantine)
        valid = finite_rows(updates)  # bool[n]
        scale, base = row_norms(updates, valid)  # ‖x_i‖ = scale_i · base_i
        # scale is a power of two, but float32 log2 of it can miss the integer by
        # an ulp (log2(2^-60) = -59.999996): rounded, or a ratio's exponent
        # truncates one short and a clipped row comes out twice too long.
        exponent = jnp.round(jnp.log2(scale))
        log_norm = jnp.where(base > 0, exponent + jnp.log2(jnp.where(base > 0, base, 1.0)),
                             -jnp.inf)
        log_norm = jnp.where(valid, log_norm, jnp.inf)  # float[n]
        t = jnp.argsort(log_norm)[n - k - 1]  # the (k+1)-th largest
        over = valid & (log_norm > log_norm[t])  # bool[n]: rows to clip
        # τ / ‖x_i‖ = (base_t / base_i) · 2^(e_t - e_i), never formed as τ (it may overflow).
        safe_base = jnp.where(base > 0, base, 1.0)
        ratio = jnp.ldexp(base[t] / safe_base, (exponent[t] - exponent).astype(jnp.int32))
        factor = jnp.where(over, jnp.minimum(ratio, 1.0), 1.0).astype(updates.dtype)
        out = jnp.where(over[:, None], updates * factor[:, None], updates)
        threshold = jnp.where(valid[t], scale[t] * base[t], jnp.inf)
        info = {"clipped": over, "threshold": threshold,
                "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, context, info

    return PreAggregator("arc", apply)
