"""Coordinate-wise trimmed mean (Yin et al., ICML 2018).

References:
  Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
  Towards Optimal Statistical Rates", ICML 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators import _kernels, _ops
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require, tile_memory


def trimmed_mean_of_valid(
    updates: jax.Array,
    valid: jax.Array,
    num_trim: jax.Array,
    method: str = "sort",
    block: int | None = None,
    batch: int | None = None,
    sign_tau: jax.Array | None = None,
    kernel: _kernels.KernelArg = None,
) -> jax.Array:
    """Per coordinate: mean of the valid values of rank ``[t, m - t)``.

    ``m`` is the number of valid rows and ``t = min(num_trim, (m - 1) // 2)``, so
    at least one value is always kept. The sum never overflows: every kept value
    is scaled by ``1 / (m - 2t)`` before it is added, and only kept (finite,
    bounded) values enter it -- unlike "sum minus top-k" (byzantine.md section 7.3).

    Args:
      updates: ``float[n, d]``; invalid rows may hold anything (NaN, inf).
      valid: ``bool[n]``.
      num_trim: int scalar (may be traced): values trimmed from each end.
      method: ``'sort'`` (bitonic network) or ``'bisect'`` (two bisections).
      block: column-tile width.
      batch: tiles per ``lax.map`` step (None: the measured default).
      sign_tau: if given, also compute the invariant aggregator's sign mask in
        the same pass over each tile: ``|mean of valid signs| >= sign_tau``.
      kernel: ``'auto'``, None (the jnp path) or an order-statistics kernel
        (see ``_kernels.py``); with a kernel, ``method``, ``block`` and
        ``batch`` are unused.

    Returns:
      ``float[d]`` (zero where no row is valid); with ``sign_tau``, a pair
      ``(float[d] masked by the sign mask, bool[d] mask)``.
    """
    n = updates.shape[0]
    m = jnp.sum(valid.astype(jnp.int32))
    t = jnp.clip(jnp.minimum(num_trim, (m - 1) // 2), 0, None)
    kept = jnp.maximum(m - 2 * t, 1)
    inv = (1.0 / kept.astype(jnp.float32)).astype(updates.dtype)

    rank = jnp.arange(n)
    keep = ((rank >= t) & (rank < m - t))[:, None]  # bool[n, 1]
    inv_m = 1.0 / jnp.maximum(m, 1).astype(jnp.float32)

    def sign_mask(sign_sum):  # float[b] -> bool[b]
        return jnp.abs(sign_sum * inv_m) >= sign_tau

    def with_kernel(fn):
        weights = jnp.where(keep[:, 0], inv, 0.0).astype(jnp.float32)  # float[n]
        if sign_tau is None:
            return fn(updates, valid, weights).astype(updates.dtype)
        out, sign_sum = fn(updates, valid, weights, with_signs=True)
        mask = sign_mask(sign_sum)
        return jnp.where(mask, out, 0.0).astype(updates.dtype), mask

    def without():
        return _trimmed_mean_jnp(updates, valid, m, t, inv, keep, method, block, batch,
                                 None if sign_tau is None else sign_mask)

    return _kernels.dispatch(kernel, "rank_weighted_sum", with_kernel, without, updates)


def _trimmed_mean_jnp(updates, valid, m, t, inv, keep, method, block, batch, sign_mask):
    """The jnp path of :func:`trimmed_mean_of_valid` (``sign_mask``: None or ``float[b] -> bool[b]``)."""
    if method == "sort":

        def tile_fn(tile):  # float[n, b] -> float[b]
            s = _ops.bitonic_sort_rows(jnp.where(valid[:, None], tile, jnp.inf))
            return jnp.sum(jnp.where(keep, s * inv, 0.0), axis=0)

    elif method == "bisect":
        tf = t.astype(jnp.float32)
        mf = m.astype(jnp.float32)

        def tile_fn(tile):  # float[n, b] -> float[b]
            keys = _ops.float_to_key(tile)
            keys = jnp.where(valid[:, None], keys, jnp.uint32(0xFFFFFFFF))
            klo = _ops.kth_smallest_key(keys, t)
            khi = _ops.kth_smallest_key(keys, m - 1 - t)
            lo, hi = _ops.key_to_float(klo), _ops.key_to_float(khi)
            inside = (keys > klo[None]) & (keys < khi[None])
            between = jnp.sum(jnp.where(inside, tile * inv, 0.0), axis=0)
            n_le_lo = jnp.sum((keys <= klo[None]).astype(jnp.float32), axis=0)
            n_lt_hi = jnp.sum((keys < khi[None]).astype(jnp.float32), axis=0)
            # Kept copies of the boundary values (ties at lo / hi).
            out = between + (lo * inv) * (n_le_lo - tf) + (hi * inv) * (mf - tf - n_lt_hi)
            return jnp.where(klo == khi, lo, out)

    else:
        raise ValueError(f"trimmed_mean: method must be 'sort' or 'bisect', got {method!r}")

    tiles = _ops.tiling(method, block, batch)
    if sign_mask is None:
        out = _ops.blockwise(tile_fn, updates, *tiles)
        return jnp.where(m > 0, out, 0.0).astype(updates.dtype)

    def masked_fn(tile):  # float[n, b] -> float[2, b]: (masked value, mask)
        mask = sign_mask(jnp.sum(jnp.where(valid[:, None], jnp.sign(tile), 0.0), axis=0))
        return jnp.stack([jnp.where(mask, tile_fn(tile), 0.0), mask.astype(tile.dtype)])

    out = _ops.blockwise(masked_fn, updates, *tiles)
    return jnp.where(m > 0, out[0], 0.0).astype(updates.dtype), out[1] > 0


def trimmed_mean(
    num_trim: int,
    method: str = "sort",
    block: int | None = None,
    batch: int | None = None,
    kernel: _kernels.KernelArg = "auto",
) -> Aggregator:
    """Per coordinate, drop the ``num_trim`` largest and smallest values and average the rest.

    Fang et al. and the reference code set ``num_trim`` to the number of
    Byzantine clients. Rows with a NaN or infinite entry are screened out first
    and the trimming applies to the finite rows; if fewer than
    ``2 * num_trim + 1`` rows are finite, the trim shrinks to
    ``(m - 1) // 2`` so that at least one value is kept (``info`` reports the
    count of screened rows).

    Args:
      num_trim: values removed from each end per coordinate (static).
      method: the jnp path: ``'sort'`` (bitonic network, default) or
        ``'bisect'``; both exact.
      block: column-tile width of the jnp path (None: the measured default).
      batch: tiles per ``lax.map`` step (None: the measured default).
      kernel: ``'auto'`` (default: the compiled CPU kernel
        ``kernels.order_stats.rank_weighted_sum`` where it can be built and the
        backend is the CPU, else the jnp path; see ``_kernels.py``), None (the
        jnp path) or an order-statistics kernel with that function's
        signature. The paths differ only in the rounding of the sum.

    Returns:
      An :class:`Aggregator`; ``aggregate`` maps ``float[n, d]`` to ``float[d]``
      with ``info = {'num_nonfinite': int32[]}``. ``aggregate`` raises a
      ``ValueError`` when ``2 * num_trim >= n``. It runs on column blocks
      (``columns=True``; only the row screening is summed over the devices).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> agg = trimmed_mean(1)
      >>> x = jnp.array([[1.], [2.], [3.], [100.]])
      >>> agg.aggregate(x, agg.init(1), jax.random.PRNGKey(0))[0].tolist()
      [2.5]

    References:
      Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal
      Statistical Rates", ICML 2018.
    """
    require(num_trim >= 0, "trimmed_mean", f"num_trim must be >= 0, got {num_trim}")
    require(method in ("sort", "bisect"), "trimmed_mean",
            f"method must be 'sort' or 'bisect', got {method!r}")
    _kernels.check(kernel, "trimmed_mean")

    def aggregate(updates, state, key, context=None):
        del key
        n = updates.shape[0]
        require(2 * num_trim < n, "trimmed_mean",
                f"needs 2 * num_trim < n, got num_trim={num_trim}, n={n} "
                f"(2 * {num_trim} = {2 * num_trim} >= {n})")
        valid = finite_rows(updates, None if context is None else context.axis)
        out = trimmed_mean_of_valid(updates, valid, jnp.int32(num_trim), method, block, batch,
                                    kernel=kernel)
        num_nonfinite = n - jnp.sum(valid.astype(jnp.int32))
        return out, state, {"num_nonfinite": num_nonfinite}

    return Aggregator(init_empty, aggregate, columns=True,
                      memory=lambda n, d, i: order_stat_memory(n, d, i, method, block, batch))


def order_stat_memory(n: int, d: int, itemsize: int, method: str, block, batch) -> int:
    """Working memory of the tiled order statistics (trimmed mean, invariant):
    a few tiles of the client axis padded to a power of two (XLA: 1.6 MB at
    200 x 50,000; 8.4 MB at 2,000 x 2,000)."""
    b, t = _ops.tiling(method, block, batch)
    rows = 1 << max(n - 1, 1).bit_length()
    return tile_memory(rows, min(d, b * t), itemsize, 4) + 2 * d * itemsize
