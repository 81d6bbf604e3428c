"""Scaling (boosting): malicious clients send their honest update times a factor.

References:
  Bhagoji, Chakraborty, Mittal, Calo, "Analyzing Federated Learning through
  an Adversarial Lens", ICML 2019 (explicit boosting); Bagdasaryan et al.,
  "How To Backdoor Federated Learning", AISTATS 2020 (model replacement).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from fljax.attacks.base import UpdateAttack, is_number


def scaling(factor: float) -> UpdateAttack:
    """Replaces each malicious row ``u`` by ``factor * u``.

    Against the plain mean, ``factor = n / c`` lets ``c`` colluding clients
    replace the aggregate by their own update; it is also the building block
    of boosted (model-replacement) backdoors, which scale a poisoned update.
    Each crafted row depends on its own honest row only.

    Args:
      factor: the boost (a value, finite; may be traced). ``-1`` is a sign flip.

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with empty ``info``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> u = jnp.array([[1., -2.], [3., 4.]])
      >>> scaling(10.)(u, jnp.array([True, False]), None).tolist()
      [[10.0, -20.0], [3.0, 4.0]]

    References:
      Bhagoji et al., "Analyzing Federated Learning through an Adversarial
      Lens", ICML 2019.
    """
    if is_number(factor) and not math.isfinite(factor):
        raise ValueError(f"scaling: factor={factor} must be finite")

    def craft(updates, malicious, key, context=None):
        del key, context
        boosted = (jnp.asarray(factor, updates.dtype) * updates).astype(updates.dtype)
        return jnp.where(malicious[:, None], boosted, updates), {}

    return UpdateAttack(craft)
