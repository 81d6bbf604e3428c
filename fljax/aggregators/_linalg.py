"""Scale-safe row norms, unit rows and cosine geometry shared by several rules.

Malicious rows can be huge (1e38) or zero. ``jnp.linalg.norm`` of a row with
1e20 entries overflows to ``inf`` in float32 and ``x / inf`` then turns into
``0 * inf = nan`` downstream. :func:`row_norms` returns each norm as a
power-of-two scale times a finite factor (the scale is 1 unless the row's sum
of squares over- or underflowed), so directions and clipped rows are exact for
any finite row and only a reported norm may saturate at ``inf``.

The helpers also keep the work in a few passes over ``[n, d]``: sums over the
client axis run on column tiles (``_ops.column_sum``) and no masked, centred or
weighted ``[n, d]`` copy is materialised.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _ops

_HIGHEST = jax.lax.Precision.HIGHEST


def unit_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unit directions and L2 norms of the rows of a finite ``float[n, d]``.

    Returns:
      ``(unit, norm)``: ``unit`` is ``float[n, d]`` with unit-norm rows (zero
      rows stay zero); ``norm`` is ``float[n]`` (``inf`` only if the true norm
      exceeds the dtype's range).
    """
    scale, base = row_norms(x, jnp.ones(x.shape[:1], bool))  # float[n] each
    # Divided by the power-of-two scale first (exact; 1 for most rows), then by
    # the remaining factor of the norm: no intermediate overflows or flushes.
    unit = (x / scale[:, None]) * (1.0 / jnp.where(base > 0, base, 1.0))[:, None]  # float[n, d]
    return unit, scale * base


# Below this a float32 sum of squares may have lost its row to underflow
# (entries under ~1e-19 square to 0); above ~3.4e38 it overflowed.
_TINY_SUM_SQ = 1e-30


def row_norms(x: jax.Array, valid: jax.Array,
              centre: Optional[jax.Array] = None,
              axis: Optional[str] = None) -> tuple[jax.Array, jax.Array]:
    """Overflow-safe L2 norms of the valid rows of ``x - centre``, as two factors.

    ``‖x_i - c‖ = scale_i · base_i`` with both factors finite for every finite
    row and ``scale_i`` a power of two of at most ``2**126``. One fused pass
    (``Σ_j (x_ij - c_j)²``) gives ``scale = 1`` and ``base = √Σ``; only when
    some valid row overflowed (entries above ~1e19) or came out below 1e-30
    does a second pass, run under ``lax.cond``, divide those rows by a power
    of two near their largest entry first. No ``[n, d]`` array is
    materialised.

    Args:
      x: ``float[n, d]``; invalid rows may hold anything (NaN, inf).
      valid: ``bool[n]``; invalid rows get ``scale = 1, base = 0``.
      centre: optional ``float[d]`` subtracted from every row.
      axis: a mesh axis over which the columns are split (``x`` and
        ``centre`` are one block): the sums and maxima are reduced over it.

    Returns:
      ``(scale, base)``, ``float[n]`` each; the norm is ``scale * base``
      (``inf`` only if it exceeds the float32 range).
    """
    def diff():  # float[n, d], fused into the row reductions
        return x if centre is None else x - centre[None, :]

    # Rows are reduced independently, so invalid rows are masked in the [n]
    # results, not in the [n, d] input (a mask inside the reduction made it
    # ~8x slower on XLA:CPU).
    psum = (lambda v: v) if axis is None else (lambda v: lax.psum(v, axis))  # noqa: E731
    pmax = (lambda v: v) if axis is None else (lambda v: lax.pmax(v, axis))  # noqa: E731
    sum_sq = jnp.where(valid, psum(jnp.sum(jnp.square(diff()), axis=1)), 0.0)  # float[n]
    bad = valid & (~jnp.isfinite(sum_sq) | (sum_sq < _TINY_SUM_SQ))
    ones = jnp.ones_like(sum_sq)

    def rescaled():
        y = diff()
        top = jnp.where(valid, pmax(jnp.max(jnp.abs(y), axis=1)), 0.0)  # float[n]
        # A power of two near the largest entry, at most 2**126 so that its
        # reciprocal is a normal float (XLA:CPU flushes subnormals to zero):
        # the division is exact and leaves entries of at most 4.
        _, exponent = jnp.frexp(jnp.where(top > 0, top, 1.0))
        scale = jnp.ldexp(jnp.ones_like(top), jnp.minimum(exponent, 126))
        scale = jnp.where(bad & (top > 0), scale, 1.0)
        base = jnp.sqrt(psum(jnp.sum(jnp.square(y / scale[:, None]), axis=1)))
        return scale, jnp.where(bad, base, jnp.sqrt(sum_sq))  # sum_sq is 0 on invalid rows

    return jax.lax.cond(jnp.any(bad), rescaled, lambda: (ones, jnp.sqrt(sum_sq)))


def clip_weights(scale: jax.Array, base: jax.Array, bound: jax.Array) -> jax.Array:
    """Weights ``w_i`` with ``(x_i / scale_i) · w_i = x_i · min(1, bound / ‖x_i‖)``.

    ``scale, base`` come from :func:`row_norms`; the weights apply to the
    rows divided by ``scale`` (as :func:`weighted_row_sum` does with its
    ``scale`` argument), which keeps rows whose norm overflows float32 exact:
    ``min(1, bound / ‖x‖)`` itself would be subnormal, and flushed to zero.
    A zero row gets weight ``scale``; a bound of 0 gives 0 to every nonzero row.
    """
    safe = jnp.where(base > 0, base, 1.0)
    return jnp.where(base > 0, jnp.minimum(scale, bound / safe), scale)


def weighted_row_sum(x: jax.Array, weights: jax.Array, valid: jax.Array,
                     centre: Optional[jax.Array] = None,
                     scale: Optional[jax.Array] = None) -> jax.Array:
    """``Σ_{i valid} w_i (x_i - centre) / scale_i``: ``float[d]``; invalid rows never read as numbers.

    Computed on column tiles (``_ops.column_sum``), so the weighted, masked,
    centred rows are never materialised and the client-axis sum stays fast.
    ``scale`` (from :func:`row_norms`, default 1) divides before weighting.
    Without a centre, when every row is valid and unscaled, it is one matvec
    instead (27 ms against ~60 ms at 200 x 1M); the tiles are kept otherwise,
    where ``0 * NaN`` or a subnormal weight would spoil a matvec.
    """
    w = jnp.where(valid, weights, 0.0).astype(x.dtype)
    inv = None if scale is None else (1.0 / scale).astype(x.dtype)  # exact: powers of two

    def term(tile, *c):  # float[n, b] (, float[b]) -> float[n, b]
        y = tile if not c else tile - c[0][None, :]
        if inv is not None:
            y = y * inv[:, None]
        return jnp.where(valid[:, None], y * w[:, None], 0.0)

    columns = () if centre is None else (centre,)
    tiled = lambda: _ops.column_sum(term, x, columns)  # noqa: E731
    if centre is not None:  # a matvec minus Σw·centre would cancel digits
        return tiled()
    plain = jnp.all(valid) if scale is None else jnp.all(valid) & jnp.all(scale == 1)
    return jax.lax.cond(plain, lambda: jnp.dot(w, x, precision=_HIGHEST), tiled)


def cosine_similarity(unit: jax.Array) -> jax.Array:
    """``float[n, n]`` cosine similarities of unit rows (0 against a zero row)."""
    return jnp.matmul(unit, unit.T, precision=_HIGHEST)


def cosine_distance(unit: jax.Array) -> jax.Array:
    """``float[n, n]`` cosine distances ``1 - cos`` of unit rows, computed precisely.

    ``1 - cos(a, b) = ||u_a - u_b||^2 / 2`` for unit rows. The squared distances
    come from the Gram matrix of the *centred* unit rows, which avoids the
    cancellation of ``1 - u_a . u_b`` when all rows share a large common
    component (local *models* that differ little from the global model).
    Clamped to ``[0, 2]`` with an exact zero diagonal; a zero row is at
    distance 1 from every other row (cosine 0, as in scikit-learn).
    """
    n = unit.shape[0]
    mean = jnp.matmul(jnp.full((n,), 1.0 / n, unit.dtype), unit, precision=_HIGHEST)  # float[d]
    c = unit - mean[None, :]  # float[n, d]
    gram = jnp.matmul(c, c.T, precision=_HIGHEST)  # float[n, n]
    sq = jnp.diag(gram)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    dist = jnp.clip(0.5 * d2, 0.0, 2.0)
    nonzero = jnp.any(unit != 0, axis=1)  # a zero row has cos 0, distance 1
    dist = jnp.where(nonzero[:, None] & nonzero[None, :], dist, 1.0)
    return jnp.where(jnp.eye(n, dtype=bool), 0.0, dist)
