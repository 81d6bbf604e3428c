"""Gaussian attack: malicious clients send i.i.d. Gaussian noise.

References:
  Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
  Gradient Descent", NeurIPS 2017 (the Gaussian Byzantine workers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.attacks.base import UpdateAttack, is_number


def gaussian(stddev: float = 1.0, mean: float = 0.0) -> UpdateAttack:
    """Replaces each malicious row by ``N(mean, stddev^2)`` noise.

    Args:
      stddev: the noise standard deviation (a value, >= 0).
      mean: the noise mean (a value).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with empty ``info``.
    """
    if is_number(stddev) and not stddev >= 0:
        raise ValueError(f"gaussian: stddev={stddev} must be >= 0")

    def craft(updates, malicious, key, context=None):
        del context
        noise = mean + stddev * jax.random.normal(key, updates.shape, updates.dtype)
        return jnp.where(malicious[:, None], noise.astype(updates.dtype), updates), {}

    return UpdateAttack(craft)
