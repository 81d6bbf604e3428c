"""Norm clipping (norm bounding) of each update, then the average.

References:
  Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
  Learning?", NeurIPS FL workshop 2019 (arXiv 1911.07963).
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.aggregators._linalg import clip_weights, row_norms, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require


def norm_clipping(max_norm: float) -> Aggregator:
    """Clips every update into the L2 ball of radius ``max_norm`` and averages.

    ``Δ_i ← Δ_i · min(1, M / ‖Δ_i‖)``, then the unweighted mean over the
    finite rows. Non-finite rows are screened out (they do not count in the
    mean); if every row is non-finite the result is zero.

    Args:
      max_norm: the norm bound ``M`` (a value: it may be a traced array; a
        Python number must be positive). Sun et al. use ``M = 3``; the
        edge-case repo 2 (CIFAR-10) / 1.5 (EMNIST).

    Returns:
      An :class:`Aggregator`; ``info`` holds ``norms`` (``float[n]``, before
      clipping, 0 for non-finite rows), ``clipped`` (``bool[n]``) and
      ``num_nonfinite``.

    References:
      Sun et al., "Can You Really Backdoor Federated Learning?", 2019.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = norm_clipping(1.0)
      >>> out, _, _ = agg.aggregate(jnp.array([[3., 4.], [0., 0.5]]), agg.init(2),
      ...                           jax.random.PRNGKey(0))
      >>> [round(v, 4) for v in out.tolist()]
      [0.3, 0.65]
    """
    if isinstance(max_norm, (int, float)):
        require(max_norm > 0, "norm_clipping", f"max_norm={max_norm} must be > 0")

    def aggregate(updates, state, key, context=None):
        del key, context
        total, finite, norms = clipped_sum(updates, max_norm)  # float[d]
        m = jnp.sum(finite)
        out = total / jnp.maximum(m, 1).astype(updates.dtype)
        info = {
            "norms": norms,
            "clipped": finite & (norms > max_norm),
            "num_nonfinite": updates.shape[0] - m,
        }
        return out, state, info

    return Aggregator(init_empty, aggregate)


def clipped_sum(updates, max_norm):
    """``Σ_i Δ_i · min(1, M / ‖Δ_i‖)`` over the finite rows, without an ``[n, d]`` temporary.

    Two passes over ``updates``: the row norms, then the weighted sum on
    column tiles (``_linalg.row_norms`` / ``weighted_row_sum``).

    Returns:
      ``(total float[d], finite bool[n], norms float[n])``; ``norms`` is 0 for
      non-finite rows.
    """
    finite = finite_rows(updates)  # bool[n]
    scale, base = row_norms(updates, finite)  # float[n] each
    total = weighted_row_sum(updates, clip_weights(scale, base, max_norm), finite, scale=scale)
    return total, finite, jnp.where(finite, scale * base, 0.0)
