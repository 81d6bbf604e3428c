"""NumPy references for the robust rules, written from the papers.

Each takes ``x: float[n, d]`` (tests pass float64) and returns ``float[d]``
computed in ``x``'s dtype. They are the ground truth of the conformance table
(``conformance_test.py``) and the NumPy peers timed by
``benchmarks/aggregators.py``: obviously correct first, vectorised across
coordinates where that costs no clarity (``np.sort`` along the client axis), so
they also run on 200 x 1M.

Non-finite rows are screened the way the rules document it: order statistics
and the geometric median use the finite rows only; the distance-based rules
give non-finite rows an infinite score (they are never selected).
"""

from __future__ import annotations

import numpy as np


def finite(x):
    return np.all(np.isfinite(x), axis=1)


def mean_ref(x, f=0):
    del f
    x = x[finite(x)]
    if len(x) == 0:
        return np.zeros(x.shape[1], x.dtype)
    return x.mean(0)


def median_ref(x, f=0):
    del f
    x = x[finite(x)]
    if len(x) == 0:
        return np.zeros(x.shape[1], x.dtype)
    return np.median(x, axis=0)  # even n: mean of the two middle values


def trimmed_mean_ref(x, num_trim):
    x = x[finite(x)]
    m = len(x)
    if m == 0:
        return np.zeros(x.shape[1], x.dtype)
    t = min(num_trim, (m - 1) // 2)
    s = np.sort(x, axis=0)
    return s[t:m - t].mean(0)


def sq_dists_loop(x):
    """Squared distances by the definition (a double loop over clients)."""
    n = len(x)
    d = np.zeros((n, n), x.dtype)
    for i in range(n):
        for j in range(n):
            d[i, j] = np.sum((x[i] - x[j]) ** 2)
    return d


def sq_dists_gram(x):
    """The same through a centred Gram matrix (fast enough for 200 x 1M)."""
    c = x - x.mean(0)
    g = c @ c.T
    nrm = np.diag(g)
    d = np.maximum(nrm[:, None] + nrm[None, :] - 2 * g, 0)
    np.fill_diagonal(d, 0)
    return d


def krum_scores_ref(x, f, dists=None):
    """score(i) = sum of squared distances to the n - f - 2 nearest other clients."""
    n = len(x)
    ok = finite(x)
    if dists is None:
        xs = np.where(ok[:, None], x, 0)
        dists = sq_dists_loop(xs) if x.size <= 1e6 else sq_dists_gram(xs)
    scores = np.full(n, np.inf)
    for i in range(n):
        if not ok[i]:
            continue
        others = sorted(dists[i, j] for j in range(n) if j != i and ok[j])
        scores[i] = sum(others[: n - f - 2])
    return scores


def _order(scores, rank):
    """Clients by ascending score; equal scores: lower tie-break rank first."""
    n = len(scores)
    rank = np.arange(n) if rank is None else np.asarray(rank)
    return sorted(range(n), key=lambda i: (scores[i], rank[i]))


def krum_ref(x, f, rank=None):
    """``rank``: the documented tie rule (fljax draws it from the key)."""
    scores = krum_scores_ref(x, f)
    return x[_order(scores, rank)[0]]


def multi_krum_ref(x, f, m=None, rank=None):
    n = len(x)
    m = n - f if m is None else m
    scores = krum_scores_ref(x, f)
    chosen = _order(scores, rank)[:m]
    chosen = [i for i in chosen if np.isfinite(scores[i])]
    return x[chosen].mean(0)


def bulyan_ref(x, f, rank=None):
    n, d = x.shape
    rank = np.arange(n) if rank is None else np.asarray(rank)
    ok = finite(x)
    xs = np.where(ok[:, None], x, 0)
    dist = sq_dists_loop(xs) if x.size <= 1e6 else sq_dists_gram(xs)
    theta = n - 2 * f
    beta = theta - 2 * f
    remaining = [i for i in range(n)]
    selected = []
    for _ in range(theta):  # Krum on the shrinking set, f fixed
        k = len(remaining) - f - 2
        best, best_score = None, np.inf
        for i in remaining:
            if not ok[i]:
                continue
            others = sorted(dist[i, j] for j in remaining if j != i and ok[j])
            s = sum(others[:k])
            if best is None or (s, rank[i]) < (best_score, rank[best]):
                best, best_score = i, s
        selected.append(best)
        remaining.remove(best)
    s = x[selected]  # [theta, d]
    med = np.median(s, axis=0)
    out = np.empty(d, x.dtype)
    for j in range(d):
        closest = np.argsort(np.abs(s[:, j] - med[j]), kind="stable")[:beta]
        out[j] = s[closest, j].mean()
    return out


def bulyan_fast_ref(x, f, rank=None):
    """:func:`bulyan_ref` vectorised with NumPy (the benchmark's NumPy peer at
    200 x 1M, where the per-coordinate loop would take minutes); same result."""
    n, d = x.shape
    rank = np.arange(n) if rank is None else np.asarray(rank)
    ok = finite(x)
    dist = sq_dists_gram(np.where(ok[:, None], x, 0))
    dist[~ok, :] = np.inf  # as in bulyan_ref: invalid rows are nobody's neighbour
    dist[:, ~ok] = np.inf
    theta, beta = n - 2 * f, n - 4 * f
    remaining = np.arange(n)  # invalid rows stay in the set (and in k), never chosen
    selected = []
    for _ in range(theta):
        k = len(remaining) - f - 2
        sub = dist[np.ix_(remaining, remaining)]
        np.fill_diagonal(sub, np.inf)  # a client is not its own neighbour
        near = np.sort(sub, axis=1)[:, :k]
        scores = np.where(np.isinf(near), 0.0, near).sum(1)
        scores[~ok[remaining]] = np.inf
        best = remaining[np.lexsort((rank[remaining], scores))[0]]
        selected.append(best)
        remaining = remaining[remaining != best]
    s = x[selected]
    med = np.median(s, axis=0)
    closest = np.argsort(np.abs(s - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(s, closest, axis=0).mean(0)


def geometric_median_ref(x, num_iters=4, nu=1e-5):
    """Smoothed Weiszfeld from the better of the mean and the origin (by the objective)."""
    x = x[finite(x)]
    z = x.mean(0)
    objective = lambda v: sum(np.linalg.norm(v - xi) for xi in x)  # noqa: E731
    if not objective(z) <= objective(np.zeros_like(z)):
        z = np.zeros_like(z)
    for _ in range(num_iters):
        beta = np.array([1.0 / max(nu, np.linalg.norm(z - xi)) for xi in x])
        z = (beta[:, None] * x).sum(0) / beta.sum()
    return z


def invariant_ref(x, tau=0.6, beta=0.45):
    x = x[finite(x)]
    m = len(x)
    agree = np.abs(np.sign(x).mean(0))
    lo = int(np.floor(beta * m))
    tm = np.sort(x, axis=0)[lo:m - lo].mean(0)
    return np.where(agree >= tau, tm, 0.0)
