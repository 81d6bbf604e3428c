"""Sign flipping: malicious clients send ``-scale`` times their honest update.

References:
  Damaskinos et al., "Asynchronous Byzantine Machine Learning (the case of
  SGD)", ICML 2018; Li et al., "RSA: Byzantine-Robust Stochastic Aggregation
  Methods for Distributed Learning", AAAI 2019.
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.attacks.base import UpdateAttack


def sign_flip(scale: float = 1.0) -> UpdateAttack:
    """Replaces each malicious row ``u`` by ``-scale * u``.

    Args:
      scale: the boost of the flipped update (a value; 1 is a plain sign flip).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with empty ``info``.
    """

    def craft(updates, malicious, key, context=None):
        del key, context
        flipped = (-scale * updates).astype(updates.dtype)
        return jnp.where(malicious[:, None], flipped, updates), {}

    return UpdateAttack(craft)
