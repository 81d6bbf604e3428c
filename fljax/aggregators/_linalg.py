"""Scale-safe row norms, unit rows and cosine geometry shared by several rules.

Malicious rows can be huge (1e38) or zero. ``jnp.linalg.norm`` of a row with
1e20 entries overflows to ``inf`` in float32 and ``x / inf`` then turns into
``0 * inf = nan`` downstream. These helpers divide each row by its largest
absolute entry first, so the direction is exact for any finite row and only
the reported norm may saturate at ``inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def unit_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unit directions and L2 norms of the rows of a finite ``float[n, d]``.

    Returns:
      ``(unit, norm)``: ``unit`` is ``float[n, d]`` with unit-norm rows (zero
      rows stay zero); ``norm`` is ``float[n]`` (``inf`` only if the true norm
      exceeds the dtype's range).
    """
    scale = jnp.max(jnp.abs(x), axis=1, keepdims=True)  # float[n, 1]
    y = x / jnp.where(scale > 0, scale, 1.0)  # entries in [-1, 1]
    ny = jnp.linalg.norm(y, axis=1, keepdims=True)  # float[n, 1], in [1, sqrt(d)] or 0
    unit = y / jnp.where(ny > 0, ny, 1.0)
    return unit, (scale * ny)[:, 0]


def clip_rows(unit: jax.Array, norm: jax.Array, bound: jax.Array) -> jax.Array:
    """``unit * min(norm, bound)`` row-wise: clipping without ``0 * inf``."""
    return unit * jnp.minimum(norm, bound)[:, None]


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
    c = unit - jnp.mean(unit, axis=0, keepdims=True)  # float[n, d]
    gram = jnp.matmul(c, c.T, precision=_HIGHEST)  # float[n, n]
    sq = jnp.diag(gram)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    dist = jnp.clip(0.5 * d2, 0.0, 2.0)
    nonzero = jnp.any(unit != 0, axis=1)  # a zero row has cos 0, distance 1
    dist = jnp.where(nonzero[:, None] & nonzero[None, :], dist, 1.0)
    n = unit.shape[0]
    return jnp.where(jnp.eye(n, dtype=bool), 0.0, dist)
