"""Shared kernels of the robust rules: pairwise distances and order statistics.

Everything here is a pure jnp function of static shapes, safe under ``jit`` and
``vmap``. Two families:

* :func:`pairwise_sq_dists` -- squared Euclidean distances between client rows
  through one Gram matrix of *centred* rows (Krum, Multi-Krum, Bulyan; attacks
  that need the same matrix reuse it).
* Column-blocked order statistics over the client axis (median, trimmed mean,
  Bulyan's closest-to-median mean, the invariant aggregator). XLA:CPU sorts
  along axis 0 of a ``[n, d]`` matrix slowly (``jnp.sort`` took ~22 s on
  200 x 1M), so the work is split into column tiles ``[n, block]`` that stay in
  cache (``lax.map`` over tiles) and each tile is either sorted with a bitonic
  network of elementwise ``minimum`` / ``maximum`` over rows, or searched with a
  bitwise bisection on order-preserving integer keys. Neither needs a transpose
  or a gather. See ``benchmarks/aggregators.py`` for the measured alternatives.

These are the jnp paths of the order-statistic rules (median, trimmed mean,
invariant, Bulyan). Where it can be built, those rules use a compiled CPU
kernel by default instead (``kernel='auto'``, see ``_kernels.py``); the jnp
paths serve every other backend and ``kernel=None``.

Non-finite rows are the caller's business: the helpers take a ``valid`` row mask
and treat invalid rows as +inf (they sort last and are never counted).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

# Column-tile width and how many tiles one lax.map step processes (vmapped),
# per kernel. Measured on the 2-core CPU (200 x 262k and 200 x 1M float32);
# the numbers are in benchmarks/aggregators.py's module docstring.
TILING = {"bisect": (256, 8), "sort": (64, 8)}
DEFAULT_BLOCK, DEFAULT_BATCH = TILING["bisect"]


# Unroll factor of the 32-step bisection. Fully unrolled ran ~3x faster on
# XLA:CPU than a rolled loop but compiles slower; the tests lower it (the
# result is the same either way).
BISECT_UNROLL = 32


def tiling(method: str, block, batch):
    """``(block, batch)`` with ``None`` replaced by the measured default of ``method``."""
    b, t = TILING[method]
    return (b if block is None else block), (t if batch is None else batch)


def pairwise_sq_dists(
    updates: jax.Array,
    valid: Optional[jax.Array] = None,
    axis: Optional[str] = None,
) -> jax.Array:
    """Squared Euclidean distances between the rows, through a centred Gram matrix.

    ``|x_i - x_j|^2 = |c_i|^2 + |c_j|^2 - 2 c_i.c_j`` with ``c_i = x_i - centre``.
    Subtracting a common centre changes no distance in exact arithmetic but keeps
    float32 from cancelling digits when all rows share a large offset (models
    instead of deltas: 41% relative error uncentred against 1e-7 centred, see
    byzantine.md section 7.1). The centre is the mean of the valid rows whose
    norm is at most the median valid norm, so a few huge rows cannot drag it
    away from the bulk. The matmul runs at ``Precision.HIGHEST`` (no TF32/bf16
    passes on accelerators), results are clamped at 0, the diagonal is exactly 0,
    and overflowed or NaN entries become +inf.

    Args:
      updates: ``float[n, d]``.
      valid: optional ``bool[n]``; rows marked False get distance +inf to every
        other row (their contents, NaN included, are never read into the result).
      axis: a mesh axis over which the columns are split (``updates`` is one
        block): each device forms the partial Gram matrix of its columns and
        one ``psum`` adds them (the squared norms likewise).

    Returns:
      ``float[n, n]`` symmetric, zero diagonal, entries in ``[0, +inf]``.
    """
    n = updates.shape[0]
    if valid is None:
        valid = jnp.ones((n,), bool)
    big = jnp.asarray(jnp.inf, updates.dtype)

    psum = (lambda v: v) if axis is None else (lambda v: lax.psum(v, axis))  # noqa: E731

    def centred_gram(x):  # float[n, d] with finite (or zeroed) rows -> float[n, n]
        sq = psum(jnp.sum(x * x, axis=1))  # float[n], may overflow to inf for huge rows
        # Robust centre: mean of the valid rows with norm <= the median valid norm.
        sq_valid = jnp.where(valid, sq, big)
        num_valid = jnp.sum(valid)
        med = jnp.sort(sq_valid)[jnp.maximum((num_valid - 1) // 2, 0)]
        w = (valid & (sq_valid <= med)).astype(x.dtype)
        w = w / jnp.maximum(jnp.sum(w), 1.0)
        centre = jnp.dot(w, x, precision=lax.Precision.HIGHEST)  # float[d]
        return psum(centred_gram_blocked(x, centre, valid))

    # Common case: no screening copy of the [n, d] matrix.
    gram = map_valid_rows(centred_gram, updates, valid)
    norms = jnp.diagonal(gram)
    dist = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    pair_valid = valid[:, None] & valid[None, :]
    dist = jnp.where(pair_valid & ~jnp.isnan(dist), dist, big)
    # Exactly symmetric (the matmul need not be), so mutual neighbours tie exactly.
    upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    dist = jnp.where(upper, dist, dist.T)
    return jnp.where(jnp.eye(n, dtype=bool), 0.0, dist)


# Column width of one step of the blocked Gram matrix, and client rows per
# block of its upper triangle. Measured on the 2-core CPU, 200 x 1M float32:
# XLA's one [n, d] x [d, n] dot on the centred copy 1.06 s; column blocks of
# 8,000 centred on the fly 0.49 s; the same with 2 row blocks (3 of 4 products)
# 0.40 s, 5 blocks 0.33 s, but 4 or 8 blocks 0.58-0.65 s; NumPy's syrk 0.31 s
# plus 0.9 s to centre. Blocks of ~100 rows are the robust choice.
GRAM_COLUMNS = 8000
GRAM_ROWS = 100


def centred_gram_blocked(x: jax.Array, centre: jax.Array, valid: jax.Array,
                         columns: int = GRAM_COLUMNS, rows: int = GRAM_ROWS) -> jax.Array:
    """``c @ c.T`` for ``c = where(valid, x - centre, 0)``, never materialising ``c``.

    A ``lax.scan`` over column blocks centres one ``[n, columns]`` slice at a
    time (in cache) and adds its Gram matrix; only the upper triangle of
    ``[rows, rows]`` blocks is multiplied (the Gram matrix is symmetric).

    Args:
      x: ``float[n, d]``; rows where ``valid`` is False must be finite (zeroed).
      centre: ``float[d]``.
      valid: ``bool[n]``.
      columns, rows: block sizes (see ``GRAM_COLUMNS``, ``GRAM_ROWS``).

    Returns:
      ``float[n, n]``.
    """
    n, d = x.shape
    r = max(1, round(n / rows))
    bounds = [round(i * n / r) for i in range(r + 1)]
    hi = lax.Precision.HIGHEST

    def gram(c):  # float[n, w] -> float[n, n]
        parts = [c[bounds[i]:bounds[i + 1]] for i in range(r)]
        dot = lambda p, q: lax.dot_general(p, q, (((1,), (1,)), ((), ())), precision=hi)
        up = {(i, j): dot(parts[i], parts[j]) for i in range(r) for j in range(i, r)}
        return jnp.concatenate([jnp.concatenate(
            [up[i, j] if i <= j else up[j, i].T for j in range(r)], axis=1)
            for i in range(r)], axis=0)

    def centred(start, width):
        xs = lax.dynamic_slice_in_dim(x, start, width, axis=1)
        cs = lax.dynamic_slice_in_dim(centre, start, width)
        return jnp.where(valid[:, None], xs - cs[None, :], 0.0)

    w = min(columns, d)
    num_full = d // w
    g, _ = lax.scan(lambda g, i: (g + gram(centred(i * w, w)), None),
                    jnp.zeros((n, n), x.dtype), jnp.arange(num_full))
    if d > num_full * w:
        g = g + gram(centred(num_full * w, d - num_full * w))
    return g


def map_valid_rows(fn: Callable[[jax.Array], jax.Array], x: jax.Array, valid: jax.Array):
    """``fn(x with invalid rows zeroed)``, without the zeroing copy when all rows are valid.

    ``fn`` must give invalid rows no weight (zeroing only keeps ``0 * NaN`` out of
    matmuls). A ``lax.cond`` runs the copy-free branch when every row is valid.
    """
    return lax.cond(
        jnp.all(valid),
        fn,
        lambda u: fn(jnp.where(valid[:, None], u, 0.0)),
        x,
    )


def tie_break_order(scores: jax.Array, valid: jax.Array, key: jax.Array) -> jax.Array:
    """Indices sorted by ascending score; ties broken by a random permutation.

    Invalid rows come after valid rows of equal score (so with +inf scores a
    valid row still wins). ``jnp.argsort`` alone would favour low client indices,
    which is where reference code puts the attackers (byzantine.md section 7.2).

    Args:
      scores: ``float[n]`` (NaN is treated as +inf).
      valid: ``bool[n]``.
      key: PRNG key for the tie-breaking permutation.

    Returns:
      ``int32[n]`` client indices, best first.
    """
    n = scores.shape[0]
    scores = jnp.where(jnp.isnan(scores), jnp.inf, scores)
    rank = jax.random.permutation(key, n)  # random tie-break rank per client
    return jnp.lexsort((rank, ~valid, scores)).astype(jnp.int32)


# --------------------------------------------------------------------------- #
# Column-blocked order statistics.


def blockwise(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    block: int = DEFAULT_BLOCK,
    batch: int = DEFAULT_BATCH,
    columns: tuple = (),
) -> jax.Array:
    """Applies ``fn`` to column tiles of ``x`` and concatenates the results.

    Args:
      fn: maps a tile ``[n, b]`` (and the matching ``[b]`` slices of
        ``columns``) to ``[..., b]`` (the same leading shape for every width
        ``b``); it must act on each column independently.
      x: ``[n, d]``.
      block: tile width; tiles of ``[n, block]`` float32 should fit in L2.
      batch: tiles per ``lax.map`` step (vmapped), to keep both cores busy.
      columns: ``[d]`` arrays sliced along with ``x`` (a centre, a mask).

    Returns:
      ``[..., d]``: ``fn`` applied to every column.
    """
    n, d = x.shape
    if d <= block:
        return fn(x, *columns)
    num_full = d // block
    tail = d - num_full * block
    num_tiles = num_full + (1 if tail else 0)

    def one(i):
        # The last tile is clamped to end at column d (it overlaps the one before),
        # so every tile has the same shape and fn is traced once.
        start = jnp.minimum(i * block, d - block)
        return fn(lax.dynamic_slice_in_dim(x, start, block, axis=1),
                  *(lax.dynamic_slice_in_dim(c, start, block, axis=0) for c in columns))

    out = lax.map(one, jnp.arange(num_tiles), batch_size=batch)  # [tiles, ..., block]
    out = jnp.moveaxis(out, 0, -2)  # [..., tiles, block]
    full = out[..., :num_full, :].reshape(out.shape[:-2] + (num_full * block,))
    if not tail:
        return full
    return jnp.concatenate([full, out[..., num_full, block - tail:]], axis=-1)


# Reductions over the client axis. XLA:CPU reduces axis 0 of a [200, 1M]
# float32 array ~40x slower than the same sum as a matvec (1.07 s against
# 27 ms on the 2-core machine), and far slower still with an elementwise
# expression fused in (``sum(c[:, None] * (x - v), axis=0)``: minutes): each
# output column walks 200 rows 4 MB apart. Tiles of 4,096 columns keep the walk
# in cache: 53-72 ms for the same sums (measured 2026-11-30).
COLUMN_TILING = (4096, 2)


def column_sum(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    columns: tuple = (),
) -> jax.Array:
    """``Σ_i fn(x, *columns)[i, j]``: a sum over the client axis, tile by tile.

    Args:
      fn: elementwise map of a tile ``float[n, b]`` (and the ``[b]`` slices of
        ``columns``) to ``float[n, b]``.
      x: ``float[n, d]``.
      columns: ``[d]`` arrays sliced along with ``x``.

    Returns:
      ``float[d]``.
    """
    return blockwise(lambda t, *c: jnp.sum(fn(t, *c), axis=0), x, *COLUMN_TILING,
                     columns=columns)


def bitonic_sort_rows(tile: jax.Array) -> jax.Array:
    """Sorts every column of ``tile`` ascending along axis 0 (a bitonic network).

    The client axis is padded with +inf to a power of two; every stage is one
    elementwise ``minimum`` / ``maximum`` over pairs of rows, so XLA vectorises
    it across the columns. NaN must not occur (callers replace invalid values
    by +inf first).

    Args:
      tile: ``float[n, b]``.

    Returns:
      ``float[n, b]``, each column sorted.
    """
    n, b = tile.shape
    size = 1 << max(n - 1, 1).bit_length()
    if size > n:
        pad = jnp.full((size - n, b), jnp.inf, tile.dtype)
        x = jnp.concatenate([tile, pad], axis=0)
    else:
        x = tile
    k = 2
    while k <= size:
        # Merge step against the mirrored half: sorted runs of k/2 become bitonic.
        y = x.reshape(size // k, k, b)
        lo, hi = y[:, : k // 2], y[:, k // 2:][:, ::-1]
        x = jnp.concatenate(
            [jnp.minimum(lo, hi), jnp.maximum(lo, hi)[:, ::-1]], axis=1
        ).reshape(size, b)
        j = k // 4
        while j >= 1:  # half cleaners
            y = x.reshape(size // (2 * j), 2, j, b)
            lo, hi = y[:, 0], y[:, 1]
            x = jnp.stack([jnp.minimum(lo, hi), jnp.maximum(lo, hi)], axis=1).reshape(size, b)
            j //= 2
        k *= 2
    return x[:n]


# --------------------------------------------------------------------------- #
# Order-preserving integer keys and bitwise bisection.


def float_to_key(x: jax.Array) -> jax.Array:
    """Order-preserving map float32 -> uint32 (-0.0 sorts just below +0.0)."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def key_to_float(u: jax.Array) -> jax.Array:
    """Inverse of :func:`float_to_key`."""
    bits = jnp.where(u >> 31 == 1, u & jnp.uint32(0x7FFFFFFF), ~u)
    return lax.bitcast_convert_type(bits, jnp.float32)


def kth_smallest_key(keys: jax.Array, k: jax.Array, unroll: Optional[int] = None) -> jax.Array:
    """The ``k``-th smallest (0-indexed) key of every column, by bitwise bisection.

    32 passes over the tile, each one compare and a count per entry; the answer
    is built from the most significant bit down, so it is exact and ``k`` may be
    traced (per column or scalar).

    Args:
      keys: ``uint32[n, b]``.
      k: int scalar or ``int[b]``, ``0 <= k < n``.
      unroll: ``fori_loop`` unroll factor; None: ``BISECT_UNROLL`` (full unroll,
        ~3x faster on XLA:CPU than a rolled loop, whose bodies run slowly there).

    Returns:
      ``uint32[b]``.
    """
    target = jnp.asarray(k, jnp.float32) + 1.0

    def step(i, ans):
        bit = jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32))
        trial = ans | (bit - jnp.uint32(1))  # ans with this bit 0 and all lower bits 1
        count = jnp.sum((keys <= trial[None, :]).astype(jnp.float32), axis=0)
        return jnp.where(count >= target, ans, ans | bit)

    unroll = BISECT_UNROLL if unroll is None else unroll
    return lax.fori_loop(0, 32, step, jnp.zeros(keys.shape[1], jnp.uint32), unroll=unroll)


def next_key(keys: jax.Array, current: jax.Array, k: jax.Array) -> jax.Array:
    """The ``(k+1)``-th smallest key given the ``k``-th (``current``); one pass."""
    count = jnp.sum((keys <= current[None, :]).astype(jnp.float32), axis=0)
    above = jnp.min(jnp.where(keys > current[None, :], keys, jnp.uint32(0xFFFFFFFF)), axis=0)
    return jnp.where(count >= jnp.asarray(k, jnp.float32) + 2.0, current, above)
