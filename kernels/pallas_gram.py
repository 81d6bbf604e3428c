"""Krum's blocked, centred Gram matrix as a Pallas kernel (GPUs, through Triton).

``centred_gram(x, centre, valid)`` returns ``c @ c.T`` for
``c = where(valid, x - centre, 0)``, without materialising ``c``: the
computation behind the pairwise distances of Krum, Multi-Krum and Bulyan
(``fljax.aggregators._ops.pairwise_sq_dists``, whose jnp path is
``_ops.centred_gram_blocked``; the distances are ``|c_i|^2 + |c_j|^2 - 2 c_i.c_j``).

Algorithm: one program per ``[bi, bi]`` block of the upper triangle (blocks
below the diagonal exit at once; the result is mirrored); each walks the
columns in chunks of ``bk``, loads its two row blocks, subtracts the centre and
zeroes invalid rows in registers, and accumulates one ``dot`` of the chunk in
float32 at full precision (IEEE, no TF32: the centring keeps distances
accurate, TF32's 10-bit mantissa would not).

Where it runs: compiled with Triton on an NVIDIA GPU, interpreted on the CPU
for the tests (see ``kernels/pallas_order_stats.py`` for why Triton). Not the
default anywhere and not yet injectable into the Krum rules: nothing is
measured on a GPU yet (none was lent), and the rules only take kernels
measured to win on their backend. The block sizes are first guesses.
:func:`centred_gram_reference` is the plain jnp definition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton


def _kernel(x_ref, centre_ref, valid_ref, out_ref, *, n, d, bi, bk):
    i, j = pl.program_id(0), pl.program_id(1)

    @pl.when(i <= j)
    def _():
        ri = i * bi + lax.broadcasted_iota(jnp.int32, (bi,), 0)
        rj = j * bi + lax.broadcasted_iota(jnp.int32, (bi,), 0)
        ok_i = (pltriton.load(valid_ref.at[pl.ds(i * bi, bi)], mask=ri < n, other=0) != 0) & (ri < n)
        ok_j = (pltriton.load(valid_ref.at[pl.ds(j * bi, bi)], mask=rj < n, other=0) != 0) & (rj < n)

        def chunk(k, acc):
            cols = k * bk + lax.broadcasted_iota(jnp.int32, (bk,), 0)
            col_ok = cols < d
            centre = pltriton.load(centre_ref.at[pl.ds(k * bk, bk)], mask=col_ok, other=0.0)

            def rows(r, ok, start):  # float32[bi, bk] centred, zero where invalid
                x = pltriton.load(x_ref.at[pl.ds(start, bi), pl.ds(k * bk, bk)],
                                  mask=(r < n)[:, None] & col_ok[None, :], other=0.0)
                return jnp.where(ok[:, None] & col_ok[None, :], x - centre[None, :], 0.0)

            a, b = rows(ri, ok_i, i * bi), rows(rj, ok_j, j * bi)
            return acc + lax.dot_general(a, b, (((1,), (1,)), ((), ())),
                                         precision=lax.Precision.HIGHEST,
                                         preferred_element_type=jnp.float32)

        acc = lax.fori_loop(0, pl.cdiv(d, bk), chunk, jnp.zeros((bi, bi), jnp.float32))
        pltriton.store(out_ref.at[pl.ds(i * bi, bi), pl.ds(j * bi, bi)], acc,
                       mask=(ri < n)[:, None] & (rj < n)[None, :])


def centred_gram(x: jax.Array, centre: jax.Array, valid: jax.Array, *, bi: int = 32,
                 bk: int = 64, interpret: bool | None = None) -> jax.Array:
    """``c @ c.T`` for ``c = where(valid[:, None], x - centre, 0)``.

    Args:
      x: ``float32[n, d]``; invalid rows may hold anything (never multiplied).
      centre: ``float32[d]``.
      valid: ``bool[n]``.
      bi, bk: rows per block and columns per chunk, powers of two >= 16.
      interpret: None = compiled on a GPU, interpreted on the CPU.

    Returns:
      ``float32[n, n]``, exactly symmetric.
    """
    if x.ndim != 2 or x.dtype != jnp.float32:
        raise TypeError(f"centred_gram: x must be float32[n, d], got {x.dtype}{list(x.shape)}")
    if bi < 16 or bk < 16 or bi & (bi - 1) or bk & (bk - 1):
        raise ValueError(f"centred_gram: bi and bk must be powers of two >= 16, got {bi}, {bk}")
    n, d = x.shape
    if interpret is None:
        platform = jax.default_backend()
        if platform not in ("cpu", "gpu", "cuda"):
            raise NotImplementedError(f"centred_gram: written for NVIDIA GPUs (Triton), not {platform}")
        interpret = platform == "cpu"
    nb = pl.cdiv(n, bi)
    gram = pl.pallas_call(
        functools.partial(_kernel, n=n, d=d, bi=bi, bk=bk),
        out_shape=jax.ShapeDtypeStruct((n, n), jnp.float32), grid=(nb, nb),
        compiler_params=None if interpret else pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret, name="fljax_centred_gram",
    )(x, centre.astype(jnp.float32), valid.astype(jnp.int32))
    upper = jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]
    return jnp.where(upper, gram, gram.T)  # blocks below the diagonal are never written


def centred_gram_reference(x, centre, valid):
    """The definition in plain jnp (materialises ``c``; for tests)."""
    c = jnp.where(valid[:, None], x - centre[None, :], 0.0)
    return jnp.dot(c, c.T, precision=lax.Precision.HIGHEST)
