"""NumPy references for the model-poisoning attacks, written from the papers.

They take float64 rows (``x: float[n, d]``) and a boolean ``malicious`` mask and
follow each paper's procedure literally: Fang's lambda by the sequential
halving search (one Krum run per candidate), Shejwalkar's gamma by the
reference code's halving search, ALIE's z from the table formula. The tests
compare the closed forms and batched searches of ``fljax.attacks`` with them;
``benchmarks/attacks.py`` times :func:`fang_krum_sequential` (Krum through a
Gram matrix, fast enough for 200 x 1M) as the sequential peer.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from tests.aggregators.references import finite, krum_scores_ref, sq_dists_gram

GIVE_UP = 1e-5


def alie_z_ref(n, f):
    s = np.floor(n / 2 + 1) - f
    return norm.ppf((n - f - s) / (n - f))


def known_ref(x, malicious, knowledge):
    ok = finite(x)
    return ok if knowledge == "full" else ok & malicious


def fang_lambda_max(bench, c, k):
    """Fang's bound over the bench rows (un-squared distances; see fljax.attacks.fang)."""
    nb, d = bench.shape
    g = min(k, nb - 1)
    sums = []
    for i in range(nb):
        ds = sorted(np.linalg.norm(bench[j] - bench[i]) for j in range(nb) if j != i)
        sums.append(sum(ds[:g]))
    first = min(sums) / (max(k - c + 1, 1) * np.sqrt(d))
    return first + max(np.linalg.norm(b) for b in bench) / np.sqrt(d)


def fang_krum_ref(x, malicious, f, knowledge="full"):
    """Fang's sequential search with the real Krum scores (a double loop).

    Full knowledge: Krum(f) on the actual matrix with the malicious rows
    replaced; partial: on the known rows plus ``c`` crafted copies with
    ``min(n - f - 2, 2c - 1)`` neighbours. A crafted row wins only with a
    score strictly below every other row's.

    Returns:
      ``(lambda, lambda_max, halvings)``; ``(0, lambda_max, -1)`` when it gives up.
    """
    n, d = x.shape
    c = int(malicious.sum())
    known = known_ref(x, malicious, knowledge)
    s = np.sign(x[known].mean(0))
    if knowledge == "full":
        bench, k = x[finite(x) & ~malicious], n - f - 2
    else:
        bench, k = x[known], min(n - f - 2, 2 * c - 1)
    lam = lam_max = fang_lambda_max(bench, c, k)
    halvings = 0
    while True:
        if knowledge == "full":
            y = x.copy()
            y[malicious] = -lam * s
            scores, crafted = krum_scores_ref(y, f), malicious
        else:
            y = np.concatenate([bench, np.repeat((-lam * s)[None], c, axis=0)])
            scores = krum_scores_ref(y, 2 * c - k - 2)  # n' - f' - 2 = k neighbours
            crafted = np.arange(2 * c) >= c
        if scores[crafted].min() < scores[~crafted].min():
            return lam, lam_max, halvings
        lam /= 2
        halvings += 1
        if lam < GIVE_UP:
            return 0.0, lam_max, -1


def fang_krum_sequential(x, malicious, f):
    """Full-knowledge :func:`fang_krum_ref` with NumPy's fast Krum (Gram
    distances, ``np.sort``), in ``x``'s dtype: the benchmark's sequential peer,
    one Krum aggregation per candidate lambda."""
    n, d = x.shape
    c = int(malicious.sum())
    s = np.sign(x.mean(0))
    bench = x[~malicious]
    k = n - f - 2
    dist = sq_dists_gram(bench)
    np.fill_diagonal(dist, np.inf)
    near = np.sort(np.sqrt(dist), axis=1)[:, :min(k, len(bench) - 1)].sum(1)
    lam = (near.min() / (max(k - c + 1, 1) * np.sqrt(d))
           + np.linalg.norm(bench, axis=1).max() / np.sqrt(d))
    halvings = 0
    while True:
        y = x.copy()
        y[malicious] = -lam * s
        dy = sq_dists_gram(y)
        np.fill_diagonal(dy, np.inf)
        scores = np.sort(dy, axis=1)[:, :k].sum(1)
        if scores[malicious].min() < scores[~malicious].min():
            return lam, halvings
        lam /= 2
        halvings += 1
        if lam < GIVE_UP:
            return 0.0, -1


def shejwalkar_gamma_ref(ok, gamma=10.0, threshold=1e-5):
    """The reference code's halving search for gamma (``our_attack_dist`` /
    ``our_attack_score``): start at ``gamma`` with step ``gamma``, so it never
    returns ``2 * gamma`` or more."""
    step, succ = gamma, 0.0
    while abs(succ - gamma) > threshold:
        if ok(gamma):
            succ = gamma
            gamma = gamma + step / 2
        else:
            gamma = gamma - step / 2
        step /= 2
    return succ


def perturbation_ref(kind, known_rows):
    mu = known_rows.mean(0)
    if kind == "unit":
        return mu / np.linalg.norm(mu)
    if kind == "sign":
        return np.sign(mu)
    return known_rows.std(0, ddof=1)


def min_max_ok(known_rows, delta):
    """Min-Max's test: the largest squared distance of ``mu - gamma delta`` to a
    known row is at most the largest squared distance between known rows."""
    mu = known_rows.mean(0)
    diff = known_rows[:, None] - known_rows[None]
    t = (diff ** 2).sum(-1).max()
    return lambda g: ((known_rows - (mu - g * delta)) ** 2).sum(1).max() <= t


def min_sum_ok(known_rows, delta):
    """Min-Sum's test: the sum of squared distances to the known rows is at most
    the smallest such sum of a known row."""
    mu = known_rows.mean(0)
    diff = known_rows[:, None] - known_rows[None]
    best = (diff ** 2).sum(-1).sum(1).min()
    return lambda g: ((known_rows - (mu - g * delta)) ** 2).sum() <= best


# --------------------------------------------------------------------------- #
# The adaptive attacks (optimal ALIE / IPM, Mimic).


def line_search_ref(y, start=0.0, delta=10.0, ratio=0.8, evals=20):
    """ByzFL's ``_expansion_phase`` / ``_contraction_phase`` as a plain loop
    (one call of ``y`` per candidate, float64 positions)."""
    best_x, best_y = start, y(start)
    left = evals - 1
    while left > 0:  # expansion: double the step while it improves
        x = best_x + delta
        yx = y(x)
        left -= 1
        if yx > best_y:
            best_x, best_y = x, yx
            delta *= 2
        else:
            delta *= ratio
            break
    while left > 0:  # contraction: shrink the step, keep improvements
        x = best_x + delta
        yx = y(x)
        left -= 1
        if yx > best_y:
            best_x, best_y = x, yx
        delta *= ratio
    return best_x, best_y


def optimal_ref(x, malicious, kind, rule_ref, knowledge="full", **search):
    """Optimal ALIE (``kind='alie'``: ``mu - tau sigma``) or IPM (``'ipm'``:
    ``-tau mu``) with the scale from :func:`line_search_ref` against
    ``rule_ref(float[n, d]) -> float[d]``.

    Full knowledge: the rule runs on the actual rows with the malicious ones
    replaced; partial: the honest positions hold the known rows in turn.

    Returns:
      ``(tau, crafted row float[d])``.
    """
    known = known_ref(x, malicious, knowledge)
    mu = x[known].mean(0)
    sigma = x[known].std(0, ddof=1) if kind == "alie" else None
    row = (lambda t: mu - t * sigma) if kind == "alie" else (lambda t: -t * mu)
    base = x.copy()
    if knowledge == "partial":
        rows = x[known]
        honest = np.flatnonzero(~malicious)
        for r, i in enumerate(honest):
            base[i] = rows[r % len(rows)]

    def y(t):
        z = base.copy()
        z[malicious] = row(t)
        return np.linalg.norm(rule_ref(z) - mu)

    tau, _ = line_search_ref(y, **search)
    return tau, row(tau)


def mimic_ref(x, malicious, target="index", epsilon=0, iters=1, z0=None, knowledge="full"):
    """The row index Mimic copies: the pool row of rank ``epsilon`` (mod the
    pool size), or the pool row farthest along the top principal direction
    after ``iters`` power steps from ``z0``."""
    ok = finite(x)
    pool = ok & (~malicious if knowledge == "full" else malicious)
    idx = np.flatnonzero(pool)
    if target == "index":
        return int(idx[epsilon % len(idx)])
    rows = x[idx]
    xc = rows - rows.mean(0)
    z = z0.astype(np.float64)
    for _ in range(iters):
        z = xc.T @ (xc @ z)
        z = z / np.linalg.norm(z)
    return int(idx[np.argmax(rows @ z)])
