"""Model replacement: boosting the malicious update, with or without a norm bound.

After local training a malicious client sends ``gamma * (X - G)`` instead of
its update ``X - G`` (``X`` its model, ``G`` the global one). With FedAvg over
``n`` clients and server learning rate ``eta`` the new global model is
``G + eta/n * sum_i (X_i - G)``, so ``gamma = n / eta`` makes the attacker's
model replace the global one (up to the benign updates, which nearly cancel
near convergence). A norm bound ``M`` on every update (Sun et al.'s defence)
caps what boosting can do; an attacker who knows ``M`` boosts only up to it
(:func:`constrain_and_scale`) and trains inside the ball it will be scaled to
(``pgd``).

Both are update attacks (``craft``): they act on the rows the malicious
clients send, after local training and after the client-side transforms (a
malicious client does not run a defence meant to restrain it). Combine them
with a data backdoor through ``attack.combine``.

References:
  Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To Backdoor Federated
  Learning", AISTATS 2020 (model replacement; constrain-and-scale);
  Bhagoji et al., "Analyzing Federated Learning through an Adversarial
  Lens", ICML 2019 (explicit boosting);
  Sun et al., "Can You Really Backdoor Federated Learning?", 2019 (boosted
  and norm-bounded attacks, TFF ``ClientProjectBoost``).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from fljax.aggregators import _linalg
from fljax.aggregators.base import finite_rows
from fljax.attacks import backdoor as bd
from fljax.attacks.base import UpdateAttack


def replacement_boost(n: int, context, gamma=None) -> jnp.ndarray:
    """``gamma``, or by default ``n / server_lr`` (1 when the context has none)."""
    if gamma is not None:
        return jnp.asarray(gamma, jnp.float32)
    lr = getattr(context, "server_lr", None)
    lr = jnp.asarray(1.0 if lr is None else lr, jnp.float32)
    return n / lr


def when_any(malicious, fn, updates):
    """``fn(updates)`` if any row is malicious, else ``updates`` untouched: in
    the many rounds no attacker is sampled, the pass over the ``[n, d]`` matrix
    is skipped (under ``vmap`` over a sweep's cells both branches run)."""
    return jax.lax.cond(jnp.any(malicious), fn, lambda u: u, updates)


def model_replacement(gamma: Optional[float] = None) -> UpdateAttack:
    """Malicious rows ``u`` become ``gamma * u``.

    Args:
      gamma: the boost (a value, > 0). None: ``n / server_lr``, with ``n`` the
        clients of the round, which replaces the global model under the
        unweighted mean. Under FedAvg's example-count weighting the
        attacker's share is its examples over the round's, so the same
        ``gamma`` replaces only approximately (Sun et al.'s code boosts by the
        clients per round under the weighted mean, too).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack`; ``info = {'boost': float[]}``.

    References:
      Bagdasaryan et al., AISTATS 2020, eq. (3): ``gamma = n / eta``.
    """
    if gamma is not None:
        bd.check_positive("model_replacement", "gamma", gamma)

    def craft(updates, malicious, key, context=None):
        del key
        g = replacement_boost(updates.shape[0], context, gamma)
        boost = lambda u: jnp.where(malicious[:, None], (g * u).astype(u.dtype), u)  # noqa: E731
        return when_any(malicious, boost, updates), {"boost": g}

    return UpdateAttack(craft)


def constrain_and_scale(norm_bound: float, gamma: Optional[float] = None) -> UpdateAttack:
    """Boost each malicious row as model replacement would, but never past ``norm_bound``.

    A malicious row ``u`` becomes ``min(gamma, M / ||u||) * u``: an attacker
    who knows the norm bound ``M`` a defence enforces scales its update up to
    the bound, so a boosted update lands exactly on it (Bagdasaryan et al.'s
    "scale" step with ``gamma = S / ||X - G||``). Train inside the ball
    (``pgd`` with a smaller radius) for Sun et al.'s norm-bounded attack.

    Args:
      norm_bound: ``M`` (a value, > 0).
      gamma: the largest boost (a value, > 0; None: ``n / server_lr``).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack`; ``info = {'boost': float[]}``
      (the mean factor applied to the malicious rows; NaN when none).

    References:
      Bagdasaryan et al., AISTATS 2020, section 4 (constrain-and-scale).
    """
    bd.check_positive("constrain_and_scale", "norm_bound", norm_bound)
    if gamma is not None:
        bd.check_positive("constrain_and_scale", "gamma", gamma)

    def craft(updates, malicious, key, context=None):
        del key
        g = replacement_boost(updates.shape[0], context, gamma)
        scale, base = _linalg.row_norms(updates, finite_rows(updates))  # float[n] each
        norm = scale * base
        bound = jnp.asarray(norm_bound, jnp.float32)
        factor = jnp.where(norm > 0, jnp.minimum(g, bound / jnp.where(norm > 0, norm, 1.0)), g)
        m = malicious.astype(jnp.float32)
        mean = jnp.where(jnp.sum(m) > 0, jnp.sum(factor * m) / jnp.maximum(jnp.sum(m), 1.0),
                         jnp.nan)
        scale = lambda u: jnp.where(malicious[:, None], (factor[:, None] * u).astype(u.dtype), u)  # noqa
        return when_any(malicious, scale, updates), {"boost": mean}

    return UpdateAttack(craft)
