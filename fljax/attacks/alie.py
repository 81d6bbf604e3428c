"""A Little Is Enough (ALIE): malicious rows sit ``z`` standard deviations from the honest mean.

References:
  Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
  Distributed Learning", NeurIPS 2019.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from fljax.attacks import _common
from fljax.attacks.base import UpdateAttack, check_knowledge, is_number


def alie_z(n: int, num_malicious) -> jax.Array:
    """The paper's ``z_max`` for ``n`` clients of which ``num_malicious`` are malicious.

    ``s = floor(n/2 + 1) - f`` honest "supporters" are needed, and
    ``z = Phi^{-1}((n - f - s) / (n - f))``; e.g. ``n = 100, f = 20`` gives
    0.286 and ``n = 10, f = 2`` gives 0 (byzantine.md section 3.6). Where the
    formula has no answer (``f > n / 2``: ``s <= 0`` and the quantile reaches
    1) ``s`` is clamped at 1 and ``n - f`` at ``s + 1``, which keeps ``z``
    finite; for ``f <= n / 2`` and ``n >= 3`` this is the paper's value. For
    even ``n`` and ``f = 1`` the formula itself gives a negative ``z``.

    Args:
      n: the number of rows (static).
      num_malicious: ``f`` (int, may be traced).

    Returns:
      ``float32[]``.
    """
    f = jnp.asarray(num_malicious, jnp.int32)
    s = jnp.maximum(n // 2 + 1 - f, 1)
    h = jnp.maximum(n - f, s + 1)
    return ndtri((h - s).astype(jnp.float32) / h.astype(jnp.float32))


def alie(z: Optional[float] = None, knowledge: str = "full") -> UpdateAttack:
    """A Little Is Enough: every malicious row is ``mu - z * sigma``.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu, sigma = per-coordinate mean and std (ddof = 1) of the known rows
        z = alie_z(n, c) unless given          # c = sum(malicious), traced
        every malicious row <- mu - z * sigma

    The sign and ``ddof`` follow Karimireddy et al.'s code (``mu - z sigma``,
    ``torch.std``); Blades and FLPoison use ``mu + z sigma`` (the attack is
    symmetric in expectation). With fewer than two known rows (partial
    knowledge with one malicious client, or none) there is no spread to learn:
    the malicious clients send their honest updates and ``info['fallback']`` is
    True.

    Args:
      z: the number of standard deviations (a value, ``>= 0``; may be traced).
        None: the paper's ``z_max`` from ``n`` and the number of malicious rows
        (:func:`alie_z`), recomputed each call from the traced mask.
      knowledge: ``'full'`` or ``'partial'`` (static).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'z':
      float32[], 'fallback': bool[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> u = jnp.array([[0., 1.], [2., 1.], [4., 1.]])
      >>> alie(z=1.0)(u, jnp.array([False, False, True]), None)[2].tolist()
      [0.0, 1.0]

    References:
      Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
      Distributed Learning", NeurIPS 2019.
    """
    check_knowledge("alie", knowledge)
    if z is not None and is_number(z) and not z >= 0:
        raise ValueError(f"alie: z={z} must be >= 0")

    def craft(updates, malicious, key, context=None):
        del key, context
        n = updates.shape[0]
        valid, known = _common.known_rows(updates, malicious, knowledge)
        zz = alie_z(n, _common.count(malicious)) if z is None else jnp.asarray(z, jnp.float32)
        mu = _common.mean_of(updates, valid, known)  # float[d]
        sigma = jnp.sqrt(_common.var_of(updates, known, mu, ddof=1))  # float[d]
        crafted = mu - zz.astype(updates.dtype) * sigma  # float[d]
        ok = _common.can_learn(malicious, known, 2) & _common.all_finite(crafted)
        out = _common.replace_rows(updates, malicious, crafted, ok)
        return out, {"z": zz, "fallback": ~ok}

    return UpdateAttack(craft)
