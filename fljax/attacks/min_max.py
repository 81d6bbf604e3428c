"""Min-Max and Min-Sum (Shejwalkar & Houmansadr): the farthest point along ``-delta``
that stays inside the honest rows' own spread.

References:
  Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
  Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from fljax.aggregators import _linalg, _ops
from fljax.attacks import _common
from fljax.attacks.base import UpdateAttack, check_knowledge, is_number

PERTURBATIONS = ("unit", "sign", "std")


def perturbation_direction(kind: str, updates: jax.Array, known: jax.Array,
                           mu: jax.Array) -> jax.Array:
    """``float[d]``: ``mu / |mu|`` (``'unit'``, zero if ``mu = 0``), ``sign(mu)``
    (``'sign'``) or the known rows' per-coordinate std, ddof = 1 (``'std'``), as in
    the reference code (``unit_vec``, ``sign``, ``std``)."""
    if kind == "unit":
        norm = _common.l2_norm(mu)
        return jnp.where((norm > 0) & jnp.isfinite(norm), mu / norm, 0.0)
    if kind == "sign":
        return jnp.sign(mu)
    return jnp.sqrt(_common.var_of(updates, known, mu, ddof=1))


def _min_max_gamma(updates, valid, known, mu, delta, dd):
    """Largest ``gamma`` with ``max_i |mu - gamma delta - x_i|^2 <= max_{i,j} |x_i - x_j|^2``.

    Per known row ``i`` (``a_i = |mu - x_i|^2``, ``b_i = delta . (mu - x_i)``,
    ``C = |delta|^2``, ``T`` the largest squared distance between known rows)
    the constraint ``C g^2 - 2 b_i g + a_i - T <= 0`` holds on an interval
    around 0 (``a_i <= T``: ``mu`` lies in the rows' convex hull) whose upper end
    is ``(b_i + sqrt(b_i^2 + C (T - a_i))) / C``, written as
    ``(T - a_i) / (sqrt(.) - b_i)`` when ``b_i < 0`` (no cancellation); the
    answer is the smallest upper end.
    """
    gram = _ops.map_valid_rows(
        lambda u: _ops.centred_gram_blocked(u, mu, known), updates, valid)  # float[n, n]
    sq = jnp.diagonal(gram)  # |x_i - mu|^2 on known rows
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    pair = known[:, None] & known[None, :]
    t = jnp.max(jnp.where(pair, dist, 0.0))
    # b_i = delta.mu - delta.x_i: one matvec (a fused row reduction of the
    # centred rows ran ~3x slower on XLA:CPU).
    b = jnp.where(known, jnp.dot(delta, mu, precision=jax.lax.Precision.HIGHEST)
                  - _common.row_dots(updates, delta[None, :])[:, 0], 0.0)
    a = jnp.minimum(sq, t)  # rounding may put a_i a hair above T
    root = jnp.sqrt(jnp.square(b) + dd * (t - a))
    plus = (b + root) / jnp.where(dd > 0, dd, 1.0)
    denom = root - b
    minus = jnp.where(denom > 0, (t - a) / jnp.where(denom > 0, denom, 1.0), 0.0)
    upper = jnp.where(b >= 0, plus, minus)
    return jnp.min(jnp.where(known, upper, jnp.inf))


def _min_sum_gamma(updates, valid, known, mu, delta, dd):
    """Largest ``gamma`` with ``sum_i |mu - gamma delta - x_i|^2 <= min_i sum_j |x_i - x_j|^2``.

    With ``mu`` the mean of the known rows ``sum_i b_i = 0``, the left side is
    ``sum_i a_i + m gamma^2 C`` and the right ``m min_i a_i + sum_j a_j``, so
    ``gamma = sqrt(min_i a_i / C)`` (byzantine.md section 3.7).
    """
    del valid
    scale, base = _linalg.row_norms(updates, known, centre=mu)  # |x_i - mu| = scale * base
    dist_min = jnp.min(jnp.where(known, scale * base, jnp.inf))
    return dist_min / jnp.sqrt(jnp.where(dd > 0, dd, 1.0))


def _shejwalkar(name: str, gamma_fn, perturbation: str, cap, knowledge: str) -> UpdateAttack:
    check_knowledge(name, knowledge)
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"{name}: perturbation={perturbation!r} must be one of {PERTURBATIONS}")
    if cap is not None and is_number(cap) and not cap > 0:
        raise ValueError(f"{name}: cap={cap} must be > 0 (or None)")

    def craft(updates, malicious, key, context=None):
        del key, context
        valid, known = _common.known_rows(updates, malicious, knowledge)
        mu = _common.mean_of(updates, valid, known)  # float[d]
        delta = perturbation_direction(perturbation, updates, known, mu)  # float[d]
        dd = jnp.sum(jnp.square(delta))  # |delta|^2
        gamma = gamma_fn(updates, valid, known, mu, delta, dd)
        gamma = jnp.where(dd > 0, gamma, 0.0)  # delta = 0: every gamma gives mu
        if cap is not None:
            gamma = jnp.minimum(gamma, jnp.asarray(cap, gamma.dtype))
        crafted = mu - gamma * delta  # float[d]
        ok = (_common.can_learn(malicious, known, 2) & jnp.isfinite(gamma)
              & _common.all_finite(crafted))
        out = _common.replace_rows(updates, malicious, crafted, ok)
        return out, {"gamma": jnp.where(ok, gamma, 0.0).astype(jnp.float32), "fallback": ~ok}

    return UpdateAttack(craft)


def min_max(perturbation: str = "unit", cap: Optional[float] = None,
            knowledge: str = "full") -> UpdateAttack:
    """Min-Max: every malicious row is ``mu - gamma * delta`` with the largest
    ``gamma`` that keeps it no farther from any known row than the two farthest
    known rows are from each other.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu    = mean of the known rows;  delta = mu/|mu|, sign(mu) or std (ddof 1)
        gamma = max{g : max_i |mu - g delta - x_i|^2 <= max_{i,j} |x_i - x_j|^2}
              = min_i (b_i + sqrt(b_i^2 + C (T - a_i))) / C    # closed form, i, j known
                with a_i = |mu - x_i|^2, b_i = delta.(mu - x_i), C = |delta|^2, T = max_{i,j}
        gamma = min(gamma, cap)                                # only if cap is given
        every malicious row <- mu - gamma * delta

    ``T`` comes from one centred Gram matrix of the known rows (O(n^2 d), about
    one Krum aggregation); the rest is O(n d). The reference code finds
    ``gamma`` by a halving search that starts at 10 with step 10 (stop at
    1e-5), so it never exceeds 20 (byzantine.md section 3.7): ``cap=20``
    reproduces it (to the search's 1e-5), ``cap=None`` is the exact supremum.
    With fewer than two known rows the malicious clients send their honest
    updates and ``info['fallback']`` is True.

    Args:
      perturbation: ``'unit'`` (default, the paper's ``unit_vec``), ``'sign'``
        or ``'std'`` (static).
      cap: optional upper bound on ``gamma`` (a value ``> 0``; may be traced).
      knowledge: ``'full'`` or ``'partial'`` (static).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'gamma':
      float32[], 'fallback': bool[]}``.

    References:
      Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
      Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    return _shejwalkar("min_max", _min_max_gamma, perturbation, cap, knowledge)


def min_sum(perturbation: str = "unit", cap: Optional[float] = None,
            knowledge: str = "full") -> UpdateAttack:
    """Min-Sum: every malicious row is ``mu - gamma * delta`` with the largest
    ``gamma`` that keeps its sum of squared distances to the known rows within
    the smallest such sum of a known row.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu    = mean of the known rows;  delta = mu/|mu|, sign(mu) or std (ddof 1)
        gamma = max{g : sum_i |mu - g delta - x_i|^2 <= min_i sum_j |x_i - x_j|^2}
              = min_i |mu - x_i| / |delta|                     # closed form
        gamma = min(gamma, cap)                                # only if cap is given
        every malicious row <- mu - gamma * delta

    O(n d), no pairwise distances. ``cap=20`` reproduces the reference code's
    halving search (which never exceeds 20, see :func:`min_max`);
    ``cap=None`` is the exact supremum. With fewer than two known rows the
    malicious clients send their honest updates and ``info['fallback']`` is
    True.

    Args:
      perturbation: ``'unit'`` (default), ``'sign'`` or ``'std'`` (static).
      cap: optional upper bound on ``gamma`` (a value ``> 0``; may be traced).
      knowledge: ``'full'`` or ``'partial'`` (static).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'gamma':
      float32[], 'fallback': bool[]}``.

    References:
      Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
      Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.
    """
    return _shejwalkar("min_sum", _min_sum_gamma, perturbation, cap, knowledge)
