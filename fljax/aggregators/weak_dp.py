"""Weak differential privacy: norm clipping plus Gaussian noise.

References:
  Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
  Learning?", NeurIPS FL workshop 2019 (arXiv 1911.07963).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators.base import Aggregator, init_empty, require
from fljax.aggregators.norm_clipping import clipped_sum

PLACEMENTS = ("sum", "average")


def weak_dp(max_norm: float, sigma: float, placement: str = "sum") -> Aggregator:
    """Clips each update to ``max_norm``, averages, and adds Gaussian noise.

    Implementations disagree on where the noise goes; both are offered:

    * ``placement='sum'`` (TFF ``GaussianAverageQuery(l2_norm_clip,
      sum_stddev=sigma, denominator=m)``, Sun et al.'s code): noise
      ``N(0, sigma^2)`` is added to the *sum* of the clipped updates, which is
      then divided by ``m``. The noise std on the result is ``sigma / m``.
    * ``placement='average'`` (OOD_Federated_Learning ``AddNoise``, BackFed):
      ``N(0, sigma^2)`` is added to the average. The noise std on the result
      is ``sigma``.

    ``m`` is the number of finite rows (non-finite rows are screened out; with
    none finite the clipped sum is zero and ``m`` counts as 1). The noise is
    added to the aggregated *update*; with the simulator's ``server_lr`` it
    reaches the model scaled by ``server_lr`` (equal to the papers' "noise on
    the model" when ``server_lr = 1``).

    Args:
      max_norm: L2 clipping bound (a value). BackFed: 5; Sun et al.: 3.
      sigma: noise standard deviation (a value). Sun et al. / BackFed: 0.025.
      placement: ``'sum'`` or ``'average'`` (static).

    Returns:
      An :class:`Aggregator`; ``info`` holds ``norms``, ``clipped``,
      ``noise_std`` (the std that reached the result) and ``num_nonfinite``.

    References:
      Sun et al., "Can You Really Backdoor Federated Learning?", 2019.
    """
    require(placement in PLACEMENTS, "weak_dp",
            f"placement={placement!r} must be one of {PLACEMENTS}")
    if isinstance(max_norm, (int, float)):
        require(max_norm > 0, "weak_dp", f"max_norm={max_norm} must be > 0")
    if isinstance(sigma, (int, float)):
        require(sigma >= 0, "weak_dp", f"sigma={sigma} must be >= 0")

    def aggregate(updates, state, key, context=None):
        del context
        d = updates.shape[1]
        total, finite, norms = clipped_sum(updates, max_norm)  # float[d]
        m = jnp.maximum(jnp.sum(finite), 1).astype(updates.dtype)
        noise = sigma * jax.random.normal(key, (d,), updates.dtype)
        if placement == "sum":
            out = (total + noise) / m
            noise_std = sigma / m
        else:
            out = total / m + noise
            noise_std = jnp.asarray(sigma, updates.dtype)
        info = {
            "norms": norms,
            "clipped": finite & (norms > max_norm),
            "noise_std": noise_std,
            "num_nonfinite": updates.shape[0] - jnp.sum(finite),
        }
        return out, state, info

    return Aggregator(init_empty, aggregate)
