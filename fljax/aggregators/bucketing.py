"""Bucketing, a pre-aggregator (Karimireddy, He, Jaggi, ICLR 2022).

References:
  Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
  via Bucketing", ICLR 2022.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators import _ops
from fljax.aggregators.base import AggregationContext, PreAggregator, finite_rows, require


def bucket_matrix(n: int, bucket_size: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The averaging matrix of one random bucketing of ``n`` rows.

    Rows are shuffled with ``key`` (``jax.random.permutation``); bucket ``b``
    holds shuffled positions ``[b s, (b + 1) s)``, the last one the ``n mod s``
    left over (ByzFL's layout).

    Returns:
      ``(avg float32[m, n], bucket int32[n])`` with ``m = ceil(n / s)``;
      ``avg[b, i] = 1 / |bucket b|`` if client ``i`` is in bucket ``b``.
    """
    m = -(-n // bucket_size)
    perm = jax.random.permutation(key, n)  # perm[p] = client at shuffled position p
    bucket = jnp.zeros((n,), jnp.int32).at[perm].set(jnp.arange(n, dtype=jnp.int32) // bucket_size)
    sizes = jnp.asarray([min(bucket_size, n - b * bucket_size) for b in range(m)], jnp.float32)
    member = bucket[None, :] == jnp.arange(m)[:, None]  # bool[m, n]
    return jnp.where(member, 1.0 / sizes[:, None], 0.0), bucket


def bucketing(bucket_size: int) -> PreAggregator:
    """Shuffles the rows with the key and averages them in buckets of ``s``.

    ::

        π      = random permutation of the n rows (from key)
        y_b    = mean of x_{π(b s)}, ..., x_{π(b s + s - 1)}   b = 0 .. ceil(n/s) - 1
                 (the last bucket holds the n mod s rows left over, if any)

    The output has ``m = ceil(n / s)`` rows: the rule after it sees ``m``
    clients, so its ``num_byzantine`` should count buckets (at most ``f``
    buckets can hold a Byzantine row). Computed as one ``[m, n] x [n, d]``
    product (each row scaled by ``1/s`` before it is added, so ``s`` rows near
    float32's largest value do not overflow).

    A bucket with a non-finite row is non-finite (NaN) and the rule after
    bucketing screens it. Bucket rows mix clients, so the returned context
    keeps only ``params`` (``weights`` and ``client_ids`` are dropped: the rule
    after bucketing is unweighted, and per-client stateful rules cannot follow
    it).

    Args:
      bucket_size: ``s >= 1`` (static; ``s = 1`` only shuffles).

    Returns:
      A :class:`PreAggregator` mapping ``float[n, d]`` to ``float[ceil(n/s), d]``
      with ``info = {'bucket': int32[n]`` (each client's bucket),
      ``'num_nonfinite': int32[]}``.

    References:
      Karimireddy et al., ICLR 2022, Algorithm 1.
    """
    require(isinstance(bucket_size, int) and bucket_size >= 1, "bucketing",
            f"bucket_size={bucket_size!r} must be an int >= 1")

    def apply(updates, key, context=None):
        n = updates.shape[0]
        valid = finite_rows(updates)  # bool[n]
        avg, bucket = bucket_matrix(n, bucket_size, key)
        avg = avg.astype(updates.dtype)  # float[m, n]
        out = _ops.map_valid_rows(
            lambda x: jnp.matmul(avg, x, precision=jax.lax.Precision.HIGHEST), updates, valid)
        tainted = jnp.any((avg > 0) & ~valid[None, :], axis=1)  # bool[m]
        out = jnp.where(tainted[:, None], jnp.nan, out).astype(updates.dtype)
        ctx = None if context is None else AggregationContext(params=context.params)
        info = {"bucket": bucket, "num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, ctx, info

    return PreAggregator("bucketing", apply)
