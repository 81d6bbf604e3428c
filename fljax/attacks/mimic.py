"""Mimic: every attacker sends a copy of one honest client's update.

References:
  Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
  via Bucketing", ICLR 2022.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators import _linalg
from fljax.attacks import _common
from fljax.attacks.base import UpdateAttack, check_knowledge

TARGETS = ("index", "direction")


def mimic(target: str = "index", epsilon: int = 0, iters: int = 1,
          knowledge: str = "full") -> UpdateAttack:
    """Mimic: all malicious rows become one honest row, over-representing that
    client's data (harmless under IID data, a bias under non-IID data that
    no rule can tell from honest heterogeneity).

    Algorithm::

        pool = finite honest rows (full) | finite malicious rows, i.e. the
               attackers' own honest updates (partial); m = |pool|
        target = 'index':     the pool row of rank epsilon mod m (in row order)
                 'direction': mu = mean of the pool, z = z0 ~ N(0, I) (seed 0),
                              iters times: z <- Xc^T Xc z / ‖.‖   (Xc = pool - mu)
                              the pool row with the largest x_i . z
        every malicious row <- that row

    ``'index'`` is ByzFL's ``Mimic(epsilon)`` (``honest_vectors[epsilon]``;
    ByzFL raises for ``epsilon >= m``, here the rank wraps around since ``m``
    changes with the round's sample). ``'direction'`` is the paper's
    heuristic (Karimireddy et al.'s ``MimicVariantAttacker``: the honest
    worker farthest along the top principal direction of the honest updates,
    where their spread is largest) recomputed every round: the paper averages
    ``z`` over warm-up rounds and then keeps the chosen worker, which needs
    state the update-attack protocol does not carry (``craft`` returns no
    state); ``iters = 1`` is the paper's first round (one power step from a
    seed-0 Gaussian). With an empty pool or no malicious row the malicious
    clients send their honest updates and ``info['fallback']`` is True.

    Args:
      target: ``'index'`` (ByzFL, default) or ``'direction'`` (the paper's
        heuristic). Static.
      epsilon: the rank in the pool for ``'index'`` (static, ``>= 0``).
      iters: power iterations for ``'direction'`` (static, ``>= 1``); each is
        two passes over ``[n, d]``.
      knowledge: ``'full'`` or ``'partial'`` (static).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'target':
      int32[]`` (the copied row, -1 on fallback), ``'fallback': bool[]}``.

    Examples:
      >>> import jax.numpy as jnp
      >>> u = jnp.array([[1., 2.], [3., 4.], [5., 6.]])
      >>> mimic(epsilon=1)(u, jnp.array([True, False, False]), None).tolist()
      [[5.0, 6.0], [3.0, 4.0], [5.0, 6.0]]

    References:
      Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous
      Datasets via Bucketing", ICLR 2022.
    """
    check_knowledge("mimic", knowledge)
    if target not in TARGETS:
        raise ValueError(f"mimic: target={target!r} must be one of {TARGETS}")
    if not isinstance(epsilon, int) or isinstance(epsilon, bool) or epsilon < 0:
        raise ValueError(f"mimic: epsilon={epsilon!r} must be an integer >= 0 (a rank among the "
                         "honest rows)")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"mimic: iters={iters!r} must be an integer >= 1")

    def craft(updates, malicious, key, context=None):
        del key, context
        n, d = updates.shape
        valid = _common.known_rows(updates, malicious, "full")[0]
        pool = valid & (~malicious if knowledge == "full" else malicious)  # bool[n]
        m = _common.count(pool)
        if target == "index":
            rank = jnp.cumsum(pool.astype(jnp.int32)) - 1  # int[n]
            want = jnp.mod(epsilon, jnp.maximum(m, 1))
            idx = jnp.argmax(pool & (rank == want))
        else:
            mu = _common.mean_of(updates, valid, pool)  # float[d]
            z = jax.random.normal(jax.random.PRNGKey(0), (d,), updates.dtype)
            for _ in range(iters):  # z <- Xc^T (Xc z), Xc the centred pool rows
                w = (_common.row_dots(updates, z[None, :])[:, 0]
                     - jnp.dot(mu, z, precision=jax.lax.Precision.HIGHEST))  # float[n]
                w = jnp.where(pool, w, 0.0)
                z = _linalg.weighted_row_sum(updates, w, valid) - jnp.sum(w) * mu
                z = z / jnp.where(_common.l2_norm(z) > 0, _common.l2_norm(z), 1.0)
            score = jnp.where(pool, _common.row_dots(updates, z[None, :])[:, 0], -jnp.inf)
            idx = jnp.argmax(score)
        ok = _common.can_learn(malicious, pool, 1)
        out = _common.replace_rows(updates, malicious, updates[idx], ok)
        return out, {"target": jnp.where(ok, idx, -1).astype(jnp.int32), "fallback": ~ok}

    return UpdateAttack(craft)
