"""Inner-product manipulation (IPM): every malicious row is ``-epsilon`` times the honest mean.

References:
  Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
  Inner Product Manipulation", UAI 2019.
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.attacks import _common
from fljax.attacks.base import UpdateAttack, check_knowledge, is_number


def ipm(epsilon: float = 0.1, knowledge: str = "full") -> UpdateAttack:
    """Inner-product manipulation: send ``-epsilon * mu``.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu    = mean of the known rows                 # float[d]
        every malicious row <- -epsilon * mu

    A small ``epsilon`` (0.1, the paper's and Karimireddy et al.'s default)
    stays close to the honest cluster, so Krum and the median accept it while
    the inner product of the aggregate with the honest mean turns negative; a
    large one (Blades uses 1, ByzFL 2) breaks the mean. The attacker needs one
    known row (partial knowledge with a single malicious client uses its own
    honest update as the mean); with none it sends the honest updates and
    ``info['fallback']`` is True.

    Args:
      epsilon: the scale (a value, ``>= 0``; may be traced).
      knowledge: ``'full'`` (the mean of all finite rows) or ``'partial'``
        (of the malicious rows only). Static.

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info =
      {'fallback': bool[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> u = jnp.array([[1., 2.], [3., 4.], [5., 6.]])
      >>> ipm(0.5)(u, jnp.array([True, False, False]), jax.random.PRNGKey(0)).tolist()
      [[-1.5, -2.0], [3.0, 4.0], [5.0, 6.0]]

    References:
      Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
      Inner Product Manipulation", UAI 2019.
    """
    check_knowledge("ipm", knowledge)
    if is_number(epsilon) and not epsilon >= 0:
        raise ValueError(f"ipm: epsilon={epsilon} must be >= 0")

    def craft(updates, malicious, key, context=None):
        del key, context
        valid, known = _common.known_rows(updates, malicious, knowledge)
        mu = _common.mean_of(updates, valid, known)  # float[d]
        crafted = -jnp.asarray(epsilon, updates.dtype) * mu  # float[d]
        ok = _common.can_learn(malicious, known, 1) & _common.all_finite(crafted)
        out = _common.replace_rows(updates, malicious, crafted, ok)
        return out, {"fallback": ~ok}

    return UpdateAttack(craft)
