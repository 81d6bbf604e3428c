"""Sign flipping: malicious clients send ``-scale`` times their honest update.

References:
  Damaskinos et al., "Asynchronous Byzantine Machine Learning (the case of
  SGD)", ICML 2018; Li et al., "RSA: Byzantine-Robust Stochastic Aggregation
  Methods for Distributed Learning", AAAI 2019.
"""

from __future__ import annotations

import jax.numpy as jnp


def sign_flip(scale: float = 1.0):
    """Returns ``attack(updates, malicious, key)`` that replaces each malicious
    row ``u`` by ``-scale * u``.

    Args:
      scale: the boost of the flipped update (1 is a plain sign flip).
    """

    def attack(updates, malicious, key):
        del key
        return jnp.where(malicious[:, None], -scale * updates, updates)

    return attack
