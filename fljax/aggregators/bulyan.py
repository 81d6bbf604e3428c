"""Bulyan (El Mhamdi, Guerraoui, Rouault, ICML 2018).

References:
  El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
  Learning in Byzantium", ICML 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _kernels, _ops
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require


def bulyan(
    num_byzantine: int,
    block: int | None = None,
    batch: int | None = None,
    kernel: _kernels.KernelArg = "auto",
) -> Aggregator:
    """Bulyan: recursive Krum selection, then a per-coordinate trimmed mean around the median.

    With ``theta = n - 2f`` and ``beta = theta - 2f`` (byzantine.md section 2.3):

    1. Select ``theta`` updates by Krum applied ``theta`` times to the shrinking
       set ``R`` (``f`` fixed, ``|R| - f - 2`` neighbours), removing the chosen
       update each time. The pairwise distances are computed once.
    2. For every coordinate, average the ``beta`` selected values closest to
       the median of the selected values. Values tied at the boundary distance
       share the remaining slots equally (their mean fills them).

    Non-finite rows get Krum score +inf and are never selected while enough
    finite rows remain (at most ``f`` non-finite rows). Krum ties are broken by
    a random permutation drawn from ``key``.

    Args:
      num_byzantine: ``f`` (static); needs ``n >= 4f + 3``.
      block: column-tile width of the per-coordinate step's jnp path.
      batch: tiles per ``lax.map`` step (None: the measured default).
      kernel: the per-coordinate step: ``'auto'`` (default: the compiled CPU
        kernel ``kernels.order_stats.closest_to_median_mean`` where it can be
        built and the backend is the CPU, else the jnp path; see
        ``_kernels.py``), None (the jnp path) or a kernel with that
        function's signature. The kernel reads the selected rows in place
        (no ``[theta, d]`` gather); the paths differ only in the rounding of
        the sums.

    Returns:
      An :class:`Aggregator` with ``info = {'selected': int32[theta]`` (in
      selection order), ``'num_nonfinite': int32[]}``. ``aggregate`` raises a
      ``ValueError`` when ``n < 4f + 3``.

    References:
      El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
      Learning in Byzantium", ICML 2018.
    """
    f = num_byzantine
    require(f >= 0, "bulyan", f"num_byzantine must be >= 0, got {f}")
    _kernels.check(kernel, "bulyan")

    def aggregate(updates, state, key, context=None):
        del context
        n = updates.shape[0]
        require(n >= 4 * f + 3, "bulyan",
                f"needs n >= 4 * num_byzantine + 3, got n={n}, num_byzantine={f} "
                f"(n must be at least {4 * f + 3})")
        theta = n - 2 * f
        beta = theta - 2 * f
        valid = finite_rows(updates)
        dists = _ops.pairwise_sq_dists(updates, valid)  # float[n, n]
        rank = jax.random.permutation(key, n)  # tie-break rank per client
        ids = jnp.arange(n)
        # Each row's distances sorted once; an iteration then takes the k
        # nearest *live* others by a running count over that order (O(n^2),
        # no sort per iteration: 0.14 s -> ~1 ms at n = 100).
        nbr = jnp.argsort(dists, axis=1)  # int[n, n], nearest first
        d_sorted = jnp.take_along_axis(dists, nbr, axis=1)  # float[n, n]
        other = nbr != ids[:, None]  # self excluded

        def select_one(t, carry):
            removed, selected = carry  # bool[n], int32[theta]
            live = ~removed
            # Krum on R = live rows: |R| = n - t, neighbours |R| - f - 2.
            k = n - t - f - 2
            use = live[nbr] & other  # bool[n, n] in each row's sorted order
            take = use & (jnp.cumsum(use.astype(jnp.int32), axis=1) <= k)
            s = jnp.sum(jnp.where(take, d_sorted, 0.0), axis=1)
            s = jnp.where(live & valid, s, jnp.inf)
            s = jnp.where(jnp.isnan(s), jnp.inf, s)
            # Lowest score; among equal scores valid before invalid, then live
            # before removed, then the key's rank (one argmin, no sort).
            tie = (~valid).astype(jnp.int32) * (2 * n) + removed.astype(jnp.int32) * n + rank
            chosen = jnp.argmin(jnp.where(s == jnp.min(s), tie, 3 * n)).astype(jnp.int32)
            return removed.at[chosen].set(True), selected.at[t].set(chosen)

        init = (jnp.zeros((n,), bool), jnp.zeros((theta,), jnp.int32))
        _, selected = lax.fori_loop(0, theta, select_one, init)

        def with_kernel(fn):  # the selected finite rows, read in place
            chosen = jnp.zeros((n,), bool).at[selected].set(True) & valid  # bool[n]
            return fn(updates, chosen, beta).astype(updates.dtype)

        def without():
            chosen = updates[selected]  # float[theta, d]
            # With more than f non-finite rows the finite ones run out and the
            # loop picks removed finite rows again (valid before invalid): a row
            # counts once, as on the kernel path (the distinct finite rows).
            pos = jnp.arange(theta)
            earlier = pos[None, :] < pos[:, None]  # bool[theta, theta]
            again = jnp.any((selected[:, None] == selected[None, :]) & earlier,
                            axis=1)  # bool[theta]: picked at an earlier position too
            chosen_valid = valid[selected] & ~again
            return closest_to_median_mean(chosen, chosen_valid, beta, block, batch)

        out = _kernels.dispatch(kernel, "closest_to_median_mean", with_kernel, without, updates)
        info = {"selected": selected, "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, state, info

    def memory(n, d, itemsize):  # Krum's distances, then the closest-to-median tiles
        from fljax.aggregators.krum import distance_memory

        return distance_memory(n, d, itemsize) + 2 * d * itemsize

    return Aggregator(init_empty, aggregate, memory=memory)


def closest_to_median_mean(
    x: jax.Array,
    valid: jax.Array,
    beta: int,
    block: int | None = None,
    batch: int | None = None,
) -> jax.Array:
    """Per coordinate: mean of the ``beta`` valid values closest to the valid median.

    Args:
      x: ``float[k, d]``.
      valid: ``bool[k]``; invalid rows are ignored (``beta`` shrinks to the
        number of valid rows if needed).
      beta: static count of values averaged.
      block: column-tile width.
      batch: tiles per ``lax.map`` step (None: the measured default).

    Returns:
      ``float[d]``. Boundary ties: all values strictly closer than the
      ``beta``-th distance count fully, the tied ones share the remaining slots.
    """
    m = jnp.sum(valid.astype(jnp.int32))
    lo_rank = jnp.maximum(m - 1, 0) // 2
    hi_rank = jnp.maximum(m, 1) // 2
    b = jnp.clip(jnp.minimum(beta, m), 1, None)
    bf = b.astype(jnp.float32)
    none = jnp.uint32(0xFFFFFFFF)

    def tile_fn(tile):  # float[k, w] -> float[w]
        keys = jnp.where(valid[:, None], _ops.float_to_key(tile), none)
        lo = _ops.kth_smallest_key(keys, lo_rank)
        hi = jnp.where(hi_rank > lo_rank, _ops.next_key(keys, lo, lo_rank), lo)
        med = 0.5 * _ops.key_to_float(lo) + 0.5 * _ops.key_to_float(hi)  # float[w]
        # |x - med| >= 0, so its float bits order like its values.
        dist = jnp.abs(tile - med[None, :])
        dkeys = jnp.where(valid[:, None], lax.bitcast_convert_type(dist, jnp.uint32), none)
        r = _ops.kth_smallest_key(dkeys, b - 1)  # the beta-th smallest distance
        closer = dkeys < r[None, :]
        tied = dkeys == r[None, :]
        n_closer = jnp.sum(closer.astype(jnp.float32), axis=0)
        n_tied = jnp.sum(tied.astype(jnp.float32), axis=0)
        # Scale before summing: no overflow even for values near the float32 max.
        s_closer = jnp.sum(jnp.where(closer, tile / bf, 0.0), axis=0)
        s_tied = jnp.sum(jnp.where(tied, tile / jnp.maximum(n_tied, 1.0), 0.0), axis=0)
        return s_closer + s_tied * ((bf - n_closer) / bf)

    out = _ops.blockwise(tile_fn, x, *_ops.tiling("bisect", block, batch))
    return jnp.where(m > 0, out, 0.0).astype(x.dtype)
