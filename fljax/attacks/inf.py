"""Inf: the attackers send rows of infinities (ByzFL's ``Inf``).

References:
  ByzFL (EPFL DCL / INRIA), ``byzfl.Inf``: a hostile input every rule must
  screen, not an attack from a paper.
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.attacks.base import UpdateAttack


def inf(sign: int = 1) -> UpdateAttack:
    """Inf: every malicious row is ``sign * inf`` in every coordinate.

    Algorithm::

        every malicious row <- [sign * inf] * d

    ByzFL's ``Inf`` sends ``+inf`` (``sign = 1``). Every robust rule in
    fljax screens non-finite rows (as do the attacks that learn from the
    round's rows), so against them this measures the cost of losing the
    attackers' honest updates; a rule that let one through would turn the
    model non-finite, which the simulator reports as divergence.

    Args:
      sign: ``1`` (``+inf``, ByzFL) or ``-1`` (static).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {}``.

    Examples:
      >>> import jax.numpy as jnp
      >>> inf()(jnp.ones((2, 2)), jnp.array([False, True]), None).tolist()
      [[1.0, 1.0], [inf, inf]]
    """
    if sign not in (1, -1) or isinstance(sign, bool):
        raise ValueError(f"inf: sign={sign!r} must be 1 (+inf, ByzFL) or -1")

    def craft(updates, malicious, key, context=None):
        del key, context
        value = jnp.asarray(sign * jnp.inf, updates.dtype)
        return jnp.where(malicious[:, None], value, updates), {}

    return UpdateAttack(craft)
