"""Minimum-diameter averaging (MDA; El Mhamdi, Guerraoui, Rouault, 2020).

References:
  El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault, "Genuinely Distributed
  Byzantine Machine Learning", PODC 2020 (MDA, also called "Brute" in
  LPD-EPFL/Garfield).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _ops
from fljax.aggregators._linalg import weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.aggregators.meamed import check_majority

# Work bound of the exact search: 2^f branches, each a search over the n^2
# distances. 2^f * n^2 <= 2^32 allows f <= 16 at n = 200 and f <= 12 at n = 1000
# (~0.1-1 s on the 2-core CPU at the bound).
MAX_WORK = 2**32

# Pairs scanned per step of the search for a branch's diameter.
_WINDOW = 32


def check_mda_size(rule: str, n: int, num_byzantine: int, max_work: int = MAX_WORK) -> None:
    """Raises a ``ValueError`` unless the exact search is feasible: ``2^f * n^2 <= max_work``."""
    work = (2**num_byzantine) * n * n
    largest = max(0, int(np.floor(np.log2(max(max_work / (n * n), 1)))))
    require(work <= max_work, rule,
            f"the exact search visits 2^f branches of n^2 distances: 2^{num_byzantine} * {n}^2 "
            f"= {work:.3g} exceeds the bound {max_work:.3g} (2^f * n^2 <= {max_work:.3g}); "
            f"with n={n} num_byzantine can be at most {largest}")


def _first_alive(masks, ptr, pa, pb):
    """For every branch, the first pair (from ``ptr`` on, in descending distance) whose
    two rows are both still in the branch. ``ptr = P`` when there is none."""
    num_pairs = pa.shape[0]
    span = jnp.arange(_WINDOW)

    def body(carry):
        ptr, done = carry
        idx = ptr[:, None] + span[None, :]  # int[B, W]
        inside = idx < num_pairs
        idc = jnp.minimum(idx, num_pairs - 1)
        alive = (jnp.take_along_axis(masks, pa[idc], axis=1)
                 & jnp.take_along_axis(masks, pb[idc], axis=1) & inside)
        found = jnp.any(alive, axis=1)
        step = jnp.where(found, jnp.argmax(alive, axis=1), _WINDOW)
        new_ptr = jnp.where(done, ptr, jnp.minimum(ptr + step, num_pairs))
        return new_ptr, done | found | (new_ptr >= num_pairs)

    ptr, _ = lax.while_loop(lambda c: ~jnp.all(c[1]), body,
                            (ptr, ptr >= num_pairs))
    return ptr


def min_diameter_subset(dists: jax.Array, num_removed: int,
                        key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact minimum-diameter subset of ``n - num_removed`` rows.

    Branch on the current diameter pair ``(u, v)``: a best subset never keeps
    both ``u`` and ``v`` (dropping either one gives a set of smaller
    diameter), so every optimal subset is a leaf of the binary tree that
    removes ``u`` or ``v`` at each of ``num_removed`` levels (distinct
    distances assumed; with exact ties the search still returns a subset of
    minimal diameter). Among leaves of equal diameter (common: two subsets
    that share their farthest pair), the one with the smallest sum of squared
    pairwise distances wins, and exact ties in both (symmetric
    configurations) are broken by a random order of the leaves drawn from
    ``key``. All ``2^f`` branches advance together; each
    keeps a pointer into the pairs sorted by descending distance, which only
    moves forward along a branch.

    Args:
      dists: ``float[n, n]`` squared distances (+inf allowed, e.g. invalid rows).
      num_removed: ``f`` (static).
      key: PRNG key of the last tie-break.

    Returns:
      ``(keep bool[n], diameter float[])`` (the squared diameter).
    """
    n = dists.shape[0]
    if n < 2:  # no pair: the one row (or none), diameter 0
        return jnp.ones((n,), bool), jnp.zeros((), dists.dtype)
    iu, ju = np.triu_indices(n, k=1)
    order = jnp.argsort(-dists[iu, ju], stable=True)  # pairs by descending distance
    pa = jnp.asarray(iu, jnp.int32)[order]
    pb = jnp.asarray(ju, jnp.int32)[order]
    sorted_d = dists[pa, pb]
    masks = jnp.ones((1, n), bool)
    ptr = jnp.zeros((1,), jnp.int32)
    rows = jnp.arange(n)
    for _ in range(num_removed):
        ptr = _first_alive(masks, ptr, pa, pb)
        u, v = pa[ptr], pb[ptr]  # int[B]; ptr < P here (>= 2 rows remain)
        masks = jnp.concatenate([masks & (rows[None, :] != u[:, None]),
                                 masks & (rows[None, :] != v[:, None])], axis=0)
        ptr = jnp.concatenate([ptr, ptr])
    ptr = _first_alive(masks, ptr, pa, pb)
    diam = jnp.where(ptr < pa.shape[0], sorted_d[jnp.minimum(ptr, pa.shape[0] - 1)], 0.0)
    finite_d = jnp.where(jnp.isfinite(dists), dists, 0.0)
    m = masks.astype(dists.dtype)  # float[L, n]
    spread = jnp.sum(jnp.matmul(m, finite_d, precision=lax.Precision.HIGHEST) * m, axis=1)
    shuffle = jax.random.permutation(key, masks.shape[0])
    best = jnp.lexsort((shuffle, spread, diam))[0]
    return masks[best], diam[best]


def mda(num_byzantine: int, max_work: int = MAX_WORK) -> Aggregator:
    """The mean of the ``n - f`` rows whose subset has the smallest diameter.

    ::

        S* = argmin_{|S| = n - f} max_{i, j in S} ‖x_i - x_j‖
        y  = mean_{i in S*} x_i

    Exact, by the branching search of :func:`min_diameter_subset` on the
    squared distances of one centred Gram matrix
    (``_ops.pairwise_sq_dists``): ``2^f`` branches instead of ByzFL's
    ``C(n, f)`` subsets (``C(n, f) >= 2^f`` whenever ``n > 2f``). The size
    bound ``2^f · n^2 <= max_work`` is checked when the rule is traced (at
    build time in the simulator), and the error states it.

    Ties: several subsets may share the minimal diameter (they share the
    farthest pair); the definition leaves the choice open and ByzFL takes the
    first in ``itertools.combinations`` order, which depends on client order.
    Here the one with the smallest sum of squared pairwise distances wins,
    which depends on the data only (exact ties in both, as in symmetric
    configurations, are broken with the key). With a unique minimal subset
    (e.g. ``f`` clear outliers) the two agree (tested).

    Non-finite rows are at infinite distance from every row, so they are
    dropped first and count towards ``f``; with more than ``f`` of them the
    finite rows of the chosen subset are averaged.

    Args:
      num_byzantine: ``f`` (static); needs ``n > 2f`` and ``2^f · n^2 <= max_work``.
      max_work: the feasibility bound (static; default ``2^32``).

    Returns:
      An :class:`Aggregator` with ``info = {'selected': bool[n], 'diameter':
      float[]`` (the subset's L2 diameter), ``'num_nonfinite': int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = mda(1)
      >>> x = jnp.array([[0., 1.], [1., 1.], [9., 1.]])
      >>> agg.aggregate(x, agg.init(2), jax.random.PRNGKey(0))[0].tolist()
      [0.5, 1.0]

    References:
      El Mhamdi et al., "Genuinely Distributed Byzantine Machine Learning",
      PODC 2020.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "mda",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")

    def aggregate(updates, state, key, context=None):
        del context
        n = updates.shape[0]
        check_majority("mda", n, num_byzantine)
        check_mda_size("mda", n, num_byzantine, max_work)
        valid = finite_rows(updates)  # bool[n]
        dists = _ops.pairwise_sq_dists(updates, valid)  # float[n, n], +inf for invalid rows
        keep, diam = min_diameter_subset(dists, num_byzantine, key)
        keep = keep & valid
        count = jnp.maximum(jnp.sum(keep), 1).astype(updates.dtype)
        out = weighted_row_sum(updates, jnp.where(keep, 1.0 / count, 0.0), valid)
        info = {"selected": keep, "diameter": jnp.sqrt(diam),
                "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, state, info

    return Aggregator(init_empty, aggregate)
