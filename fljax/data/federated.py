"""``FederatedData``: every example once, plus each client's index range.

The examples of all clients live in one array, ordered so that client ``c``
owns rows ``offsets[c] : offsets[c] + counts[c]``. Thousands of clients of
uneven size therefore cost no padding in memory; padding appears only in the
per-round batches of the sampled clients, with a mask.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fljax.types import PRNGKey


class FederatedData(NamedTuple):
    """A federated data set.

    Attributes:
      x: ``float[N, ...]`` all training examples, grouped by client.
      y: ``int32[N]`` their labels.
      offsets: ``int32[C]`` first row of each client.
      counts: ``int32[C]`` number of examples of each client.
      x_test: ``float[M, ...]`` held-out test examples (server side).
      y_test: ``int32[M]``.
      num_classes: number of classes.
      name: a short description.
    """

    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str = ""

    @property
    def num_clients(self) -> int:
        return int(self.counts.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def max_client_size(self) -> int:
        return int(self.counts.max())

    def client(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The examples of client ``c`` (a view)."""
        s, n = int(self.offsets[c]), int(self.counts[c])
        return self.x[s:s + n], self.y[s:s + n]


def from_partition(x, y, parts: Sequence[np.ndarray], x_test, y_test, num_classes: int,
                   name: str = "") -> FederatedData:
    """Builds a :class:`FederatedData` from per-client index arrays into ``x``."""
    if len(parts) == 0:
        raise ValueError("a federated data set needs at least one client")
    counts = np.array([len(p) for p in parts], np.int32)
    if counts.min() < 1:
        raise ValueError("every client needs at least one example")
    order = np.concatenate(parts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    return FederatedData(
        x=np.asarray(x)[order].astype(np.float32),
        y=np.asarray(y)[order].astype(np.int32),
        offsets=offsets,
        counts=counts,
        x_test=np.asarray(x_test, np.float32),
        y_test=np.asarray(y_test, np.int32),
        num_classes=int(num_classes),
        name=name,
    )


def num_local_steps(max_client_size: int, batch_size: int, epochs: int,
                    steps: Optional[int] = None) -> int:
    """Static number of local steps per round: ``steps`` if given, else enough
    batches for ``epochs`` passes over the largest client's data."""
    if steps:
        return int(steps)
    return int(-(-epochs * max_client_size // batch_size))


def client_batch_indices(key: PRNGKey, offset, count, *, max_count: int, steps: int,
                         batch_size: int, epochs: int):
    """Indices and mask of ONE client's local batches (jit-able; vmap over clients).

    The client's examples are shuffled once per epoch (a new permutation each
    epoch) and the epochs are concatenated, then cut into ``steps`` batches of
    ``batch_size``. With ``epochs >= 1``, positions past ``epochs * count`` are
    masked, so a client with fewer examples than the largest one does fewer real
    steps. With ``epochs == 0`` (fixed-step mode) the stream of epochs never
    ends and nothing is masked. A batch may straddle an epoch boundary (as
    ``repeat().batch()`` does).

    Args:
      key: PRNG key of this client for this round.
      offset, count: the client's first row and number of examples (traced).
      max_count: the largest client size (static).
      steps, batch_size: static.
      epochs: static; 0 selects fixed-step mode.

    Returns:
      ``(idx int32[steps, batch_size], mask bool[steps, batch_size])``.
    """
    total = steps * batch_size
    # Permutations to draw: one per epoch; in fixed-step mode enough for the
    # largest client to see every example, reused cyclically after that.
    n_perm = epochs if epochs else max(1, -(-total // max_count)) + 1
    slot = jnp.arange(max_count)
    scores = jax.random.uniform(key, (n_perm, max_count))
    scores = jnp.where(slot[None, :] < count, scores, 2.0)  # invalid slots sort last
    perms = jnp.argsort(scores, axis=1)  # int[n_perm, max_count]; first `count` valid
    t = jnp.arange(total)
    count = jnp.maximum(count, 1)
    epoch = t // count
    idx = offset + perms[epoch % n_perm, t % count]
    mask = (epoch < epochs) if epochs else jnp.ones((total,), bool)
    return (idx.reshape(steps, batch_size).astype(jnp.int32),
            mask.reshape(steps, batch_size))
