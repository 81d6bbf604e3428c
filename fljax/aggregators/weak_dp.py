"""Weak differential privacy: norm clipping plus Gaussian noise.

References:
  Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
  Learning?", NeurIPS FL workshop 2019 (arXiv 1911.07963).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators.base import Aggregator, Stream, init_empty, require
from fljax.aggregators.norm_clipping import clipped_stream, clipped_sum, clipping_memory

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
      It streams (the clipped sum accumulates chunk by chunk; the noise is
      drawn once, in ``finish``, from the same key as ``aggregate``'s).

    References:
      Sun et al., "Can You Really Backdoor Federated Learning?", 2019.
    """
    require(placement in PLACEMENTS, "weak_dp",
            f"placement={placement!r} must be one of {PLACEMENTS}")
    if isinstance(max_norm, (int, float)):
        require(max_norm > 0, "weak_dp", f"max_norm={max_norm} must be > 0")
    if isinstance(sigma, (int, float)):
        require(sigma >= 0, "weak_dp", f"sigma={sigma} must be >= 0")

    def noisy(total, m, key):  # the clipped sum and the count of finite rows -> (out, std)
        m = jnp.maximum(m, 1).astype(total.dtype)
        noise = sigma * jax.random.normal(key, total.shape, total.dtype)
        if placement == "sum":
            return (total + noise) / m, sigma / m
        return total / m + noise, jnp.asarray(sigma, total.dtype)

    def aggregate(updates, state, key, context=None):
        del context
        total, finite, norms = clipped_sum(updates, max_norm)  # float[d]
        out, noise_std = noisy(total, jnp.sum(finite), key)
        info = {
            "norms": norms,
            "clipped": finite & (norms > max_norm),
            "noise_std": noise_std,
            "num_nonfinite": updates.shape[0] - jnp.sum(finite),
        }
        return out, state, info

    zero, add = clipped_stream(max_norm)

    def finish(acc, row_info, state, key, context=None):
        del context
        m = acc["count"].astype(jnp.int32)
        out, noise_std = noisy(acc["sum"], m, key)
        info = {"norms": row_info["norms"], "clipped": row_info["clipped"],
                "noise_std": noise_std, "num_nonfinite": row_info["norms"].shape[0] - m}
        return out, state, info

    return Aggregator(init_empty, aggregate, stream=Stream(zero, add, finish),
                      memory=clipping_memory)
