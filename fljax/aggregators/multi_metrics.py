"""Multi-Metrics: cosine, Manhattan and length scores, Mahalanobis combination (Huang et al., ICCV 2023).

References:
  Huang, Li, Lu, Chen, Wei, Wang, "Multi-Metrics Adaptively Identifies
  Backdoors in Federated Learning", ICCV 2023; official code
  ``siquanhuang/Multi-metrics`` (``defense.py``, class ``Multi_metrics``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _ops
from fljax.aggregators._linalg import row_norms, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require

_HIGHEST = lax.Precision.HIGHEST
ON = ("models", "updates")

# Column tile of the pairwise Manhattan sums (an [n, n, tile] block of
# differences per step). Measured at 200 x 1M on the 2-core CPU under load:
# 16 columns 28 s, 64 columns 12 s, 256 columns 5.0 s, 1024 columns 10.7 s.
L1_COLUMNS = 256


def pairwise_l1(x: jax.Array, valid: jax.Array, columns: int = L1_COLUMNS) -> jax.Array:
    """``float[n, n]`` Manhattan distances between the rows of ``x`` (invalid rows zero).

    ``O(n² d)``: a ``lax.scan`` over column tiles, each adding the ``[n, n]``
    sums of one ``[n, n, columns]`` block of absolute differences.
    """
    n, d = x.shape
    w = min(columns, d)
    num_full = d // w

    def block(t):  # float[n, w] -> float[n, n]
        t = jnp.where(valid[:, None], t, 0.0)
        return jnp.sum(jnp.abs(t[:, None, :] - t[None, :, :]), axis=-1)

    acc, _ = lax.scan(
        lambda a, i: (a + block(lax.dynamic_slice_in_dim(x, i * w, w, axis=1)), None),
        jnp.zeros((n, n), x.dtype), jnp.arange(num_full))
    if d > num_full * w:
        acc = acc + block(x[:, num_full * w:])
    return acc


def affine_gram(x, row_scale, shift, shift_scale, offset, valid, columns=_ops.GRAM_COLUMNS):
    """Gram matrix of ``r_i = x_i · row_scale_i + shift · shift_scale_i + offset`` (valid rows).

    A ``lax.scan`` over column blocks forms each block of ``r`` in cache; no
    ``[n, d]`` array is materialised.
    """
    n, d = x.shape
    w = min(columns, d)
    num_full = d // w

    def block(xs, ss, os):
        r = xs * row_scale[:, None] + ss[None, :] * shift_scale[:, None] + os[None, :]
        r = jnp.where(valid[:, None], r, 0.0)
        return jnp.matmul(r, r.T, precision=_HIGHEST)

    def step(g, i):
        sl = lambda a, ax: lax.dynamic_slice_in_dim(a, i * w, w, axis=ax)  # noqa: E731
        return g + block(sl(x, 1), sl(shift, 0), sl(offset, 0)), None

    g, _ = lax.scan(step, jnp.zeros((n, n), x.dtype), jnp.arange(num_full))
    if d > num_full * w:
        s = num_full * w
        g = g + block(x[:, s:], shift[s:], offset[s:])
    return g


def metric_features(updates: jax.Array, valid: jax.Array, shift: jax.Array) -> jax.Array:
    """The three per-client sums of the official code, each up to a positive factor.

    For the vectors ``w_i = Δ_i + shift`` (the local models, or the updates
    with ``shift = 0``)::

        cos_i = Σ_{j≠i} (1 - cos(w_i, w_j))²
        man_i = Σ_{j≠i} ‖w_i - w_j‖₁          (= ‖Δ_i - Δ_j‖₁)
        len_i = Σ_{j≠i} |‖w_i‖ - ‖w_j‖|

    over the valid rows. ``1 - cos`` is ``‖u_i - u_j‖² / 2`` for unit vectors
    ``u``, from the Gram matrix of the *centred* unit vectors (no cancellation
    when the models share a large common part); a zero vector has cosine 0.
    Norms come as power-of-two scale times a finite factor
    (``_linalg.row_norms``), and the Manhattan distances are taken on the
    updates times a power of two below ``1 / max |Δ|``, so rows near float32's
    largest value overflow nothing. The factors are positive constants per
    feature, which the Mahalanobis score ignores.

    Returns:
      ``float[n, 3]`` (zero rows for invalid clients).
    """
    n = updates.shape[0]
    m = jnp.maximum(jnp.sum(valid), 1).astype(updates.dtype)
    scale, base = row_norms(updates, valid, -shift)  # ‖w_i‖ = scale_i · base_i
    inv_s = 1.0 / scale
    inv_b = jnp.where(base > 0, 1.0 / jnp.where(base > 0, base, 1.0), 0.0)
    row_scale = inv_s * inv_b  # applied as (x_i · inv_s) · inv_b in effect: both exact-range
    # Mean unit vector over the valid rows.
    unit_mean = (weighted_row_sum(updates, inv_b / m, valid, scale=scale)
                 + shift * jnp.sum(jnp.where(valid, row_scale, 0.0)) / m)
    gram = affine_gram(updates, row_scale, shift, row_scale, -unit_mean, valid)
    sq = jnp.diagonal(gram)
    cos_dist = jnp.clip(0.5 * (sq[:, None] + sq[None, :] - 2.0 * gram), 0.0, 2.0)
    nonzero = valid & (base > 0)
    cos_dist = jnp.where(nonzero[:, None] & nonzero[None, :], cos_dist, 1.0)
    pair = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)
    cos_f = jnp.sum(jnp.where(pair, cos_dist * cos_dist, 0.0), axis=1)

    top = jnp.max(jnp.where(valid[:, None], jnp.abs(updates), 0.0))
    _, e = jnp.frexp(jnp.where(top > 0, top, 1.0))
    l1_scale = jnp.ldexp(jnp.ones((), updates.dtype), -jnp.minimum(e, 126))  # 2^-e <= 1 / top
    l1 = pairwise_l1(updates * l1_scale, valid)
    man_f = jnp.sum(jnp.where(pair, l1, 0.0), axis=1)

    big = jnp.max(jnp.where(valid, scale, 0.0))
    rel = jnp.where(valid, (scale / jnp.where(big > 0, big, 1.0)) * base, 0.0)  # ‖w_i‖ / big
    len_f = jnp.sum(jnp.where(pair, jnp.abs(rel[:, None] - rel[None, :]), 0.0), axis=1)
    feats = jnp.stack([cos_f, man_f, len_f], axis=1)
    return jnp.where(valid[:, None], feats, 0.0)


def mahalanobis_scores(feats: jax.Array, valid: jax.Array) -> jax.Array:
    """``t_iᵀ Σ⁺ t_i`` with ``Σ`` the covariance (ddof 1) of the valid rows' features.

    Uncentred ``t_i``, as the official code; the pseudo-inverse instead of its
    ``np.linalg.inv`` (equal when ``Σ`` is invertible; the official code fails
    when it is not, e.g. when every client sent the same update).
    Each feature is first divided by its largest value (the score does not
    change) so the covariance cannot overflow.
    """
    top = jnp.max(jnp.where(valid[:, None], jnp.abs(feats), 0.0), axis=0)
    t = feats / jnp.where(top > 0, top, 1.0)[None, :]
    m = jnp.sum(valid).astype(feats.dtype)
    mu = jnp.sum(jnp.where(valid[:, None], t, 0.0), axis=0) / jnp.maximum(m, 1.0)
    c = jnp.where(valid[:, None], t - mu[None, :], 0.0)
    cov = jnp.matmul(c.T, c, precision=_HIGHEST) / jnp.maximum(m - 1.0, 1.0)
    inv = jnp.linalg.pinv(cov)
    return jnp.sum(jnp.matmul(t, inv, precision=_HIGHEST) * t, axis=1)


def multi_metrics(p: float = 0.3, on: str = "models") -> Aggregator:
    """Score clients by three distance sums combined à la Mahalanobis; average the best ``p``.

    ::

        w_i   = params + Δ_i                         (on='models', the official code)
        t_i   = (Σ_j (1 - cos(w_i, w_j))², Σ_j ‖w_i - w_j‖₁, Σ_j |‖w_i‖ - ‖w_j‖|)
        Σ     = covariance of the t_i;   s_i = t_iᵀ Σ⁻¹ t_i
        keep  = the floor(p · n) clients with the lowest s_i
        y     = Σ_{i in keep} ω_i Δ_i / Σ_{i in keep} ω_i     (ω: context.weights, the
                example counts, as the official code's num_dps; uniform without them)

    The official code averages the selected *models*; with weights summing to
    one that is ``params`` plus the weighted mean of the selected updates,
    which is what is returned (an update). The Manhattan sums cost ``O(n² d)``
    (``pairwise_l1``); the cosine and length terms one Gram matrix. Ties in
    the score are broken by a random rank per client from ``key``.

    Non-finite rows are screened (removed before the rule: the sums, the
    covariance and ``n`` count the finite rows only). Rows near float32's
    largest value are handled (every feature is computed in a rescaled form).

    Args:
      p: share of the clients kept (a value: it may be traced; 0.3, hard-coded
        in the official code). ``floor(p · n)`` must be at least 1 (checked
        for a Python ``p``).
      on: ``'models'`` (the paper: needs ``context.params``) or ``'updates'``
        (cosines and norms of the updates).

    Returns:
      An :class:`Aggregator` with ``info = {'scores': float[n], 'selected':
      bool[n], 'num_nonfinite': int32[]}``.

    References:
      Huang et al., ICCV 2023; official ``defense.py``.
    """
    require(on in ON, "multi_metrics", f"on={on!r} must be one of {ON}")
    if isinstance(p, (int, float)):
        require(0 < p <= 1, "multi_metrics", f"p={p} must be in (0, 1]")

    def aggregate(updates, state, key, context=None):
        n, d = updates.shape
        if isinstance(p, (int, float)):
            require(int(p * n) >= 1, "multi_metrics",
                    f"keeps floor(p * n) = {int(p * n)} clients with p={p}, n={n}; needs at least 1")
        if on == "models":
            require(context is not None and context.params is not None, "multi_metrics",
                    "on='models' needs context.params (the global parameters, float[d])")
            shift = context.params.astype(updates.dtype)
        else:
            shift = jnp.zeros((d,), updates.dtype)
        valid = finite_rows(updates)  # bool[n]
        m = jnp.sum(valid.astype(jnp.int32))
        feats = metric_features(updates, valid, shift)
        scores = jnp.where(valid, mahalanobis_scores(feats, valid), jnp.inf)
        order = _ops.tie_break_order(scores, valid, key)
        num_keep = jnp.floor(p * m.astype(jnp.float32)).astype(jnp.int32)
        position = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
        selected = valid & (position < num_keep)
        weights = getattr(context, "weights", None)
        omega = jnp.ones((n,), updates.dtype) if weights is None else weights.astype(updates.dtype)
        omega = jnp.where(selected, omega, 0.0)
        total = jnp.sum(omega)
        omega = jnp.where(total > 0, omega / jnp.where(total > 0, total, 1.0), 0.0)
        out = weighted_row_sum(updates, omega, valid)
        info = {"scores": scores, "selected": selected, "num_nonfinite": n - m}
        return out, state, info

    return Aggregator(init_empty, aggregate)
