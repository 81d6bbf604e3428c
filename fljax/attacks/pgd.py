"""Norm-constrained local training: projected gradient descent onto an L2 ball.

After every local step a malicious client projects its parameters onto the L2
ball of radius ``norm_bound`` around the global model it started from::

    w <- G + (w - G) * min(1, M / ||w - G||)

so its update never exceeds the bound a norm-clipping defence enforces, and
(unlike clipping once at the end) the training adapts to the constraint.
With model replacement on top (``attack.combine``), train inside ``M / gamma``
so that the boosted update lands on ``M`` (Sun et al.'s ``ClientProjectBoost``
projects after each pass over the data instead of each step).

References:
  Sun et al., "Can You Really Backdoor Federated Learning?", 2019
  (norm-bounded attack); Wang et al., "Attack of the Tails", NeurIPS 2020
  (PGD attack).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker, LocalTraining


def project_to_ball(params, centre, radius):
    """``params`` projected onto the L2 ball of ``radius`` around ``centre`` (pytrees).

    Parameters already inside come back unchanged (one pass for the norm; the
    rescaling runs under ``lax.cond`` only when it is needed).
    """
    delta = jax.tree_util.tree_map(jnp.subtract, params, centre)
    sq = sum(jnp.sum(jnp.square(d.astype(jnp.float32))) for d in jax.tree_util.tree_leaves(delta))
    norm = jnp.sqrt(sq)
    radius = jnp.asarray(radius, jnp.float32)

    def shrink(_):
        factor = radius / jnp.where(norm > 0, norm, 1.0)
        return jax.tree_util.tree_map(lambda c, d: (c + factor * d).astype(c.dtype), centre, delta)

    return jax.lax.cond(norm > radius, shrink, lambda _: params, None)


def pgd(norm_bound: float) -> Attacker:
    """Malicious clients train projected onto the L2 ball of radius ``norm_bound``.

    Args:
      norm_bound: the radius ``M`` around the global parameters (a value, > 0).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` whose ``train.project`` hook
      runs after every local step (the identity for benign clients).

    References:
      Sun et al. 2019; Wang et al. 2020.
    """
    bd.check_positive("pgd", "norm_bound", norm_bound)

    def project(params, view):
        # lax.cond: a benign client (one at a time, the CPU default) skips the work;
        # under vmap both branches run and the malicious flag selects.
        return jax.lax.cond(view.malicious,
                            lambda p: project_to_ball(p, view.global_params, norm_bound),
                            lambda p: p, params)

    return Attacker(train=LocalTraining(project=project))
