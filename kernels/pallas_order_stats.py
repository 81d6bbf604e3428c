"""Order statistics over the client axis as a Pallas kernel (GPUs, through Triton).

``range_mean(updates, valid, lo, hi)`` returns, for every coordinate ``j``, the
mean of the valid ``x[:, j]`` of rank ``lo..hi`` (inclusive, ascending), and
optionally the sum of the valid rows' signs. The median (the one or two middle
ranks), the trimmed mean and the invariant aggregator's trimmed mean are all
such means, so :func:`rank_weighted_sum` -- the signature of the rules'
``kernel`` argument -- serves ``coordinate_median``, ``trimmed_mean`` and
``invariant`` when injected::

    from fljax import aggregators as agg
    from kernels import pallas_order_stats
    rule = agg.trimmed_mean(40, kernel=pallas_order_stats.rank_weighted_sum)

Algorithm (one program per block of columns): the two boundary order
statistics are found by bitwise bisection on order-preserving integer keys
(32 passes, each one comparison and one count per value; exact, no sort, no
data-dependent control flow), then one more pass sums the values strictly
between them, each scaled by ``1 / (hi - lo + 1)`` before it is added (no
overflow), plus the kept copies of the two boundary values (ties). Invalid
rows are keyed above every finite value and never counted. The rows are
loaded in chunks of ``rows``; with one chunk the tile stays in registers
through all passes, otherwise every pass re-reads the block (from L2 or HBM).
The same algorithm as the jnp ``'bisect'`` paths in
``fljax/aggregators/_ops.py``, which XLA cannot keep on chip.

Where it runs: compiled with Triton on an NVIDIA GPU (``jax.experimental.pallas``
with ``pallas.triton.CompilerParams``: Triton is what jax 0.10's
``pallas_call`` supports for a grid of blocks; Mosaic GPU is meant for
``plgpu.kernel``), interpreted on the CPU (``interpret=True``, for the tests).
It is not the default anywhere: on a GPU nothing has been measured yet (no GPU
was lent to the task that wrote it), and ``kernel="auto"`` only picks kernels
measured to win on their backend (``fljax/aggregators/_kernels.py``). The block
sizes below are first guesses, to be tuned on a GPU.

:func:`range_mean_reference` is the plain jnp definition (a sort) the tests
compare it against.

References:
  Alabi, Blanchard, Gordon, Steinbach, "Fast k-selection algorithms for
  graphics processing units", ACM JEA 2012 (bucket and radix selection on GPUs).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

_NONE = 0xFFFFFFFF  # key of an invalid row: above every finite value's key

# Values one program holds per chunk (rows x block): a register budget guess
# for 4 warps, to be tuned on a GPU.
TILE_VALUES = 4096
MAX_BLOCK = 256


def _pow2(k: int) -> int:
    return 1 << max(k - 1, 0).bit_length()


def tiling(n: int) -> tuple[int, int]:
    """``(rows, block)``: rows per chunk and columns per program for ``n`` clients."""
    rows = min(_pow2(n), 128)
    return rows, max(16, min(MAX_BLOCK, TILE_VALUES // rows))


def _float_to_key(x):
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _key_to_float(u):
    bits = jnp.where(u >> 31 == 1, u & jnp.uint32(0x7FFFFFFF), ~u)
    return lax.bitcast_convert_type(bits, jnp.float32)


def _kernel(params_ref, valid_ref, x_ref, out_ref, signs_ref, *, n, d, rows, block,
            with_signs):
    """One program: columns ``[j * block, (j + 1) * block)`` of ``x: float32[n, d]``."""
    j = pl.program_id(0)
    lo, hi, m = params_ref[0], params_ref[1], params_ref[2]
    cols = j * block + lax.broadcasted_iota(jnp.int32, (block,), 0)
    col_ok = cols < d
    chunks = pl.cdiv(n, rows)

    def load(c):  # chunk c -> (keys uint32[rows, block], values float32[rows, block] or 0)
        r = c * rows + lax.broadcasted_iota(jnp.int32, (rows,), 0)
        row_ok = r < n
        ok = (pltriton.load(valid_ref.at[pl.ds(c * rows, rows)], mask=row_ok, other=0) != 0) & row_ok
        x = pltriton.load(x_ref.at[pl.ds(c * rows, rows), pl.ds(j * block, block)],
                          mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        keys = jnp.where(ok[:, None], _float_to_key(x), jnp.uint32(_NONE))
        return keys, jnp.where(ok[:, None], x, 0.0)

    resident = load(0) if chunks == 1 else None

    def over_chunks(fn, init):  # fold fn(acc, keys, values) over the row chunks
        if resident is not None:
            return fn(init, *resident)
        return lax.fori_loop(0, chunks, lambda c, acc: fn(acc, *load(c)), init)

    def kth(k):  # the k-th smallest key (0-based) of every column, by bisection
        target = (k + 1).astype(jnp.float32)

        def step(i, ans):
            bit = jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32))
            trial = ans | (bit - jnp.uint32(1))
            count = over_chunks(
                lambda acc, keys, x: acc + jnp.sum((keys <= trial[None, :]).astype(jnp.float32), 0),
                jnp.zeros((block,), jnp.float32))
            return jnp.where(count >= target, ans, ans | bit)

        return lax.fori_loop(0, 32, step, jnp.zeros((block,), jnp.uint32))

    klo, khi = kth(lo), kth(hi)
    w = 1.0 / (hi - lo + 1).astype(jnp.float32)

    def final(acc, keys, x):
        between, n_le_lo, n_lt_hi, signs = acc
        inside = (keys > klo[None, :]) & (keys < khi[None, :])
        return (between + jnp.sum(jnp.where(inside, x * w, 0.0), 0),
                n_le_lo + jnp.sum((keys <= klo[None, :]).astype(jnp.float32), 0),
                n_lt_hi + jnp.sum((keys < khi[None, :]).astype(jnp.float32), 0),
                signs + jnp.sum(jnp.sign(x), 0))  # x is 0 on invalid rows

    zero = jnp.zeros((block,), jnp.float32)
    between, n_le_lo, n_lt_hi, signs = over_chunks(final, (zero, zero, zero, zero))
    lo_val, hi_val = _key_to_float(klo), _key_to_float(khi)
    out = (between + (lo_val * w) * (n_le_lo - lo.astype(jnp.float32))
           + (hi_val * w) * ((hi + 1).astype(jnp.float32) - n_lt_hi))
    out = jnp.where(klo == khi, lo_val, out)
    out = jnp.where(m > 0, out, 0.0)
    pltriton.store(out_ref.at[pl.ds(j * block, block)], out, mask=col_ok)
    if with_signs:
        pltriton.store(signs_ref.at[pl.ds(j * block, block)], signs, mask=col_ok)


def range_mean(updates: jax.Array, valid: jax.Array, lo: jax.Array, hi: jax.Array, *,
               with_signs: bool = False, rows: int | None = None, block: int | None = None,
               interpret: bool | None = None):
    """Per column, the mean of the valid values of rank ``lo..hi`` (inclusive).

    Args:
      updates: ``float32[n, d]``; rows with ``valid[i]`` false are never counted
        (they may hold NaN / inf).
      valid: ``bool[n]``; ``m`` = number of valid rows.
      lo, hi: int scalars (may be traced), ``0 <= lo <= hi < m``.
      with_signs: also return ``sum_i sign(updates[i, j])`` over valid rows.
      rows, block: rows per chunk and columns per program, powers of two
        (None: :func:`tiling`).
      interpret: None = compiled on a GPU, interpreted on the CPU.

    Returns:
      ``float32[d]`` (zero where ``m = 0``), or the pair with the sign sums.
    """
    if updates.ndim != 2 or updates.dtype != jnp.float32:
        raise TypeError(f"range_mean: updates must be float32[n, d], got "
                        f"{updates.dtype}{list(updates.shape)}")
    n, d = updates.shape
    r0, b0 = tiling(n)
    rows, block = rows or r0, block or b0
    if rows & (rows - 1) or block & (block - 1):
        raise ValueError(f"range_mean: rows and block must be powers of two, got {rows}, {block}")
    if interpret is None:
        platform = jax.default_backend()
        if platform not in ("cpu", "gpu", "cuda"):
            raise NotImplementedError(f"range_mean: written for NVIDIA GPUs (Triton), not {platform}")
        interpret = platform == "cpu"
    m = jnp.sum(valid.astype(jnp.int32))
    params = jnp.stack([jnp.asarray(lo, jnp.int32), jnp.asarray(hi, jnp.int32), m,
                        jnp.int32(0)])
    out_shape = (jax.ShapeDtypeStruct((d,), jnp.float32),) * 2
    kernel = functools.partial(_kernel, n=n, d=d, rows=rows, block=block, with_signs=with_signs)
    compiler_params = None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=1)
    out, signs = pl.pallas_call(
        kernel, out_shape=out_shape, grid=(pl.cdiv(d, block),),
        compiler_params=compiler_params, interpret=interpret, name="fljax_range_mean",
    )(params, valid.astype(jnp.int32), updates)
    return (out, signs) if with_signs else out


def rank_weighted_sum(updates: jax.Array, valid: jax.Array, weights: jax.Array, *,
                      with_signs: bool = False, interpret: bool | None = None):
    """:func:`range_mean` behind the signature of the rules' ``kernel`` argument.

    Exact for weights that are equal on one range of ranks and zero elsewhere,
    summing to one -- the only kind the median, trimmed-mean and invariant rules
    pass (``kernels.order_stats.rank_weighted_sum`` takes any weights). The
    range is where ``weights`` is nonzero.
    """
    n = updates.shape[0]
    rank = jnp.arange(n)
    nonzero = weights != 0
    lo = jnp.min(jnp.where(nonzero, rank, n - 1))
    hi = jnp.max(jnp.where(nonzero, rank, 0))
    return range_mean(updates, valid, lo, jnp.maximum(hi, lo), with_signs=with_signs,
                      interpret=interpret)


def range_mean_reference(updates, valid, lo, hi, *, with_signs=False):
    """The definition in plain jnp (a full sort; slow, for tests)."""
    n = updates.shape[0]
    m = jnp.sum(valid.astype(jnp.int32))
    s = jnp.sort(jnp.where(valid[:, None], updates, jnp.inf), axis=0)
    rank = jnp.arange(n)[:, None]
    keep = (rank >= lo) & (rank <= hi)
    out = jnp.sum(jnp.where(keep, s, 0.0), axis=0) / jnp.asarray(hi - lo + 1, jnp.float32)
    out = jnp.where(m > 0, out, 0.0)
    if not with_signs:
        return out
    return out, jnp.sum(jnp.where(valid[:, None], jnp.sign(updates), 0.0), axis=0)
