"""Float64 NumPy loop references for the model-aware and stateful rules.

Written from the papers / reference code (see each rule's module), one client
at a time, without the JAX implementation's tricks (no unit-row scaling, no
closed forms, no vectorised pardoning). Inputs are finite here: the screening
of non-finite rows is tested separately.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import HDBSCAN


def _norm(v):
    return float(np.sqrt(np.sum(np.asarray(v, np.float64) ** 2)))


def _cos(a, b):
    na, nb = _norm(a), _norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def fltrust(updates, g0):
    """Cao et al.: ReLU-cosine trust, rescale to ||g0||, trust-weighted mean."""
    updates = np.asarray(updates, np.float64)
    g0 = np.asarray(g0, np.float64)
    total_trust, acc = 0.0, np.zeros(updates.shape[1])
    for g in updates:
        ts = max(0.0, _cos(g, g0))
        if ts > 0:
            acc += ts * g * _norm(g0) / _norm(g)
        total_trust += ts
    return acc / total_trust if total_trust > 0 else np.zeros(updates.shape[1])


def flame_no_noise(updates, params=None):
    """Nguyen et al. steps 1-4 without the noise (λ = 0).

    Clusters the local models ``params + Δ_i`` (or the updates when ``params``
    is None).
    """
    updates = np.asarray(updates, np.float64)
    n = updates.shape[0]
    vecs = updates if params is None else updates + np.asarray(params, np.float64)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                dist[i, j] = 1.0 - _cos(vecs[i], vecs[j])
    # hdbscan-package min_samples=1 == scikit-learn min_samples=2 (sklearn counts the point).
    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=2, metric="precomputed",
                     allow_single_cluster=True, copy=False).fit(dist).labels_
    good = [i for i in range(n) if labels[i] >= 0
            and labels[i] == np.bincount(labels[labels >= 0]).argmax()]
    return flame_clipped_mean(updates, np.isin(np.arange(n), good))[0], labels


def flame_clipped_mean(updates, admitted):
    """FLAME's step 3: the admitted rows clipped to ``S``, the median norm of the
    finite rows, and averaged (zeros when none is admitted). Returns ``(mean, S)``."""
    x = np.asarray(updates, np.float64)
    finite = np.isfinite(x).all(1)
    norms = np.linalg.norm(np.where(finite[:, None], x, 0.0), axis=1)
    s = float(np.median(norms[finite])) if finite.any() else 0.0
    if not np.any(admitted):
        return np.zeros(x.shape[1]), s
    rows = x[admitted] * np.minimum(1.0, s / np.where(norms > 0, norms, 1.0))[admitted, None]
    return rows.mean(0), s


def foolsgold_weights(histories, kappa=1.0, skip_zero=False):
    """The reference code ``DistributedML/FoolsGold`` ``foolsgold()``, loop form
    (with its confidence ``kappa``; ``skip_zero`` skips a pardon whose
    ``maxcs[j]`` is 0, which the reference divides by: fljax's documented
    deviation)."""
    h = np.asarray(histories, np.float64)
    n = h.shape[0]
    cs = np.array([[_cos(h[i], h[j]) for j in range(n)] for i in range(n)]) - np.eye(n)
    maxcs = np.max(cs, axis=1)
    for i in range(n):
        for j in range(n):
            if i == j or (skip_zero and maxcs[j] == 0):
                continue
            if maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = 1 - np.max(cs, axis=1)
    wv[wv > 1] = 1
    wv[wv < 0] = 0
    wv = wv / np.max(wv)
    wv[wv == 1] = 0.99
    with np.errstate(divide="ignore"):
        wv = kappa * (np.log(wv / (1 - wv)) + 0.5)
    wv[(np.isinf(wv) + wv > 1)] = 1
    wv[wv < 0] = 0
    return wv


def foolsgold_rounds(rounds, normalize=False):
    """FoolsGold over several full-participation rounds; returns the outputs."""
    history = None
    outs = []
    for updates in rounds:
        updates = np.asarray(updates, np.float64)
        history = updates.copy() if history is None else history + updates
        wv = foolsgold_weights(history)
        out = wv @ updates
        if normalize:
            out = out / np.sum(wv) if np.sum(wv) > 0 else np.zeros_like(out)
        outs.append(out)
    return outs


def loo_rejection(updates, params, eval_fn, num_reject, metric, server_lr=1.0, rank=None):
    """Fang et al. ERR (metric 0) / LFR (metric 1) around the plain mean.

    Equal impacts are ordered by ``rank`` (fljax draws it from the key; see
    ``table_model.loo_rank``), by row index when it is None.
    """
    updates = np.asarray(updates, np.float64)
    n = updates.shape[0]
    rank = np.arange(n) if rank is None else np.asarray(rank)
    full = updates.mean(0)
    base_value = eval_fn(params + server_lr * full)[metric]
    impact = []
    for i in range(n):
        rest = np.delete(updates, i, axis=0).mean(0)
        impact.append(base_value - eval_fn(params + server_lr * rest)[metric])
    order = sorted(range(n), key=lambda i: (impact[i], rank[i]))
    kept = sorted(order[: n - num_reject])
    return updates[kept].mean(0), np.array(impact), kept


def robust_lr(updates, threshold, server_lr=1.0):
    """Ozdayi et al.: per-coordinate ±η by sign agreement, times the mean."""
    updates = np.asarray(updates, np.float64)
    agreement = np.abs(np.sign(updates).sum(axis=0))  # per coordinate: |Σ_i sign(Δ_ij)|
    lr = np.where(agreement >= threshold, server_lr, -server_lr)
    return lr * updates.mean(axis=0)


def norm_clipping(updates, max_norm):
    """Sun et al.: clip every update to the ball, then average."""
    updates = np.asarray(updates, np.float64)
    acc = np.zeros(updates.shape[1])
    for u in updates:
        nu = _norm(u)
        acc += u * (min(1.0, max_norm / nu) if nu > 0 else 1.0)
    return acc / updates.shape[0]


def centered_clipping_steps(updates, tau, iters, v=None):
    """Karimireddy et al., Algorithm 2, one round from centre ``v`` (0 if None):
    ``iters`` steps over the finite rows (``m`` of them, at least 1). Returns
    ``(v, steps)`` with each step's ``(clipped flags bool[n], min |dist - tau|)``."""
    x = np.asarray(updates, np.float64)
    fin = np.isfinite(x).all(1)
    v = np.zeros(x.shape[1]) if v is None else v
    steps = []
    for _ in range(iters):
        d = x[fin] - v
        nrm = np.linalg.norm(d, axis=1)
        flags = np.zeros(len(x), bool)
        flags[fin] = nrm > tau
        steps.append((flags, np.min(np.abs(nrm - tau))))
        step = d * np.minimum(1, tau / np.maximum(nrm, 1e-30))[:, None]
        v = v + step.sum(0) / max(fin.sum(), 1)
    return v, steps


def centered_clipping_rounds(rounds, tau, iters):
    """Karimireddy et al.: the center carries over between rounds."""
    v, outs = None, []
    for updates in rounds:
        v, _ = centered_clipping_steps(updates, tau, iters, v)
        outs.append(v.copy())
    return outs
