"""Top eigenpairs of small symmetric PSD matrices, for the spectral rules (SMEA, CAF, DnC).

These rules only need the largest eigenvalue (and its vector) of ``[k, k]``
Gram-type matrices (``k`` = number of clients), often of many of them at once.
XLA:CPU's ``eigh`` / ``eigvalsh`` run slowly on them (~20-65 ms for one 199 x
199 float32 matrix, measured 2026-12 on the 2-core CPU: NumPy's LAPACK is ~10x
faster), so :func:`top_eigen` uses repeated squaring, which is a handful of
batched matrix products: ``M <- M² / tr(M²)`` sixteen times is the power
method run for 2^16 steps, after which a column of the result is the top
eigenvector to float32 precision unless ``λ₂ / λ₁ > 1 - 1e-4``, and even then
the Rayleigh quotient is within ``(λ₁ - λ₂)`` of ``λ₁``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
SQUARINGS = 16


def top_eigen(m: jax.Array, squarings: int = SQUARINGS) -> tuple[jax.Array, jax.Array]:
    """Largest eigenvalue and a unit eigenvector of symmetric PSD matrices.

    Args:
      m: ``float[..., k, k]`` symmetric positive semi-definite, finite.
      squarings: how many times the matrix is squared (static).

    Returns:
      ``(lam float[...], v float[..., k])``; ``lam = 0`` and ``v = e_0`` for a
      zero matrix.
    """
    m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
    k = m.shape[-1]

    def normalise(a):
        tr = jnp.trace(a, axis1=-2, axis2=-1)[..., None, None]
        return jnp.where(tr > 0, a / jnp.where(tr > 0, tr, 1.0), 0.0)

    p = normalise(m)
    for _ in range(squarings):
        p = normalise(jnp.matmul(p, p, precision=_HIGHEST))
    # p ≈ u uᵀ: its column with the largest diagonal entry is ∝ u, well scaled.
    col = jnp.argmax(jnp.diagonal(p, axis1=-2, axis2=-1), axis=-1)  # int[...]
    v = jnp.take_along_axis(p, col[..., None, None], axis=-1)[..., 0]  # float[..., k]
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    v = jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), jax.nn.one_hot(0, k, dtype=m.dtype))
    mv = jnp.matmul(m, v[..., None], precision=_HIGHEST)[..., 0]
    lam = jnp.maximum(jnp.sum(v * mv, axis=-1), 0.0)
    return lam, v
