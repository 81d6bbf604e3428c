"""Helpers for stacked parameter pytrees (a leading client axis on every leaf)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fljax.types import PyTree


def ravel(tree: PyTree) -> tuple[jax.Array, Callable[[jax.Array], PyTree]]:
    """Flattens one (unstacked) pytree to ``float[d]`` and returns the inverse."""
    return ravel_pytree(tree)


def ravel_stacked(stacked: PyTree) -> jax.Array:
    """Flattens a stacked pytree (leaves ``[n, ...]``) to ``float[n, d]``.

    The row layout is the same as :func:`ravel` of one client's pytree.
    """
    return jax.vmap(lambda t: ravel_pytree(t)[0])(stacked)


def unravel_stacked(flat: jax.Array, like: PyTree) -> PyTree:
    """Inverse of :func:`ravel_stacked`; ``like`` is one unstacked pytree."""
    _, unravel = ravel_pytree(like)
    return jax.vmap(unravel)(flat)


def stack(trees: list[PyTree]) -> PyTree:
    """Stacks a list of identically structured pytrees along a new axis 0."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(stacked: PyTree) -> list[PyTree]:
    """Splits a stacked pytree into a list of pytrees."""
    n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(n)]


def broadcast(tree: PyTree, n: int) -> PyTree:
    """Repeats a pytree ``n`` times along a new leading axis."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


def per_client_norm(stacked: PyTree) -> jax.Array:
    """Global L2 norm of each client's slice of a stacked pytree: ``float[n]``."""
    sq = [jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1)
          for x in jax.tree_util.tree_leaves(stacked)]
    return jnp.sqrt(sum(sq))


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(jnp.add, a, b)


def num_params(tree: PyTree) -> int:
    """Number of scalar parameters in an (unstacked) pytree."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
