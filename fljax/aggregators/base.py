"""The aggregation protocol shared by every rule.

An aggregation rule is built by a factory that captures what fixes shapes
(``num_byzantine``, trim counts) and returns an :class:`Aggregator`: two pure
functions that are safe to ``jax.jit``.

* ``init(dim) -> state``: the rule's state for flat updates of length ``dim``
  (``EmptyState()`` for stateless rules).
* ``aggregate(updates, state, key, context=None) -> (aggregate, state, info)``
  with ``updates: float[n, d]``, the result ``float[d]``, and ``info`` a dict of
  arrays (scalars or ``[n]``) for diagnostics: chosen indices, scores, how many
  rows were non-finite, ...

An aggregator never sees which clients are malicious. What else a rule may
use is passed in ``context`` (:class:`AggregationContext`): example-count
weights, and the current global parameters for rules that evaluate or train
at them (FLTrust, ERR / LFR).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax
import jax.numpy as jnp

from fljax.types import Info, PRNGKey, Updates

State = Any


class EmptyState(NamedTuple):
    """State of a stateless rule."""


class AggregationContext(NamedTuple):
    """What the server knows besides the updates (all fields optional).

    Attributes:
      weights: ``float[n]`` non-negative client weights (example counts); rules
        that are unweighted by definition ignore them.
      params: ``float[d]`` the current global parameters, flattened the same way
        as the updates (FLTrust and ERR / LFR train or evaluate at them).
      client_ids: ``int[n]`` which client (in ``[0, num_clients)``) sent each
        row; stateful per-client rules (FoolsGold's history) index their state
        with it. ``None`` means row ``i`` is client ``i`` (full participation).
      server_step: ``(aggregate float[d]) -> float[d]``, the flat global
        parameters the server's real step (its optimizer, learning rate and
        state) would produce from an aggregate; rules that score candidate
        models (ERR / LFR) use it. ``None`` means ``params + aggregate``.
    """

    weights: Optional[jax.Array] = None
    params: Optional[jax.Array] = None
    client_ids: Optional[jax.Array] = None
    server_step: Optional[Callable] = None


class AggregateFn(Protocol):

    def __call__(
        self,
        updates: Updates,
        state: State,
        key: PRNGKey,
        context: Optional[AggregationContext] = None,
    ) -> tuple[jax.Array, State, Info]:
        ...


class Aggregator(NamedTuple):
    """A rule as a pair of pure functions (see the module docstring)."""

    init: Callable[[int], State]
    aggregate: AggregateFn


class PreAggregateFn(Protocol):

    def __call__(
        self,
        updates: Updates,
        key: PRNGKey,
        context: Optional[AggregationContext] = None,
    ) -> tuple[jax.Array, Optional[AggregationContext], Info]:
        ...


class PreAggregator(NamedTuple):
    """A server-side stage that maps the update matrix to another matrix.

    Unlike a per-client transform (:mod:`fljax.transforms`), a pre-aggregator
    sees every row at once: ``apply(updates float[n, d], key, context=None) ->
    (float[m, d], context, info)``. It is stateless and pure (safe to
    ``jit``); ``m`` depends only on ``n`` (static). The returned context is the
    one the next stage sees: rows that keep their client (nearest-neighbour
    mixing, clipping) pass it through, rows that merge clients (buckets) drop
    the per-row fields (``weights``, ``client_ids``) and keep ``params``.
    ``info`` is a dict of arrays; :func:`fljax.aggregators.compose` puts it in
    the rule's ``info`` under ``'<name>/<key>'``.

    Non-finite rows are passed on, never hidden: a row (or a bucket) that was
    non-finite stays non-finite, so the rule after the stage screens it.

    Attributes:
      name: the factory's name (``'nnm'``, ``'bucketing'``, ``'arc'``).
      apply: the stage.
    """

    name: str
    apply: PreAggregateFn


def init_empty(dim: int) -> EmptyState:
    del dim
    return EmptyState()


def finite_rows(updates: Updates) -> jax.Array:
    """``bool[n]``: True where every entry of the row is finite.

    One matrix-vector product with a tiny constant: a NaN or an infinity makes
    the row's product NaN or infinite, while finite entries (up to float32's
    largest, 3.4e38 * 1e-30 per entry) keep it finite. XLA:CPU runs this ~5x
    faster than ``all(isfinite(updates), axis=1)`` (23 ms against 112 ms on
    200 x 1M). In float16 / bfloat16 the constant is 0, which works the same way
    (``inf * 0`` is NaN).
    """
    probe = jnp.full((updates.shape[-1],), 1e-30, updates.dtype)
    return jnp.isfinite(jnp.dot(updates, probe, precision=jax.lax.Precision.HIGHEST))


def on_pytree(agg: Aggregator) -> Aggregator:
    """Adapts a flat rule to stacked pytrees.

    The returned ``aggregate`` takes a stacked pytree (every leaf ``[n, ...]``)
    and returns one unstacked pytree; the state is the flat rule's state for
    ``dim`` = the number of scalars per client. ``init`` takes one unstacked
    pytree (a template) instead of ``dim``.
    """
    from jax.flatten_util import ravel_pytree  # local: keeps the module light

    def init(template):
        flat, _ = ravel_pytree(template)
        return agg.init(flat.shape[0])

    def aggregate(stacked, state, key, context=None):
        template = jax.tree_util.tree_map(lambda x: x[0], stacked)
        _, unravel = ravel_pytree(template)
        flat = jax.vmap(lambda t: ravel_pytree(t)[0])(stacked)  # float[n, d]
        out, state, info = agg.aggregate(flat, state, key, context)
        return unravel(out), state, info

    return Aggregator(init, aggregate)


def require(condition: bool, rule: str, message: str) -> None:
    """Raises a ``ValueError`` naming the rule when a static check fails."""
    if not condition:
        raise ValueError(f"{rule}: {message}")
