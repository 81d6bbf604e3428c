"""Float64 NumPy references for the round-two rules (issue 15), written from the papers.

Loops and brute force where that is the definition (MDA and SMEA enumerate
every subset, CAF runs its filter on the ``d x d`` covariance, Multi-Metrics
loops over client pairs). Randomness (coordinate subsets, tie-break ranks,
the sign block) is passed in, drawn by the test from the same key as the rule.
Screening follows each rule's docstring: non-finite rows are removed first
(the conformance table passes the remaining rows and ``f``).
"""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.cluster import DBSCAN, MeanShift, estimate_bandwidth


def finite(x):
    return np.all(np.isfinite(x), axis=1)


def sq_dists(x):
    n = len(x)
    return np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])


def mda_ref(x, f):
    """Every subset of n - f rows; smallest diameter, then smallest sum of squared distances."""
    n = len(x)
    d = sq_dists(x)
    best = None
    for s in itertools.combinations(range(n), n - f):
        sub = d[np.ix_(s, s)]
        key = (sub.max(), sub.sum() / 2)
        if best is None or key < best[0]:
            best = (key, s)
    return x[list(best[1])].mean(0)


def smea_ref(x, f, full=False):
    """Every subset of n - f rows; smallest top eigenvalue of its covariance
    (``full``: also the subset and its eigenvalue)."""
    n = len(x)
    best = None
    for s in itertools.combinations(range(n), n - f):
        sub = x[list(s)]
        c = sub - sub.mean(0)
        lam = np.linalg.svd(c, compute_uv=False)[0] ** 2 / len(s)
        if best is None or lam < best[0]:
            best = (lam, s)
    out = x[list(best[1])].mean(0)
    return (out, list(best[1]), best[0]) if full else out


def meamed_ref(x, f):
    """Per coordinate: the n - f values nearest the median, averaged."""
    x = x[finite(x)]
    n, d = x.shape
    if n == 0:
        return np.zeros(d)
    keep = n - f if f <= n else n
    out = np.empty(d)
    for j in range(d):
        col = x[:, j]
        med = np.median(col)
        out[j] = col[np.argsort(np.abs(col - med), kind="stable")[:keep]].mean()
    return out


def monna_ref(x, f, pivot):
    """The n - f rows nearest x[pivot] (coordinate median of the finite rows if x[pivot]
    is not finite); non-finite rows are never selected."""
    ok = finite(x)
    centre = x[pivot] if ok[pivot] else np.median(x[ok], axis=0)
    dist = [np.sum((x[i] - centre) ** 2) if ok[i] else np.inf for i in range(len(x))]
    if ok[pivot]:
        dist[pivot] = -1.0
    chosen = [i for i in np.argsort(dist, kind="stable")[: len(x) - f] if ok[i]]
    return x[chosen].mean(0)


def caf_ref(x, f, full=False):
    """The CAF loop on the d x d weighted covariance (exact eigenpairs);
    ``full``: also the smallest eigenvalue seen and the number of steps."""
    n = len(x)
    c = np.ones(n)
    best = (np.inf, x.mean(0))
    steps = 0
    while c.sum() > n - 2 * f:
        steps += 1
        mu = (c[:, None] * x).sum(0) / c.sum()
        y = x - mu
        # Top eigenpair of Σ_i c_i y_i y_iᵀ / Σc via the SVD of the weighted rows.
        _, s, vt = np.linalg.svd(np.sqrt(c / c.sum())[:, None] * y, full_matrices=False)
        lam, v = s[0] ** 2, vt[0]
        if lam < best[0]:
            best = (lam, mu)
        tau = (y @ v) ** 2
        tau_max = tau[c > 0].max()
        if tau_max <= 0:
            break
        c = np.maximum(c * (1 - tau / tau_max), 0.0)
    return (best[1], best[0], steps) if full else best[1]


def dnc_ref(x, f, coords, rank, filter_frac=1.0, full=False):
    """Shejwalkar & Houmansadr's Algorithm 3 with the given coordinate subsets
    (``full``: also the kept rows and the last iteration's scores)."""
    n = len(x)
    good = set(range(n))
    keep = n - int(filter_frac * f)
    for idx in coords:
        sub = x[:, idx]
        c = sub - sub.mean(0)
        v = np.linalg.svd(c, full_matrices=False)[2][0]
        score = (c @ v) ** 2
        good &= set(sorted(range(n), key=lambda i: (score[i], rank[i]))[:keep])
    out = x[sorted(good)].mean(0)
    return (out, sorted(good), score) if full else out


def signguard_labels(feat, clustering="meanshift"):
    """The official code's MeanShift (bandwidth at quantile 0.5 of 50 samples,
    bin seeding, outliers left out) or FLPoison's DBSCAN (eps 0.05, 3 samples)."""
    if clustering == "dbscan":
        return DBSCAN(eps=0.05, min_samples=3).fit(feat).labels_
    bw = estimate_bandwidth(feat, quantile=0.5, n_samples=50) if len(feat) > 1 else 0.0
    if bw > 0:
        return MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=False).fit(feat).labels_
    # identical features: one group per distinct row
    return np.unique(feat, axis=0, return_inverse=True)[1].reshape(-1)


def signguard_ref(x, start, size, lower=0.1, upper=3.0, clustering="meanshift"):
    """The official code's steps (norm band, sign features, MeanShift, clipped mean)."""
    x = x[finite(x)]
    norms = np.linalg.norm(x, axis=1)
    med = np.median(norms)
    s1 = {i for i in range(len(x)) if lower * med < norms[i] < upper * med}
    sign = np.sign(x[:, start:start + size])
    feat = np.stack([(sign == 1).mean(1), (sign == 0).mean(1), (sign == -1).mean(1)], 1)
    feat = feat.astype(np.float32) / (feat.max(0).astype(np.float32) + np.float32(1e-8))
    labels = signguard_labels(feat, clustering)
    num = len(set(labels)) - (1 if -1 in labels else 0)
    biggest = int(np.argmax([np.sum(labels == i) for i in range(num)]))
    chosen = sorted(s1 & set(np.flatnonzero(labels == biggest).tolist()))
    if not chosen:
        return np.zeros(x.shape[1])
    return (x[chosen] * np.minimum(1.0, med / norms[chosen])[:, None]).mean(0)


def multi_metrics_features(w):
    """The official code's three sums over the other rows of ``w``: ``float[n, 3]``
    (a zero row's cosines are 0, fljax's convention; the official code gives NaN)."""
    n = len(w)
    cos, man, length = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i != j:
                nn = np.linalg.norm(w[i]) * np.linalg.norm(w[j])
                cos[i] += (1 - (w[i] @ w[j] / nn if nn > 0 else 0.0)) ** 2
                man[i] += np.sum(np.abs(w[i] - w[j]))
                length[i] += abs(np.linalg.norm(w[i]) - np.linalg.norm(w[j]))
    return np.stack([cos, man, length], axis=1)


def multi_metrics_scores(t):
    """Uncentred Mahalanobis scores ``t_iᵀ Σ⁺ t_i`` (``Σ``: covariance, ddof 1)."""
    inv = np.linalg.pinv(np.cov(t.T))
    return np.array([t[i] @ inv @ t[i] for i in range(len(t))])


def multi_metrics_ref(updates, params, p=0.3, rank=None, weights=None):
    """The official ``Multi_metrics.exec`` loop on the models ``params + Δ_i``."""
    w = updates + params
    n = len(w)
    scores = multi_metrics_scores(multi_metrics_features(w))
    rank = np.arange(n) if rank is None else rank
    chosen = sorted(range(n), key=lambda i: (scores[i], rank[i]))[: int(p * n)]
    om = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    return (om[chosen, None] * updates[chosen]).sum(0) / om[chosen].sum()


def crfl_ref(updates, params, clip, weights=None):
    """FedAvg of the finite rows, then the model clipped to ``clip`` (no noise)."""
    ok = finite(updates)
    om = np.ones(len(updates)) if weights is None else np.asarray(weights, np.float64)
    delta = (om[ok, None] * updates[ok]).sum(0) / om[ok].sum()
    model = params + delta
    return model * min(1.0, clip / np.linalg.norm(model)) - params


# ---------------------------------------------------------------------------
# Vectorised NumPy versions: the benchmark's NumPy peers at 200 x 1M, where the
# loops above would take minutes to hours (benchmarks/aggregators.py). Same
# results as the loop references (tested on small inputs in round2_test.py).


def gram_sq_dists(x):
    c = x - x.mean(0)
    g = c @ c.T
    nrm = np.diag(g)
    d = np.maximum(nrm[:, None] + nrm[None, :] - 2 * g, 0)
    np.fill_diagonal(d, 0)
    return d, g


def mda_fast_ref(x, f):
    d, _ = gram_sq_dists(x)
    best = None
    for s in itertools.combinations(range(len(x)), len(x) - f):
        sub = d[np.ix_(s, s)]
        key = (sub.max(), sub.sum() / 2)
        if best is None or key < best[0]:
            best = (key, s)
    return x[list(best[1])].mean(0)


def smea_fast_ref(x, f):
    _, g = gram_sq_dists(x)
    best = None
    for s in itertools.combinations(range(len(x)), len(x) - f):
        k = len(s)
        h = np.eye(k) - 1.0 / k
        lam = np.linalg.eigvalsh(h @ g[np.ix_(s, s)] @ h)[-1] / k
        if best is None or lam < best[0]:
            best = (lam, s)
    return x[list(best[1])].mean(0)


def meamed_fast_ref(x, f):
    n = len(x)
    med = np.median(x, axis=0)
    idx = np.argpartition(np.abs(x - med), n - f - 1, axis=0)[: n - f]
    return np.take_along_axis(x, idx, axis=0).mean(0)


def caf_fast_ref(x, f):
    """:func:`caf_ref` on the [n, n] Gram matrix (float64), without d x d or [n, d] float64 work."""
    n = len(x)
    c0 = x - x.mean(0)
    g = (c0 @ c0.T).astype(np.float64)
    c = np.ones(n)
    best = (np.inf, np.full(n, 1.0 / n))
    while c.sum() > n - 2 * f:
        w = c / c.sum()
        gw = g @ w
        k = g - gw[:, None] - gw[None, :] + w @ gw
        sw = np.sqrt(w)
        ev, vec = np.linalg.eigh(sw[:, None] * k * sw[None, :])
        lam, a = ev[-1], vec[:, -1]
        if lam < best[0]:
            best = (lam, w)
        tau = (k @ (sw * a)) ** 2 / lam
        tau_max = tau[c > 0].max()
        if tau_max <= 0:
            break
        c = np.where(tau >= tau_max, 0.0, np.maximum(c * (1 - tau / tau_max), 0.0))
    return best[1].astype(x.dtype) @ x


def multi_metrics_fast_ref(updates, params, p=0.3):
    w = updates + params
    n = len(w)
    norms = np.linalg.norm(w, axis=1)
    cos = (w @ w.T) / np.outer(norms, norms)
    cos_f = ((1 - cos) ** 2).sum(1) - (1 - np.diag(cos)) ** 2
    man_f = np.array([np.abs(updates - updates[i]).sum() for i in range(n)])
    len_f = np.abs(norms[:, None] - norms[None, :]).sum(1)
    t = np.stack([cos_f, man_f, len_f], axis=1)
    inv = np.linalg.pinv(np.cov(t.T))
    scores = np.einsum("ij,jk,ik->i", t, inv, t)
    chosen = np.argsort(scores, kind="stable")[: int(p * n)]
    return updates[chosen].mean(0)


def arc(updates, f):
    """ARC (Allouah et al. 2024) in float64: clip the ``k = floor(2 f (n - f) /
    n)`` largest rows to the ``(k + 1)``-th largest norm. Non-finite rows rank
    as the largest and are returned unchanged. Returns ``(rows, clipped,
    threshold)``."""
    x = np.asarray(updates, np.float64)
    n = x.shape[0]
    k = (2 * f * (n - f)) // n
    finite = np.isfinite(x).all(1)
    norms = np.where(finite, np.linalg.norm(np.where(finite[:, None], x, 0.0), axis=1), np.inf)
    tau = np.sort(norms)[::-1][k]  # the (k + 1)-th largest
    clipped = finite & (norms > tau)
    scale = np.where(clipped, tau / np.where(norms > 0, norms, 1.0), 1.0)
    return x * scale[:, None], clipped, tau


def nnm(updates, f, rank):
    """NNM (Allouah et al. 2023, Algorithm 1) in float64: every finite row
    becomes the mean of its ``n - f`` nearest finite rows (itself first, then
    by squared distance, ties by ``rank``; all finite rows if fewer).
    Non-finite rows are returned unchanged."""
    x = np.asarray(updates, np.float64)
    n = x.shape[0]
    finite = [i for i in range(n) if np.isfinite(x[i]).all()]
    out = x.copy()
    for i in finite:
        others = sorted((j for j in finite if j != i),
                        key=lambda j: (float(np.sum((x[i] - x[j]) ** 2)), int(rank[j])))
        near = [i] + others[: n - f - 1]
        out[i] = x[near].mean(0)
    return out
