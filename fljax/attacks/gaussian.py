"""Gaussian attack: malicious clients send i.i.d. Gaussian noise.

References:
  Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
  Gradient Descent", NeurIPS 2017 (the Gaussian Byzantine workers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian(stddev: float = 1.0, mean: float = 0.0):
    """Returns ``attack(updates, malicious, key)`` that replaces each malicious
    row by ``N(mean, stddev^2)`` noise.
    """

    def attack(updates, malicious, key):
        noise = mean + stddev * jax.random.normal(key, updates.shape, updates.dtype)
        return jnp.where(malicious[:, None], noise, updates)

    return attack
