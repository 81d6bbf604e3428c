"""Mean around the median (Meamed; Xie, Koyejo, Gupta, 2018).

References:
  Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", arXiv 1802.10116,
  2018 (the "mean around median" of Section 4).
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.aggregators import _ops
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require


def check_majority(rule: str, n: int, num_byzantine: int) -> None:
    """Raises a ``ValueError`` unless ``n > 2 * num_byzantine``."""
    require(n > 2 * num_byzantine, rule,
            f"needs n > 2 * num_byzantine, got n={n}, num_byzantine={num_byzantine} "
            f"(n must be at least {2 * num_byzantine + 1})")


def meamed(num_byzantine: int, block: int | None = None, batch: int | None = None) -> Aggregator:
    """Per coordinate, the mean of the ``n - f`` values closest to the median.

    ::

        med_j = median_i x_ij                  (mean of the two middle values for even n)
        y_j   = mean of the n - f values x_ij with the smallest |x_ij - med_j|

    The ``n - f`` values closest to the median are a contiguous window of the
    sorted column, the one (of the ``f + 1`` windows) whose farther end is
    nearest to the median; where several windows tie there (one value repeated
    at that end), the one whose nearer end is farthest, which holds every
    value strictly closer than the repeated one; a tie of two distinct values
    equally far on either side takes the lower window (the two sets are then
    equally close: ByzFL's ``argpartition`` leaves this case to the sort). Columns are sorted on tiles by the bitonic network of
    :mod:`fljax.aggregators._ops`; every kept value is divided by ``n - f``
    before it is added, so values near float32's largest never overflow.

    Non-finite rows are screened and count towards ``f``: with ``k`` of them
    the rule runs on the ``m = n - k`` finite rows with ``f' = max(f - k, 0)``
    (the median of the ``m`` finite values, the ``m - f'`` closest kept). With
    no finite row the result is zero.

    Args:
      num_byzantine: ``f`` (static); needs ``n > 2f``.
      block, batch: column tiling of the sort (None: the measured defaults of
        ``_ops.TILING['sort']``).

    Returns:
      An :class:`Aggregator` with ``info = {'num_nonfinite': int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = meamed(1)
      >>> x = jnp.array([[1., 2.], [4., 5.], [7., 80.]])
      >>> agg.aggregate(x, agg.init(2), jax.random.PRNGKey(0))[0].tolist()
      [2.5, 3.5]

    References:
      Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "meamed",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")
    f = num_byzantine

    def aggregate(updates, state, key, context=None):
        del key, context
        n = updates.shape[0]
        check_majority("meamed", n, f)
        valid = finite_rows(updates)  # bool[n]
        m = jnp.sum(valid.astype(jnp.int32))
        keep = m - jnp.maximum(f - (n - m), 0)  # values kept per column, traced
        lo_rank = jnp.maximum(m - 1, 0) // 2
        hi_rank = jnp.maximum(m, 1) // 2
        inv = (1.0 / jnp.maximum(keep, 1).astype(jnp.float32)).astype(updates.dtype)
        starts = jnp.arange(f + 1)  # candidate window starts
        rank = jnp.arange(n)[:, None]

        def tile_fn(tile):  # float[n, b] -> float[b]
            s = _ops.bitonic_sort_rows(jnp.where(valid[:, None], tile, jnp.inf))
            med = 0.5 * s[lo_rank] + 0.5 * s[hi_rank]  # float[b]
            low = s[: f + 1]  # float[f+1, b]: window starts
            high = jnp.take(s, keep - 1 + starts, axis=0)  # float[f+1, b]: window ends
            # Halved differences never overflow.
            left, right = 0.5 * med - 0.5 * low, 0.5 * high - 0.5 * med
            cost = jnp.where((starts <= m - keep)[:, None], jnp.maximum(left, right), jnp.inf)
            # Among windows whose farther end is equally far (a repeated value
            # there), the one whose nearer end is farther holds more of the
            # values strictly closer than that: the n - f closest.
            near = jnp.where(cost == jnp.min(cost, axis=0), jnp.minimum(left, right), -jnp.inf)
            best = jnp.argmax(near, axis=0)  # int[b]: first (lowest) window on full ties
            inside = (rank >= best[None, :]) & (rank < best[None, :] + keep)
            return jnp.sum(jnp.where(inside, s * inv, 0.0), axis=0)

        out = _ops.blockwise(tile_fn, updates, *_ops.tiling("sort", block, batch))  # float[d]
        out = jnp.where(m > 0, out, 0.0).astype(updates.dtype)
        return out, state, {"num_nonfinite": (n - m).astype(jnp.int32)}

    return Aggregator(init_empty, aggregate)
