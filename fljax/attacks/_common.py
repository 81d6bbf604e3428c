"""Shared pieces of the model-poisoning attacks (Fang, ALIE, IPM, Min-Max, ...).

* :func:`known_rows`: which rows the attacker learns from. ``knowledge="full"``:
  every finite row (the malicious rows hold their clients' honest updates on
  input); ``"partial"``: the finite malicious rows only. Rows with a NaN or an
  infinity (sent by other attackers, or a diverged client) are never used:
  they would turn every crafted row NaN.
* Statistics over those rows without masked ``[n, d]`` copies and without
  ``jnp.sum(x, axis=0)``, which XLA:CPU runs ~40x slower than a matvec on
  ``[200, 1M]`` (``_ops.column_sum``): :func:`mean_of`, :func:`var_of`,
  :func:`row_dots`.
* :func:`uniform`: per-entry uniform noise for ``[n, d]``, as a fused integer
  hash (see its docstring for why not ``jax.random.uniform``).
* :func:`replace_rows`: the one place where crafted rows are written; benign
  rows come back bit-identical, and an attack that could not craft (nothing to
  learn from, or non-finite statistics) sends the honest updates.

Everything takes the traced ``malicious`` mask and counts with it, so changing
which rows, or how many, are malicious never recompiles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from fljax.aggregators import _linalg, _ops
from fljax.aggregators.base import finite_rows

_HIGHEST = lax.Precision.HIGHEST


def known_rows(updates: jax.Array, malicious: jax.Array, knowledge: str):
    """``(valid, known)``, ``bool[n]`` each: finite rows, and the rows the attacker knows.

    Args:
      updates: ``float[n, d]``.
      malicious: ``bool[n]`` (traced).
      knowledge: ``'full'`` (every finite row) or ``'partial'`` (finite
        malicious rows).
    """
    valid = finite_rows(updates)
    known = valid if knowledge == "full" else valid & malicious
    return valid, known


def count(mask: jax.Array) -> jax.Array:
    """``int32[]``: the number of True entries."""
    return jnp.sum(mask.astype(jnp.int32))


def can_learn(malicious: jax.Array, known: jax.Array, min_known: int) -> jax.Array:
    """``bool[]``: there is a malicious row to craft and at least ``min_known``
    known rows to learn from (an attack's precondition; False means fallback)."""
    return (count(malicious) >= 1) & (count(known) >= min_known)


def mean_of(updates: jax.Array, valid: jax.Array, known: jax.Array) -> jax.Array:
    """``float[d]``: the mean of the known rows (zeros if there is none).

    One matvec when every row is finite (weights 0 on the rows not known), column
    tiles otherwise (``_linalg.weighted_row_sum``).
    """
    m = jnp.maximum(count(known), 1).astype(updates.dtype)
    return _linalg.weighted_row_sum(updates, known.astype(updates.dtype) / m, valid)


def var_of(updates: jax.Array, known: jax.Array, mean: jax.Array, ddof: int) -> jax.Array:
    """``float[d]``: the per-coordinate variance of the known rows around ``mean``.

    Two-pass (centred) on column tiles; divides by ``max(m - ddof, 1)``.
    """
    m = count(known)

    def term(tile, mu):  # float[n, b], float[b] -> float[n, b]
        return jnp.where(known[:, None], jnp.square(tile - mu[None, :]), 0.0)

    total = _ops.column_sum(term, updates, (mean,))
    return total / jnp.maximum(m - ddof, 1).astype(updates.dtype)


def row_dots(updates: jax.Array, vectors: jax.Array) -> jax.Array:
    """``float[n, k]``: ``updates @ vectors.T`` for ``vectors: float[k, d]`` (k small).

    Non-finite rows give non-finite entries; callers mask them.
    """
    return lax.dot_general(updates, vectors, (((1,), (1,)), ((), ())), precision=_HIGHEST)


def l2_norm(v: jax.Array) -> jax.Array:
    """Overflow-safe ``‖v‖`` of a finite ``float[d]`` (``inf`` only past float range)."""
    scale, base = _linalg.row_norms(v[None, :], jnp.ones((1,), bool))
    return (scale * base)[0]


# --------------------------------------------------------------------------- #
# Per-entry noise.

_GOLDEN = 0x9E3779B9


def _mix32(h: jax.Array) -> jax.Array:
    """A 32-bit integer finaliser with full avalanche (Wellons' "lowbias32")."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def uniform(key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    """``float[n, d]`` i.i.d.-looking uniforms in ``[0, 1)`` (24 random bits each).

    A counter-based hash of ``(row, column)`` under two 32-bit seeds drawn from
    ``key`` with ``jax.random.bits``. Written as elementwise integer ops, so XLA
    fuses it into the ``where`` that writes the crafted rows: ~0.03 s on top of
    that write at 200 x 1M on the 2-core CPU, against 2.8 s for
    ``jax.random.uniform`` (threefry) of the same shape, more than the attack
    budget (one Krum aggregation, ~0.45 s). The same key gives the same noise;
    statistical quality is that of a good integer hash (enough for sampling
    attack values, not for cryptography).
    """
    seeds = jax.random.bits(key, (2,), jnp.uint32)
    row = lax.broadcasted_iota(jnp.uint32, shape, 0)
    col = lax.broadcasted_iota(jnp.uint32, shape, 1)
    h = _mix32(_mix32(col ^ seeds[0]) ^ (row * jnp.uint32(_GOLDEN) + seeds[1]))
    return (h >> 8).astype(dtype) * jnp.asarray(2.0 ** -24, dtype)


# --------------------------------------------------------------------------- #
# Writing the crafted rows.


def replace_rows(updates: jax.Array, malicious: jax.Array, crafted: jax.Array,
                 ok: jax.Array) -> jax.Array:
    """The updates with the malicious rows replaced by ``crafted`` where ``ok``.

    Args:
      updates: ``float[n, d]``.
      malicious: ``bool[n]``.
      crafted: ``float[d]`` (every malicious row the same) or ``float[n, d]``.
      ok: ``bool[]``; False sends the honest updates (the attack's fallback).

    Returns:
      ``float[n, d]``; rows where ``malicious`` is False are bit-identical.
    """
    if crafted.ndim == 1:
        crafted = crafted[None, :]
    return jnp.where(malicious[:, None] & ok, crafted.astype(updates.dtype), updates)


def all_finite(v: jax.Array) -> jax.Array:
    """``bool[]``: every entry of ``v`` is finite (one dot product, see ``finite_rows``)."""
    return finite_rows(v.reshape(1, -1))[0]
