"""Nearest-neighbour mixing (NNM), a pre-aggregator (Allouah et al., AISTATS 2023).

References:
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.aggregators import _ops
from fljax.aggregators.base import PreAggregator, finite_rows, require


def nearest_rows(dists: jax.Array, valid: jax.Array, k: int, key: jax.Array) -> jax.Array:
    """``bool[n, n]``: row ``i`` marks its ``k`` nearest rows (itself included).

    Distances tie (duplicate rows) are broken by one random rank per client
    drawn from ``key``, never by client index. Invalid rows are farthest; a
    row marks only valid rows (fewer than ``k`` when fewer are valid).

    Args:
      dists: ``float[n, n]`` squared distances, zero diagonal, +inf for invalid pairs.
      valid: ``bool[n]``.
      k: how many rows each neighbourhood holds (static).
      key: PRNG key of the tie-breaking ranks.
    """
    n = dists.shape[0]
    rank = jax.random.permutation(key, n)  # int[n]
    # Itself first (distance 0 could tie with a duplicate), then by distance, then rank.
    not_self = ~jnp.eye(n, dtype=bool)
    order = jnp.lexsort((jnp.broadcast_to(rank, (n, n)), dists, not_self), axis=-1)  # int[n, n]
    chosen = jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], order[:, :k]].set(True)
    return chosen & valid[None, :]


def nnm(num_byzantine: int) -> PreAggregator:
    """Replaces every row by the mean of its ``n - f`` nearest rows (itself included).

    ::

        N_i   = the n - f rows nearest to x_i in L2 (x_i among them)
        y_i   = mean_{j in N_i} x_j                     for i = 1 .. n

    The squared distances come from one centred Gram matrix
    (:func:`fljax.aggregators._ops.pairwise_sq_dists`) and the mixing is one
    ``[n, n] x [n, d]`` matrix product. ``compose(nnm(f),
    aggregator=mean(weighted=False))`` equals ByzFL's ``Average()(NNM(f)(x))``
    (tested), and NNM goes in front of any rule.

    Non-finite rows are never anyone's neighbour and come out unchanged (still
    non-finite), so the rule after NNM screens them; a finite row whose ``n - f``
    nearest include non-finite ones (more than ``f`` of them) averages its
    finite neighbours only. Ties in distance are broken by a random rank per
    client drawn from ``key``.

    Args:
      num_byzantine: ``f`` (static); needs ``f < n`` (ByzFL's bound).

    Returns:
      A :class:`PreAggregator` mapping ``float[n, d]`` to ``float[n, d]``, with
      ``info = {'num_nonfinite': int32[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y, _, _ = nnm(1).apply(jnp.array([[1., 2.], [4., 5.], [7., 8.]]),
      ...                        jax.random.PRNGKey(0))
      >>> y.tolist()
      [[2.5, 3.5], [2.5, 3.5], [5.5, 6.5]]

    References:
      Allouah et al., "Fixing by Mixing", AISTATS 2023, Algorithm 1.
    """
    require(isinstance(num_byzantine, int) and num_byzantine >= 0, "nnm",
            f"num_byzantine={num_byzantine!r} must be an int >= 0")

    def apply(updates, key, context=None):
        n = updates.shape[0]
        require(num_byzantine < n, "nnm",
                f"needs num_byzantine < n, got n={n}, num_byzantine={num_byzantine}")
        valid = finite_rows(updates)  # bool[n]
        dists = _ops.pairwise_sq_dists(updates, valid)  # float[n, n]
        chosen = nearest_rows(dists, valid, n - num_byzantine, key)  # bool[n, n]
        count = jnp.maximum(jnp.sum(chosen, axis=1, keepdims=True), 1)
        mix = (chosen / count).astype(updates.dtype)  # float[n, n], rows sum to 1
        mixed = _ops.map_valid_rows(
            lambda x: jnp.matmul(mix, x, precision=jax.lax.Precision.HIGHEST), updates, valid)
        out = jnp.where(valid[:, None], mixed, updates)  # non-finite rows pass through
        info = {"num_nonfinite": n - jnp.sum(valid.astype(jnp.int32))}
        return out, context, info

    return PreAggregator("nnm", apply)
