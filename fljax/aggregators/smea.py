"""Smallest maximum eigenvalue averaging (SMEA; Allouah et al., ICML 2023).

References:
  Allouah, Guerraoui, Gupta, Pinot, Stephan, "On the Privacy-Robustness-Utility
  Trilemma in Distributed Learning", ICML 2023.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _ops
from fljax.aggregators._linalg import weighted_row_sum
from fljax.aggregators._spectral import top_eigen
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.aggregators.meamed import check_majority

# Work bound of the exact search: C(n, f) eigenvalue problems of size n - f.
# C(n, f) * (n - f)^3 <= 2^33 allows f = 1 at n = 200, f = 9 at n = 25, any f < n/2 at n = 20.
MAX_WORK = 2**33

# Subsets per step of the batched eigenvalue computation (bounds the memory).
_BATCH = 64


def check_smea_size(rule: str, n: int, num_byzantine: int, max_work: int = MAX_WORK) -> None:
    """Raises a ``ValueError`` unless ``C(n, f) · (n - f)^3 <= max_work``."""
    work = math.comb(n, num_byzantine) * (n - num_byzantine) ** 3
    largest = 0
    while largest + 1 < n and math.comb(n, largest + 1) * (n - largest - 1) ** 3 <= max_work:
        largest += 1
    require(work <= max_work, rule,
            f"the exhaustive search solves C(n, f) eigenvalue problems of size n - f: "
            f"C({n}, {num_byzantine}) * {n - num_byzantine}^3 = {work:.3g} exceeds the bound "
            f"{max_work:.3g} (C(n, f) * (n - f)^3 <= {max_work:.3g}); with n={n} num_byzantine "
            f"can be at most {largest}")


def robust_centred_gram(updates: jax.Array, valid: jax.Array) -> jax.Array:
    """``c cᵀ`` for ``c_i = x_i - centre`` (invalid rows zero), without an ``[n, d]`` copy.

    The centre is the mean of the valid rows whose norm is at most the median
    valid norm (as in ``_ops.pairwise_sq_dists``), so a few huge rows cannot
    drag it away from the bulk and spoil the digits of the other entries.
    """
    sq = jnp.sum(jnp.square(updates), axis=1)  # float[n]; inf for huge rows
    sq = jnp.where(valid, sq, jnp.inf)
    num_valid = jnp.sum(valid)
    med = jnp.sort(sq)[jnp.maximum((num_valid - 1) // 2, 0)]
    w = (valid & (sq <= med)).astype(updates.dtype)
    w = w / jnp.maximum(jnp.sum(w), 1.0)

    def gram(x):
        centre = jnp.dot(w, x, precision=lax.Precision.HIGHEST)  # float[d]
        return _ops.centred_gram_blocked(x, centre, valid)

    return _ops.map_valid_rows(gram, updates, valid)


def subset_max_eigenvalues(gram: jax.Array, kept: np.ndarray) -> jax.Array:
    """``λ_max`` of the covariance of each subset, from the Gram matrix of the rows.

    For a subset ``T`` of ``k`` rows the nonzero eigenvalues of
    ``Σ_T = (1/k) Σ_{i in T} (x_i - μ_T)(x_i - μ_T)ᵀ`` are those of
    ``H G_TT H / k`` (``H`` the ``k x k`` centring matrix), so no ``d x d``
    matrix is formed. Non-finite Gram entries give ``+inf``.

    Args:
      gram: ``float[n, n]``.
      kept: ``int[C, k]`` row indices of the subsets (static).

    Returns:
      ``float[C]``.
    """
    k = kept.shape[1]
    centring = jnp.eye(k, dtype=gram.dtype) - 1.0 / k

    def one(idx):  # int[k] -> float[]
        sub = gram[idx][:, idx]
        ok = jnp.all(jnp.isfinite(sub))
        sub = jnp.where(ok, sub, 0.0)
        c = jnp.matmul(jnp.matmul(centring, sub, precision=lax.Precision.HIGHEST), centring,
                       precision=lax.Precision.HIGHEST)
        lam = top_eigen(c)[0] / k
        return jnp.where(ok, lam, jnp.inf)

    return lax.map(one, jnp.asarray(kept, jnp.int32), batch_size=_BATCH)


def smea(num_byzantine: int, max_work: int = MAX_WORK) -> Aggregator:
    """The mean of the ``n - f`` rows whose covariance has the smallest top eigenvalue.

    ::

        S* = argmin_{|S| = n - f} λ_max( (1/|S|) Σ_{i in S} (x_i - μ_S)(x_i - μ_S)ᵀ )
        y  = mean_{i in S*} x_i

    Exhaustive: every one of the ``C(n, f)`` subsets is scored with the top
    eigenvalue of its ``(n - f) x (n - f)`` centred Gram matrix (one ``[n, n]``
    Gram matrix of the rows is computed once; the eigenvalue by repeated
    squaring, float32-accurate, see ``_spectral.top_eigen``). ByzFL estimates ``λ_max`` with
    a single power-method step from a random vector, which is noisy and
    random: the two agree where the minimal subset stands out (``f`` clear
    outliers; tested). The size bound ``C(n, f) · (n - f)^3 <= max_work`` is
    checked when the rule is traced, and the error states it. Exact ties in
    ``λ_max`` (e.g. identical rows) take the first subset in
    ``itertools.combinations`` order.

    Non-finite rows give every subset that holds them ``λ = +inf``: they are
    dropped first and count towards ``f``. Rows so large that their Gram
    entries overflow are treated the same way.

    Args:
      num_byzantine: ``f`` (static); needs ``n > 2f`` and the size bound.
      max_work: the feasibility bound (static; default ``2^33``).

    Returns:
      An :class:`Aggregator` with ``info = {'selected': bool[n],
      'max_eigenvalue': float[]`` (of the chosen subset), ``'num_nonfinite':
      int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = smea(1)
      >>> x = jnp.array([[1., 2.], [4., 5.], [7., 8.]])
      >>> agg.aggregate(x, agg.init(2), jax.random.PRNGKey(0))[0].tolist()
      [2.5, 3.5]

    References:
      Allouah et al., "On the Privacy-Robustness-Utility Trilemma in
      Distributed Learning", ICML 2023.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "smea",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")

    def aggregate(updates, state, key, context=None):
        del key, context
        n = updates.shape[0]
        check_majority("smea", n, num_byzantine)
        check_smea_size("smea", n, num_byzantine, max_work)
        valid = finite_rows(updates)  # bool[n]
        gram = robust_centred_gram(updates, valid)  # float[n, n]
        gram = jnp.where(valid[:, None] & valid[None, :], gram, jnp.inf)
        kept = np.array(list(itertools.combinations(range(n), n - num_byzantine)), np.int32)
        lam = subset_max_eigenvalues(gram, kept)  # float[C]
        best = jnp.argmin(jnp.where(jnp.isnan(lam), jnp.inf, lam))
        keep = jnp.zeros((n,), bool).at[jnp.asarray(kept)[best]].set(True) & valid
        count = jnp.maximum(jnp.sum(keep), 1).astype(updates.dtype)
        out = weighted_row_sum(updates, jnp.where(keep, 1.0 / count, 0.0), valid)
        info = {"selected": keep, "max_eigenvalue": lam[best],
                "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, state, info

    return Aggregator(init_empty, aggregate)
