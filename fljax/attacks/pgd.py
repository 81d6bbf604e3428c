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
    """``params`` projected onto the L2 ball of ``radius`` around ``centre`` (pytrees)."""
    delta = jax.tree_util.tree_map(jnp.subtract, params, centre)
    sq = sum(jnp.sum(jnp.square(d.astype(jnp.float32))) for d in jax.tree_util.tree_leaves(delta))
    norm = jnp.sqrt(sq)
    radius = jnp.asarray(radius, jnp.float32)
    factor = jnp.where(norm > radius, radius / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree_util.tree_map(lambda c, d: (c + factor * d).astype(c.dtype), centre, delta)


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
        projected = project_to_ball(params, view.global_params, norm_bound)
        return jax.tree_util.tree_map(lambda p, q: jnp.where(view.malicious, q, p),
                                      params, projected)

    return Attacker(train=LocalTraining(project=project))
