"""SignGuard: norm filtering plus clustering of sign statistics (Xu et al., ICDCS 2022).

References:
  Xu, Huang, Song, Lan, "Byzantine-robust Federated Learning through
  Collaborative Malicious Gradient Filtering", ICDCS 2022 (arXiv 2109.05872);
  official code ``JianXu95/SignGuard`` (``aggregators/signguard.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fljax.aggregators._linalg import clip_weights, row_norms, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.types import StaticFloat

CLUSTERINGS = ("meanshift", "dbscan")


def signguard_block(key: jax.Array, dim: int, fraction: float) -> tuple[jax.Array, int]:
    """``(start int32[], size)``: the random contiguous block of coordinates whose signs
    are counted; ``size = max(1, int(fraction * dim))``, ``start`` uniform in
    ``[0, dim - size]``."""
    size = max(1, int(fraction * dim))
    return jax.random.randint(key, (), 0, dim - size + 1, dtype=jnp.int32), size


def sign_cluster_labels(features: np.ndarray, valid: np.ndarray, clustering: str) -> np.ndarray:
    """Host-side clustering (scikit-learn) of the sign features of the valid rows.

    ``'meanshift'`` is the official code's: ``MeanShift(bandwidth=
    estimate_bandwidth(F, quantile=0.5, n_samples=50), bin_seeding=True,
    cluster_all=False)``. When the estimated bandwidth is 0 (identical
    features, where scikit-learn's MeanShift fails) the clusters are the groups
    of identical feature rows. ``'dbscan'`` is FLPoison's default,
    ``DBSCAN(eps=0.05, min_samples=3)``.

    Returns:
      ``int32[n]`` labels; -1 for outliers and invalid rows.
    """
    from sklearn.cluster import DBSCAN, MeanShift, estimate_bandwidth  # host-only dependency

    features = np.asarray(features, np.float64)
    valid = np.asarray(valid, bool)
    labels = np.full(features.shape[0], -1, np.int32)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return labels
    feats = features[idx]
    if clustering == "dbscan":
        labels[idx] = DBSCAN(eps=0.05, min_samples=3).fit(feats).labels_
        return labels
    bandwidth = estimate_bandwidth(feats, quantile=0.5, n_samples=50) if idx.size > 1 else 0.0
    if not bandwidth > 0:
        labels[idx] = np.unique(feats, axis=0, return_inverse=True)[1].reshape(-1)
        return labels
    ms = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=False).fit(feats)
    labels[idx] = ms.labels_
    return labels


def signguard(lower: float = 0.1, upper: float = 3.0, selection_fraction: StaticFloat = 0.1,
              clustering: str = "meanshift") -> Aggregator:
    """Keep rows of ordinary norm in the majority sign cluster; clip to the median norm; mean.

    ::

        M   = median_i ‖g_i‖
        S1  = {i : lower · M < ‖g_i‖ < upper · M}
        r   = a random block of int(selection_fraction · d) consecutive coordinates
        F_i = (share of g_i[r] > 0, share == 0, share < 0), each column divided by
              its maximum over the clients (+1e-8)
        S2  = the largest cluster of the F_i (MeanShift, as the official code)
        y   = mean_{i in S1 ∩ S2} g_i · min(1, M / ‖g_i‖)

    As in the official code (its ``signguard_multiclass``, the paper's
    SignGuard): strict norm bounds, a contiguous coordinate block with a
    uniform random start (drawn from ``key``), features normalised by their
    maxima, MeanShift with a bandwidth estimated at quantile 0.5, every kept
    row clipped to the median norm. The clustering runs on the host
    (scikit-learn through ``jax.pure_callback``, ``vmap_method='sequential'``,
    as FLAME's HDBSCAN does); norms, features and the clipped mean run on the
    device, in two passes over the updates. If no row survives, the result is
    zero (the official code returns NaN). fedlib's ``Signguard`` differs
    (KMeans with 2 clusters on all coordinates, clipping before the norm
    filter) and is not followed.

    Non-finite rows are screened (removed before the rule: the median, the
    feature maxima and the clustering use the finite rows only). Norms are
    overflow-safe (``_linalg.row_norms``); a row whose norm overflows fails
    the upper bound.

    Args:
      lower, upper: the norm band, relative to the median (values: they may
        be traced; the paper's 0.1 and 3.0).
      selection_fraction: share of the coordinates in the sign block (static:
        it fixes the block's length; 0.1 in the paper).
      clustering: ``'meanshift'`` (the paper's) or ``'dbscan'`` (FLPoison's
        default, eps 0.05, min_samples 3).

    Returns:
      An :class:`Aggregator` with ``info = {'selected': bool[n], 'norm_ok':
      bool[n]`` (S1), ``'labels': int32[n]`` (clusters, -1 outliers),
      ``'median_norm': float[], 'num_nonfinite': int32[]}``.

    References:
      Xu et al., ICDCS 2022, Algorithm 1; official code ``JianXu95/SignGuard``.
    """
    require(clustering in CLUSTERINGS, "signguard",
            f"clustering={clustering!r} must be one of {CLUSTERINGS}")
    require(isinstance(selection_fraction, (int, float)) and 0 < selection_fraction <= 1,
            "signguard", f"selection_fraction={selection_fraction!r} must be a number in (0, 1]")
    if isinstance(lower, (int, float)) and isinstance(upper, (int, float)):
        require(0 <= lower < upper, "signguard",
                f"needs 0 <= lower < upper, got lower={lower}, upper={upper}")

    def aggregate(updates, state, key, context=None):
        del context
        n, d = updates.shape
        valid = finite_rows(updates)  # bool[n]
        m = jnp.sum(valid.astype(jnp.int32))
        scale, base = row_norms(updates, valid)
        norms = scale * base  # float[n]; inf only if the norm overflows
        med = jnp.nanmedian(jnp.where(valid, norms, jnp.nan))
        med = jnp.where(m > 0, med, 0.0)
        norm_ok = valid & (norms > lower * med) & (norms < upper * med)

        start, size = signguard_block(key, d, selection_fraction)
        block = jax.lax.dynamic_slice_in_dim(updates, start, size, axis=1)  # float[n, size]
        shares = jnp.stack([jnp.mean(block > 0, axis=1), jnp.mean(block == 0, axis=1),
                            jnp.mean(block < 0, axis=1)], axis=1).astype(jnp.float32)  # [n, 3]
        shares = jnp.where(valid[:, None], shares, 0.0)
        features = shares / (jnp.max(shares, axis=0, keepdims=True) + 1e-8)
        labels = jax.pure_callback(
            lambda feats, ok: sign_cluster_labels(feats, ok, clustering),
            jax.ShapeDtypeStruct((n,), jnp.int32), features, valid,
            vmap_method="sequential")
        counts = jnp.sum(labels[None, :] == jnp.arange(n)[:, None], axis=1)  # int[n]
        biggest = jnp.argmax(counts)  # lowest label on ties, as np.argmax
        in_cluster = valid & (labels == biggest) & (counts[biggest] > 0)

        selected = norm_ok & in_cluster
        count = jnp.maximum(jnp.sum(selected), 1).astype(updates.dtype)
        w = jnp.where(selected, clip_weights(scale, base, med) / count, 0.0)
        out = weighted_row_sum(updates, w.astype(updates.dtype), valid, scale=scale)
        info = {"selected": selected, "norm_ok": norm_ok, "labels": labels,
                "median_norm": med, "num_nonfinite": n - m}
        return out, state, info

    return Aggregator(init_empty, aggregate)
