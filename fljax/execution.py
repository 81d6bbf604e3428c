"""How the clients of a round run: execution backends for a per-client function.

A backend takes ``train_one(cid, ckey) -> (delta, loss, weight)``, written for
ONE client (``delta`` a pytree like the parameters, or a flat ``float[d]``
after client transforms), and runs it for the round's K clients, returning
the update matrix ``float[K, d]`` with the per-client losses and weights.
Both run inside the one jitted round:

* ``vmap``: all K clients in one batched computation (the accelerator
  default).
* ``map``: ``chunk`` clients at a time (vmapped within a chunk; ``chunk=1``
  is one client at a time) in a ``lax.scan`` whose carry is the update matrix.
  The matrix is an explicit argument that the caller donates every round, so
  no ``[K, d]`` buffer is allocated or zeroed per round (the CPU default).

* ``stream``: ``chunk`` clients at a time in a ``lax.scan`` whose carry is a
  rule's accumulator (:class:`fljax.aggregators.base.Stream`): each chunk's
  rows are consumed as they are trained and the ``[K, d]`` matrix never
  exists.

Measured on 2 CPU cores with 100 clients of the FedJAX dense model (64
examples, batch 32, client-updates/s, noisy): ``map`` one at a time
920-1,200, chunks of 5 880-1,160, ``vmap`` of all ~420 (XLA:CPU runs batched
small matmuls badly). Elsewhere ``vmap`` wins.

Devices. With the client axis split over ``D`` devices (a
``jax.sharding.Mesh`` axis named :data:`CLIENTS`; the round runs inside
``shard_map``), the K clients are padded to ``K_pad`` (a multiple of
``D * chunk``; padding rows are masked everywhere) and dealt out so that
chunk ``j`` of device ``i`` holds the round's clients ``j*D*c + i*c ...
j*D*c + (i+1)*c - 1`` (:func:`local_rows`). A dense round lands every chunk's
rows in column blocks with one ``all_to_all`` (:func:`run_map_columns`), so
each device holds ``float[K_pad, d_pad / D]`` in the round's row order and
no device ever holds the whole matrix; a streamed round ``psum``s the
devices' accumulators once.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

STRATEGIES = ("auto", "vmap", "map")
CLIENTS = "clients"  # the mesh axis of the client axis (and the columns in a dense round)
CELLS = "cells"  # the mesh axis of a sweep's cell axis


def default_strategy(backend: str | None = None) -> str:
    """The strategy ``strategy='auto'`` starts from: ``map`` on CPU (one client
    at a time, unless the memory plan picks a chunk), ``vmap`` of all clients
    elsewhere."""
    backend = backend or jax.default_backend()
    return "map" if backend == "cpu" else "vmap"


def leaf_offsets(template) -> list[int]:
    """Start of every parameter tensor in a flat update (``ravel_pytree`` order)."""
    sizes = [int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(template)]
    return [int(o) for o in np.cumsum([0] + sizes)[:-1]]


def write_rows(buf: jax.Array, start, delta, offsets: list[int]) -> jax.Array:
    """Writes c stacked updates (a pytree of ``[c, ...]`` leaves, or
    ``float[c, d]``) into rows ``start:start + c`` of ``buf: float[K, d]``.

    One in-place row-segment write per parameter tensor: fusing the ravel (a
    concatenation) into the write, or building ``[K, d]`` from stacked
    outputs, costs XLA:CPU more than the dense model's training itself.
    """
    if not isinstance(delta, (dict, list, tuple)):
        return jax.lax.dynamic_update_slice(buf, delta.astype(buf.dtype), (start, 0))
    for leaf, off in zip(jax.tree_util.tree_leaves(delta), offsets):
        buf = jax.lax.dynamic_update_slice(
            buf, leaf.reshape(leaf.shape[0], -1).astype(buf.dtype), (start, off))
    return buf


def _block(train_one, ids, ckeys):
    """Trains the clients ``ids`` (int[c]) together: vmapped, or directly when c = 1."""
    if ids.shape[0] == 1:
        out = train_one(ids[0], ckeys[0])
        return jax.tree_util.tree_map(lambda z: z[None], out)
    return jax.vmap(train_one)(ids, ckeys)


def run_vmap(train_one: Callable, ids: jax.Array, ckeys: jax.Array):
    """All K clients in one ``vmap``: ``(float[K, d], losses[K], weights[K])``."""
    k = ids.shape[0]
    delta, losses, weights = _block(train_one, ids, ckeys)
    if isinstance(delta, (dict, list, tuple)):
        delta = jnp.concatenate([z.reshape(k, -1) for z in jax.tree_util.tree_leaves(delta)],
                                axis=1)
    return delta, losses, weights


def run_map(train_one: Callable, ids: jax.Array, ckeys: jax.Array, buf: jax.Array,
            chunk: int, offsets: list[int]):
    """K clients, ``chunk`` at a time, written into ``buf: float[K, d]``.

    A ``lax.scan`` over whole chunks carries the buffer; a last partial chunk
    runs after it. Every row of ``buf`` is overwritten.
    """
    k = ids.shape[0]
    chunk = max(1, min(chunk or k, k))
    n_full, rem = divmod(k, chunk)

    def body(buf, blk):
        j, i, c = blk
        delta, loss, weight = _block(train_one, i, c)
        return write_rows(buf, j * chunk, delta, offsets), (loss, weight)

    split = lambda z: z[:n_full * chunk].reshape((n_full, chunk) + z.shape[1:])  # noqa: E731
    buf, (losses, weights) = jax.lax.scan(
        body, buf, (jnp.arange(n_full), split(ids), split(ckeys)))
    losses, weights = losses.reshape(-1), weights.reshape(-1)
    if rem:
        delta, loss, weight = _block(train_one, ids[n_full * chunk:], ckeys[n_full * chunk:])
        buf = write_rows(buf, n_full * chunk, delta, offsets)
        losses = jnp.concatenate([losses, loss])
        weights = jnp.concatenate([weights, weight])
    return buf, losses, weights


def flat_rows(delta, dim: int, width: int | None = None) -> jax.Array:
    """A chunk's updates (a pytree of ``[c, ...]`` leaves, or ``float[c, d]``)
    as ``float[c, width]`` (``width >= dim``: zero columns appended)."""
    if isinstance(delta, (dict, list, tuple)):
        leaves = jax.tree_util.tree_leaves(delta)
        c = leaves[0].shape[0]
        parts = [leaf.reshape(c, -1) for leaf in leaves]
    else:
        c = delta.shape[0]
        parts = [delta]
    width = dim if width is None else width
    if width > dim:
        parts.append(jnp.zeros((c, width - dim), parts[0].dtype))
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def run_stream(train_one: Callable, ids: jax.Array, ckeys: jax.Array, rows: jax.Array,
               chunk: int, consume: Callable, acc):
    """Trains the clients ``ids`` (int[n]) ``chunk`` at a time and hands each
    chunk to ``consume(acc, delta, weight, rows) -> (acc, out)`` (``rows``:
    the chunk's positions in the round, int[c]) instead of storing it.

    Returns:
      ``(acc, outs, losses float[n], weights float[n])`` with ``outs`` the
      per-row outputs of ``consume`` stacked to ``[n]``.
    """
    n = ids.shape[0]
    chunk = max(1, min(chunk or n, n))
    n_full, rem = divmod(n, chunk)

    def body(acc, blk):
        i, c, r = blk
        delta, loss, weight = _block(train_one, i, c)
        acc, out = consume(acc, delta, weight, r)
        return acc, (out, loss, weight)

    split = lambda z: z[:n_full * chunk].reshape((n_full, chunk) + z.shape[1:])  # noqa: E731
    merge = lambda z: z.reshape((-1,) + z.shape[2:])  # noqa: E731
    acc, (outs, losses, weights) = jax.lax.scan(body, acc, (split(ids), split(ckeys),
                                                             split(rows)))
    outs, losses, weights = jax.tree_util.tree_map(merge, (outs, losses, weights))
    if rem:
        tail = slice(n_full * chunk, n)
        delta, loss, weight = _block(train_one, ids[tail], ckeys[tail])
        acc, out = consume(acc, delta, weight, rows[tail])
        cat = lambda a, b: jnp.concatenate([a, b])  # noqa: E731
        outs = jax.tree_util.tree_map(cat, outs, out)
        losses, weights = cat(losses, loss), cat(weights, weight)
    return acc, outs, losses, weights


# ----------------------------------------------------------------------------
# The client axis over devices (inside shard_map, axis CLIENTS bound)


def padded_rows(k: int, devices: int, chunk: int) -> tuple[int, int]:
    """``(K_pad, chunks per device)``: K clients dealt out ``chunk`` at a time
    to ``devices`` devices (``K_pad - K`` padding rows, masked)."""
    per_round = devices * chunk
    n_chunks = -(-k // per_round)
    return n_chunks * per_round, n_chunks


def pad_rows(x: jax.Array, k_pad: int) -> jax.Array:
    """``x[K, ...]`` cycled to ``[K_pad, ...]`` (padding rows repeat real ones)."""
    k = x.shape[0]
    if k_pad == k:
        return x
    reps = -(-k_pad // k)
    return jnp.concatenate([x] * reps)[:k_pad]


def local_rows(x: jax.Array, devices: int, chunk: int, axis: str = CLIENTS) -> jax.Array:
    """This device's rows of ``x[K_pad, ...]``: chunk ``j`` of device ``i`` is
    rows ``j*D*c + i*c ... + c - 1`` (so an ``all_to_all`` of one chunk from
    every device yields the round's rows in order). Returns ``[K_pad / D, ...]``."""
    k_pad = x.shape[0]
    n_chunks = k_pad // (devices * chunk)
    y = x.reshape((n_chunks, devices, chunk) + x.shape[1:])
    mine = jax.lax.dynamic_index_in_dim(y, jax.lax.axis_index(axis), axis=1, keepdims=False)
    return mine.reshape((n_chunks * chunk,) + x.shape[1:])


def gather_rows(x: jax.Array, devices: int, chunk: int, axis: str = CLIENTS) -> jax.Array:
    """Inverse of :func:`local_rows`: every device's ``[K_pad / D, ...]`` rows
    gathered into ``[K_pad, ...]`` in the round's order (on every device)."""
    n_chunks = x.shape[0] // chunk
    g = jax.lax.all_gather(x.reshape((n_chunks, chunk) + x.shape[1:]), axis, axis=1)
    return g.reshape((n_chunks * devices * chunk,) + x.shape[1:])


def run_map_columns(train_one: Callable, ids: jax.Array, ckeys: jax.Array, buf: jax.Array,
                    chunk: int, dim: int, devices: int, axis: str = CLIENTS):
    """This device's clients (``ids``, ``ckeys`` from :func:`local_rows`),
    ``chunk`` at a time, landed in column blocks.

    Each chunk's rows ``float[c, d_pad]`` are split into ``D`` column blocks
    and exchanged with one ``all_to_all``, so device ``i`` receives columns
    ``i*d_pad/D ...`` of the chunk's rows from every device, in the round's
    order, and writes them into ``buf: float[K_pad, d_pad / D]``.

    Returns:
      ``(buf, losses, weights)`` with this device's ``[K_pad / D]`` losses and
      weights (in :func:`local_rows` order).
    """
    n = ids.shape[0]
    n_chunks = n // chunk
    width = buf.shape[1] * devices  # d_pad

    def body(buf, blk):
        j, i, c = blk
        delta, loss, weight = _block(train_one, i, c)
        rows = flat_rows(delta, dim, width).astype(buf.dtype)  # float[c, d_pad]
        cols = jax.lax.all_to_all(rows, axis, 1, 0, tiled=True)  # float[D*c, d_pad/D]
        return jax.lax.dynamic_update_slice(buf, cols, (j * devices * chunk, 0)), (loss, weight)

    split = lambda z: z.reshape((n_chunks, chunk) + z.shape[1:])  # noqa: E731
    buf, (losses, weights) = jax.lax.scan(body, buf, (jnp.arange(n_chunks), split(ids),
                                                      split(ckeys)))
    return buf, losses.reshape(-1), weights.reshape(-1)
