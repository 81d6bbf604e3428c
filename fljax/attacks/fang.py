"""Fang et al.'s local model poisoning attacks on Krum / Bulyan and on the trimmed mean / median.

Both push the aggregate against ``s``, the sign of the honest mean update
(the direction the parameters would move without the attack), in update
space: the rows are ``w_local - w_global``, so Fang's crafted model
``w_Re - lambda s`` is the update ``-lambda s`` (byzantine.md sections 1, 3.1-3.4).

References:
  Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
  Federated Learning", USENIX Security 2020.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fljax.aggregators import _ops
from fljax.aggregators.base import require
from fljax.aggregators.krum import check_krum_bound
from fljax.attacks import _common
from fljax.attacks.base import UpdateAttack, check_knowledge, is_number

# Fang's search gives up once lambda halves below this (then the compromised
# clients send their honest updates).
GIVE_UP = 1e-5
# Halving candidates evaluated at once: lambda_max * 2**-k for k < 150 reaches
# 1e-5 from any float32 lambda_max (3.4e38 / 2**149 < 1e-5).
NUM_CANDIDATES = 150


def _prefix_sums(sorted_rows: jax.Array) -> jax.Array:
    """``float[..., m + 1]``: ``P[..., q]`` = sum of the first ``q`` entries (inf-safe)."""
    zero = jnp.zeros(sorted_rows.shape[:-1] + (1,), sorted_rows.dtype)
    return jnp.concatenate([zero, jnp.cumsum(sorted_rows, axis=-1)], axis=-1)


def krum_search(dists, sq_norms, s_dots, s_sq, bench, num_crafted, num_neighbors, dim):
    """Fang's lambda for Krum: every halving candidate scored at once.

    The simulated population is the ``bench`` rows (the honest rows the
    attacker knows) plus ``num_crafted`` copies of ``-lambda s``. For every
    candidate ``lambda_k = lambda_max 2^-k`` the squared distance of a bench
    row ``i`` to the crafted rows is ``e_i = |x_i|^2 + 2 lambda x_i.s +
    lambda^2 |s|^2``, so after one pass over the rows (``sq_norms``,
    ``s_dots``) each candidate costs O(n^2):

    * a crafted row's Krum score: ``c - 1`` crafted neighbours at 0, then the
      smallest ``e_i``;
    * a bench row's score: the sum of its ``k`` smallest among its (sorted)
      distances to the other bench rows and ``c`` copies of ``e_i``, read off
      the prefix sums of its sorted distances.

    The first candidate whose crafted score is strictly below every bench
    row's wins (an exact tie is left to the server's random tie-break, so it
    does not count). Candidates below ``GIVE_UP`` are not tried, except
    ``lambda_max`` itself (as in the sequential search).

    ``lambda_max`` is Fang's bound with Krum's neighbour count ``k`` and the
    ``c`` crafted rows: ``min_i sum_{l in G_i} |x_l - x_i| / ((k - c + 1)
    sqrt(d)) + max_i |x_i| / sqrt(d)`` over bench rows, ``G_i`` the
    ``min(k, |bench| - 1)`` bench rows closest to ``x_i``. With ``k = m - c -
    2`` (the server's ``f`` equal to ``c``) this is the paper's ``m - 2c - 1``.

    Args:
      dists: ``float[n, n]`` squared distances between bench rows (+inf for
        pairs with a non-bench row and on the diagonal).
      sq_norms: ``float[n]`` ``|x_i|^2``; s_dots: ``float[n]`` ``x_i . s``.
      s_sq: ``|s|^2``. bench: ``bool[n]``. num_crafted: ``c`` (traced).
      num_neighbors: Krum's ``k`` (int, may be traced). dim: ``d``.

    Returns:
      ``(lambda, lambda_max, halvings, found)``: ``lambda`` 0 and ``halvings``
      -1 when no candidate wins.
    """
    n = dists.shape[0]
    dtype = dists.dtype
    c, k = num_crafted, num_neighbors
    nb = _common.count(bench)
    sorted_d = jnp.sort(dists, axis=1)  # float[n, n], +inf last
    prefix = _prefix_sums(sorted_d)  # float[n, n + 1]

    # Fang's upper bound (un-squared distances).
    g = jnp.clip(jnp.minimum(k, nb - 1), 0, n - 1)
    near = jnp.take(_prefix_sums(jnp.sqrt(sorted_d)), g, axis=1)  # float[n]
    denom = jnp.maximum(k - c + 1, 1).astype(dtype) * math.sqrt(dim)
    first = jnp.min(jnp.where(bench, near, jnp.inf)) / denom
    norms = jnp.sqrt(jnp.maximum(sq_norms, 0.0))
    second = jnp.max(jnp.where(bench, norms, -jnp.inf)) / math.sqrt(dim)
    lam_max = first + second

    steps = jnp.arange(NUM_CANDIDATES)
    lam = jnp.ldexp(jnp.full((NUM_CANDIDATES,), lam_max, dtype), -steps)  # exact halvings
    tried = (steps == 0) | (lam >= GIVE_UP)
    e = (sq_norms[None, :] + 2.0 * lam[:, None] * s_dots[None, :]
         + jnp.square(lam)[:, None] * s_sq)  # float[K, n]
    e = jnp.where(bench[None, :], jnp.maximum(e, 0.0), jnp.inf)

    # Crafted rows: c - 1 neighbours at distance 0, then the nearest bench rows.
    zeros = jnp.minimum(c - 1, k)
    crafted_score = jnp.take(_prefix_sums(jnp.sort(e, axis=1)), k - zeros, axis=1)  # float[K]

    # Bench rows: merge the sorted bench distances with c copies of e_i.
    below = jnp.sum(sorted_d[None, :, :] < e[:, :, None], axis=2)  # int[K, n]
    j1 = jnp.minimum(below, k)
    t = jnp.minimum(c, k - j1)
    rest = jnp.maximum(k - j1 - t, 0)
    taken = jnp.take_along_axis(prefix[None], (j1 + rest)[:, :, None], axis=2)[..., 0]
    bench_score = taken + jnp.where(t > 0, t.astype(dtype) * e, 0.0)
    best_bench = jnp.min(jnp.where(bench[None, :], bench_score, jnp.inf), axis=1)  # float[K]

    win = tried & jnp.isfinite(lam) & (lam > 0) & (crafted_score < best_bench)
    found = jnp.any(win)
    halvings = jnp.argmax(win)
    lam_star = jnp.where(found, lam[halvings], 0.0)
    return lam_star, lam_max, jnp.where(found, halvings, -1).astype(jnp.int32), found


def fang_krum(num_byzantine: int, knowledge: str = "full", jitter: float = 1e-5) -> UpdateAttack:
    """Fang et al.'s attack on Krum (and Bulyan, whose selection is Krum).

    Algorithm (the sequential search of the paper, evaluated in one batch by
    :func:`krum_search`)::

        known = finite rows (full) | finite malicious rows (partial)
        s     = sign(mean of the known rows)                     # float[d]
        bench = finite non-malicious rows (full) | known (partial)
        lambda = lambda_max                                      # Fang's bound
        loop:
            crafted = -lambda s (the other malicious rows within jitter/d of it)
            if Krum(num_byzantine) over bench + c crafted rows picks a crafted row: break
            lambda /= 2;  if lambda < 1e-5: give up (send the honest updates)

    Krum is scored exactly as :func:`fljax.aggregators.krum` does: squared
    distances, the ``k = n - f - 2`` nearest other rows; a crafted row must
    score strictly lower than every honest row (ties go to the server's random
    tie-break, so they do not count as a win). One pass over ``[n, d]`` (a
    Gram matrix of the bench rows and two matvecs), then O(K n^2) for all
    ``K`` candidates, instead of ``K`` Krum runs.

    Partial knowledge (the paper's recipe: the malicious rows' honest updates
    stand in for the honest rows): the simulated population is the ``c`` known
    rows plus ``c`` crafted rows, and Krum's neighbour count is ``min(n - f -
    2, 2c - 1)`` (the paper's ``m - c - 2`` has no meaning on ``2c`` rows). It
    needs two malicious rows; with fewer, or when no candidate wins, the
    malicious clients send their honest updates and ``info['fallback']`` is
    True.

    Args:
      num_byzantine: the ``f`` of the Krum (or Bulyan) under attack (static);
        needs ``n > 2f + 2``.
      knowledge: ``'full'`` or ``'partial'`` (static).
      jitter: the supporters (all malicious rows but the first) are drawn
        uniformly within ``jitter / d`` of the crafted row per coordinate, as
        in the reference code (``1e-5 / d``); 0 sends identical copies. In
        float32 the jitter is usually below the crafted value's resolution.
        A value (``>= 0``; may be traced).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'lambda':
      float32[], 'lambda_max': float32[], 'halvings': int32[]`` (-1 if none
      won), ``'fallback': bool[]}``.

    References:
      Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
      Federated Learning", USENIX Security 2020.
    """
    f = num_byzantine
    require(f >= 0, "fang_krum", f"num_byzantine must be >= 0, got {f}")
    check_knowledge("fang_krum", knowledge)
    if is_number(jitter) and not jitter >= 0:
        raise ValueError(f"fang_krum: jitter={jitter} must be >= 0")

    def craft(updates, malicious, key, context=None):
        del context
        n, d = updates.shape
        check_krum_bound("fang_krum", n, f)
        valid, known = _common.known_rows(updates, malicious, knowledge)
        c = _common.count(malicious)
        if knowledge == "full":
            bench, k = valid & ~malicious, n - f - 2
        else:
            bench, k = known, jnp.clip(2 * c - 1, 0, n - f - 2)
        mu = _common.mean_of(updates, valid, known)  # float[d]
        s = jnp.sign(mu)  # float[d]
        s_sq = jnp.sum(jnp.abs(s))  # |s|^2
        gram = _ops.map_valid_rows(
            lambda u: _ops.centred_gram_blocked(u, mu, bench), updates, valid)  # float[n, n]
        q = jnp.diagonal(gram)  # |x_i - mu|^2 on bench rows
        dists = jnp.maximum(q[:, None] + q[None, :] - 2.0 * gram, 0.0)
        dists = jnp.where(bench[:, None] & bench[None, :] & ~jnp.eye(n, dtype=bool),
                          dists, jnp.inf)
        dots = _common.row_dots(updates, jnp.stack([mu, s]))  # float[n, 2]
        mu_sq = jnp.sum(jnp.square(mu))
        sq_norms = jnp.where(bench, q + 2.0 * dots[:, 0] - mu_sq, 0.0)  # |x_i|^2
        s_dots = jnp.where(bench, dots[:, 1], 0.0)
        lam, lam_max, halvings, found = krum_search(
            dists, sq_norms, s_dots, s_sq, bench, c, k, d)

        enough = _common.can_learn(malicious, bench, 2 if knowledge == "partial" else 1)
        ok = enough & found & jnp.isfinite(lam_max)
        crafted = (-lam * s)[None, :]  # float[1, d]
        if not (is_number(jitter) and jitter == 0):
            first = jnp.arange(n) == jnp.argmax(malicious)  # the exact crafted row
            u = _common.uniform(key, (n, d), updates.dtype)
            width = jnp.asarray(jitter, updates.dtype) / d
            crafted = crafted + jnp.where(first[:, None], 0.0, (2.0 * u - 1.0) * width)
        out = _common.replace_rows(updates, malicious, crafted, ok)
        info = {
            "lambda": jnp.where(ok, lam, 0.0).astype(jnp.float32),
            "lambda_max": lam_max.astype(jnp.float32),
            "halvings": jnp.where(ok, halvings, -1),
            "fallback": ~ok,
        }
        return out, info

    return UpdateAttack(craft)


def fang_trimmed_mean(knowledge: str = "full", b: float = 2.0) -> UpdateAttack:
    """Fang et al.'s attack on the trimmed mean (and the coordinate-wise median).

    Algorithm (per coordinate ``j``, an independent value per malicious row)::

        known = finite rows (full) | finite malicious rows (partial)
        s_j = sign(mean_j of the known rows)       # 0 is treated as -1
        full:    u_max, u_min = max_j, min_j of the known rows
                 s_j = -1: uniform in [u_max, b u_max] if u_max > 0 else [u_max, u_max / b]
                 s_j = +1: uniform in [u_min / b, u_min] if u_min > 0 else [b u_min, u_min]
        partial: mu_j, sigma_j = mean, std (ddof 0) of the known rows
                 s_j = -1: uniform in [mu_j + 3 sigma_j, mu_j + 4 sigma_j]
                 s_j = +1: uniform in [mu_j - 4 sigma_j, mu_j - 3 sigma_j]

    Every crafted value lies beyond the honest extreme (full) on the side
    opposite to ``s_j``, within a factor ``b`` of it. The masks are
    ``s_j > 0`` and ``s_j <= 0``: the widely copied port that tests ``> 0``
    twice (``max_rand + min_rand`` where the mean is positive, 0 elsewhere;
    byzantine.md section 3.2) is not repeated. The value, not the multiplier,
    is uniform on the interval (the paper; the Fang-lineage code draws the
    multiplier in [1, b], which differs where the extreme is negative).
    Partial knowledge needs two malicious rows; with fewer known rows, or
    non-finite bounds, the malicious clients send their honest updates and
    ``info['fallback']`` is True.

    The noise is :func:`fljax.attacks._common.uniform` (a fused counter hash:
    ``jax.random.uniform`` of ``[n, d]`` costs ~6 Krum aggregations on CPU).

    Args:
      knowledge: ``'full'`` or ``'partial'`` (static).
      b: the factor (a value, ``> 1``; may be traced). Fang et al. use 2.

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'fallback':
      bool[]}``.

    References:
      Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
      Federated Learning", USENIX Security 2020.
    """
    check_knowledge("fang_trimmed_mean", knowledge)
    if is_number(b) and not b > 1:
        raise ValueError(f"fang_trimmed_mean: b={b} must be > 1")

    def craft(updates, malicious, key, context=None):
        del context
        n, d = updates.shape
        valid, known = _common.known_rows(updates, malicious, knowledge)
        if knowledge == "full":
            total, hi_ext, lo_ext = _sum_and_extremes(updates, known)
            up = total > 0  # s_j = +1: the parameter would grow; push below the minimum
            bb = jnp.asarray(b, updates.dtype)
            lo = jnp.where(up, jnp.where(lo_ext > 0, lo_ext / bb, bb * lo_ext), hi_ext)
            hi = jnp.where(up, lo_ext, jnp.where(hi_ext > 0, bb * hi_ext, hi_ext / bb))
            enough = _common.can_learn(malicious, known, 1)
        else:
            mu = _common.mean_of(updates, valid, known)
            sigma = jnp.sqrt(_common.var_of(updates, known, mu, ddof=0))
            up = mu > 0
            lo = jnp.where(up, mu - 4.0 * sigma, mu + 3.0 * sigma)
            hi = jnp.where(up, mu - 3.0 * sigma, mu + 4.0 * sigma)
            enough = _common.can_learn(malicious, known, 2)
        ok = enough & _common.all_finite(lo) & _common.all_finite(hi)
        u = _common.uniform(key, (n, d), updates.dtype)
        crafted = lo[None, :] + (hi - lo)[None, :] * u  # float[n, d], fused into the write
        crafted = jnp.clip(crafted, jnp.minimum(lo, hi)[None, :], jnp.maximum(lo, hi)[None, :])
        return _common.replace_rows(updates, malicious, crafted, ok), {"fallback": ~ok}

    return UpdateAttack(craft)


def _sum_and_extremes(updates, known):
    """``(sum, max, min)`` of the known rows per coordinate, ``float[d]`` each, in
    one pass over column tiles (max -inf and min +inf with no known row)."""
    def tile_fn(tile):  # float[n, b] -> float[3, b]
        k = known[:, None]
        return jnp.stack([jnp.sum(jnp.where(k, tile, 0.0), axis=0),
                          jnp.max(jnp.where(k, tile, -jnp.inf), axis=0),
                          jnp.min(jnp.where(k, tile, jnp.inf), axis=0)])

    out = _ops.blockwise(tile_fn, updates, *_ops.COLUMN_TILING)  # float[3, d]
    return out[0], out[1], out[2]
