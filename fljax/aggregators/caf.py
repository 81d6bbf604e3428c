"""Covariance-bound agnostic filter (CAF; Allouah, Guerraoui, Stephan, ICML 2025).

References:
  Allouah, Guerraoui, Stephan, "Towards Trustworthy Federated Learning with
  Untrusted Participants", ICML 2025 (Algorithm 2, CAF).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators._linalg import weighted_row_sum
from fljax.aggregators._spectral import top_eigen
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.aggregators.meamed import check_majority
from fljax.aggregators.smea import robust_centred_gram

_HIGHEST = lax.Precision.HIGHEST


def caf_weights(gram: jax.Array, usable: jax.Array, threshold: jax.Array):
    """CAF's filter on the Gram matrix of the rows (all work is ``[n, n]``).

    With weights ``c`` (``w = c / Σc``) and ``y_i = x_i - μ_c``, the weighted
    covariance ``Σ_i w_i y_i y_iᵀ`` has the nonzero eigenvalues of ``A =
    diag(√w) K diag(√w)`` where ``K = (I - 1wᵀ) G (I - w1ᵀ)`` holds the
    ``y_i · y_j`` (``G`` is the Gram matrix about any fixed centre). If ``a``
    is A's top unit eigenvector (eigenvalue ``λ``), the top direction in
    parameter space is ``v = Σ_i √w_i a_i y_i / √λ`` and the projections are
    ``y_i · v = (K diag(√w) a)_i / √λ``.

    Args:
      gram: ``float[n, n]``, finite (rows not ``usable`` are ignored).
      usable: ``bool[n]``, rows that take part (start with weight 1).
      threshold: the loop runs while ``Σ c > threshold``.

    Returns:
      ``(w_best float[n], lam_best float[], num_iters int32[])``: the
      normalised weights of the mean with the smallest top eigenvalue seen.
    """
    n = gram.shape[0]
    c0 = usable.astype(gram.dtype)
    # The filter is scale-invariant: work on G / max diag(G) so that rows of
    # norm up to ~1e19 (whose Gram entries are finite) do not overflow the
    # squared projections (τ ~ G²), and scale λ back at the end.
    scale = jnp.max(jnp.where(usable, jnp.abs(jnp.diagonal(gram)), 0.0))
    scale = jnp.where(scale > 0, scale, 1.0)
    gram = gram / scale

    def stats(c):
        w = c / jnp.maximum(jnp.sum(c), 1e-30)
        gw = jnp.matmul(gram, w, precision=_HIGHEST)
        k = gram - gw[:, None] - gw[None, :] + jnp.dot(w, gw, precision=_HIGHEST)
        k = jnp.where(usable[:, None] & usable[None, :], k, 0.0)
        sw = jnp.sqrt(w)
        lam, a = top_eigen(sw[:, None] * k * sw[None, :])
        proj = jnp.matmul(k, sw * a, precision=_HIGHEST)  # √λ · (y_i · v)
        tau = jnp.where(lam > 0, proj * proj / jnp.where(lam > 0, lam, 1.0), 0.0)
        return w, lam, tau

    def cond(carry):
        c, _, _, it, stop = carry
        return (jnp.sum(c) > threshold) & ~stop & (it < n)

    def body(carry):
        c, w_best, lam_best, it, _ = carry
        w, lam, tau = stats(c)
        better = lam < lam_best
        w_best = jnp.where(better, w, w_best)
        lam_best = jnp.where(better, lam, lam_best)
        tau_max = jnp.max(jnp.where(c > 0, tau, 0.0))
        ratio = tau / jnp.where(tau_max > 0, tau_max, 1.0)
        # The row(s) at the maximum drop to exactly 0 (XLA may divide through a
        # reciprocal, leaving 1 - ratio at ~1e-8 and the row in play forever).
        c = jnp.where(tau_max > 0, jnp.where(tau >= tau_max, 0.0, c * (1.0 - ratio)), c)
        c = jnp.maximum(c, 0.0)
        return c, w_best, lam_best, it + 1, tau_max <= 0

    w0 = c0 / jnp.maximum(jnp.sum(c0), 1.0)
    _, w_best, lam_best, iters, _ = lax.while_loop(
        cond, body, (c0, w0, jnp.asarray(jnp.inf, gram.dtype), jnp.int32(0), jnp.bool_(False)))
    return w_best, lam_best * scale, iters


def caf(num_byzantine: int) -> Aggregator:
    """Filter by the top eigenvector of the weighted covariance; the best weighted mean.

    ::

        c_i = 1
        while Σ c_i > n - 2f:
            μ_c = Σ c_i x_i / Σ c_i
            (λ, v) = top eigenpair of Σ_c = Σ c_i (x_i - μ_c)(x_i - μ_c)ᵀ / Σ c_i
            τ_i = ((x_i - μ_c) · v)²
            c_i ← c_i (1 - τ_i / max_{j: c_j > 0} τ_j)
        return the μ_c with the smallest λ seen (the plain mean when f = 0)

    Everything runs on the ``[n, n]`` Gram matrix of the rows (one pass over
    the updates) and one weighted sum at the end; ``λ`` and ``v`` are the
    exact top eigenpair (repeated squaring, ``_spectral.top_eigen``).

    Deviations from ByzFL's ``CAF`` (which follows the same loop): ByzFL
    estimates ``(λ, v)`` with one power-method step from a random vector
    (random, and far from the top eigenpair); its ``max_j τ_j`` runs over all
    rows, also those already at weight 0, whose ``τ`` can stay the largest and
    stall the loop, while here it runs over the rows still in play, so every
    step removes at least one row and the loop ends within ``n`` steps (the
    usual weighted filter); with ``f = 0`` ByzFL returns ``None``, here the
    mean.

    Non-finite rows start at weight 0 and count towards ``f``: with ``k`` of
    them the loop runs on the ``n - k`` finite rows with ``f' = max(f - k, 0)``.
    Rows so large that their Gram entries overflow float32 (norm above ~1e19)
    are treated the same way.

    Args:
      num_byzantine: ``f`` (static); needs ``n > 2f``.

    Returns:
      An :class:`Aggregator` with ``info = {'weights': float[n]`` (of the
      returned mean), ``'max_eigenvalue': float[], 'num_iters': int32[],
      'num_nonfinite': int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = caf(1)
      >>> x = jnp.array([[0., 1.], [0.2, 1.1], [-0.1, 0.9], [30., -40.]])
      >>> [round(v, 3) for v in agg.aggregate(x, agg.init(2), jax.random.PRNGKey(0))[0].tolist()]
      [0.033, 1.0]

    References:
      Allouah, Guerraoui, Stephan, ICML 2025, Algorithm 2.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "caf",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")

    def aggregate(updates, state, key, context=None):
        del key, context
        n = updates.shape[0]
        check_majority("caf", n, num_byzantine)
        valid = finite_rows(updates)  # bool[n]
        gram = robust_centred_gram(updates, valid)  # float[n, n]
        usable = valid & jnp.isfinite(jnp.diagonal(gram)) & jnp.all(
            jnp.isfinite(gram) | ~valid[None, :], axis=1)
        gram = jnp.where(usable[:, None] & usable[None, :], gram, 0.0)
        num_bad = n - jnp.sum(usable.astype(jnp.int32))
        f_left = jnp.maximum(num_byzantine - num_bad, 0)
        threshold = (n - num_bad - 2 * f_left).astype(updates.dtype)
        w, lam, iters = caf_weights(gram, usable, threshold)
        out = weighted_row_sum(updates, w.astype(updates.dtype), usable)
        info = {"weights": w, "max_eigenvalue": lam, "num_iters": iters,
                "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, state, info

    return Aggregator(init_empty, aggregate)
