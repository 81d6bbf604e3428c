"""FoolsGold: down-weight clients whose update histories look alike (sybils).

References:
  Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil
  Settings", RAID 2020 (code ``DistributedML/FoolsGold``,
  ``ML/code/model_aggregator.py``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from fljax.aggregators._linalg import cosine_similarity, unit_rows
from fljax.aggregators.base import Aggregator, finite_rows, require


class FoolsGoldState(NamedTuple):
    """``history``: ``float[num_clients, d]``, each client's summed updates."""

    history: jax.Array


def foolsgold_weights(history: jax.Array, kappa: float = 1.0,
                      valid: Optional[jax.Array] = None) -> jax.Array:
    """FoolsGold's weights ``float[n]`` in ``[0, 1]`` from histories ``float[n, d]``.

    The reference code, vectorised::

        cs    = cos_sim(H) − I            # zero rows: cos 0
        v_i   = max_j cs_ij
        cs_ij *= v_i / v_j   where v_i < v_j            (pardoning)
        α_i   = clip(1 − max_j cs_ij, 0, 1);  α ← α / max α;  α[α == 1] = 0.99
        w_i   = clip(κ·(ln(α_i / (1 − α_i)) + 0.5), 0, 1)   (α_i = 0 → w_i = 0)

    The reference divides by ``max α`` unguarded and returns NaN weights when
    every client looks like a sybil; here all weights are then 0. A pardon
    ratio with ``v_j = 0`` (so ``v_i < 0``) is skipped instead of dividing by
    zero. Rows with ``valid`` False (``bool[n]``, default all valid) take no
    part: the others' weights are those of the valid rows alone, and theirs
    are 0.
    """
    n = history.shape[0]
    valid = jnp.ones((n,), bool) if valid is None else valid
    pair = valid[:, None] & valid[None, :] & ~jnp.eye(n, dtype=bool)  # bool[n, n]
    unit, _ = unit_rows(history)
    cs = cosine_similarity(unit) - jnp.eye(n, dtype=history.dtype)  # float[n, n]
    # Invalid rows are nobody's neighbour: -inf drops them from every max
    # (the diagonal stays the reference's cos(i, i) - 1).
    cs = jnp.where(pair | jnp.eye(n, dtype=bool), cs, -jnp.inf)
    v = jnp.max(cs, axis=1)  # float[n]
    pardon = (v[:, None] < v[None, :]) & (v[None, :] != 0)
    ratio = v[:, None] / jnp.where(v[None, :] != 0, v[None, :], 1.0)
    cs = jnp.where(pardon & pair, cs * ratio, cs)
    alpha = jnp.where(valid, jnp.clip(1.0 - jnp.max(cs, axis=1), 0.0, 1.0), 0.0)
    top = jnp.max(alpha)
    alpha = jnp.where(top > 0, alpha / jnp.where(top > 0, top, 1.0), 0.0)
    alpha = jnp.where(alpha == 1.0, 0.99, alpha)
    safe = jnp.where(alpha > 0, alpha, 0.5)
    logit = kappa * (jnp.log(safe / (1.0 - safe)) + 0.5)
    return jnp.where(valid & (alpha > 0), jnp.clip(logit, 0.0, 1.0), 0.0)


def foolsgold(num_clients: int, kappa: float = 1.0, normalize: bool = False) -> Aggregator:
    """FoolsGold over per-client histories of summed updates (stateful).

    Each round the finite rows are added to their senders' histories; the
    weights :func:`foolsgold_weights` are computed on the histories of the
    clients present in the round; the result is ``Σ_i w_i Δ_i`` over the
    current updates. As in the reference code this is a weighted *sum*, not a
    mean (its size grows with the number of clients that look honest), unless
    ``normalize=True``, which divides by ``Σ_i w_i`` (zero if all weights are
    zero). Non-finite rows get weight 0, leave the history untouched and take
    no part in the other clients' weights this round.
    A history entry beyond float32's range is stored as ``±inf`` and read as
    ``±`` float32's largest value (never NaN).
    Not a defence against scale: a huge update that looks like no other
    keeps its weight, and the weighted sum follows it (clip in front with
    ``compose`` to bound it); with ``normalize=False`` the sum overflows to
    ``inf`` only where its true value exceeds float32's range.
    The reference's optional "important features" mask is not implemented:
    the whole update is compared.

    Client identity: the state holds one history row per client in
    ``[0, num_clients)``. If ``context.client_ids`` (``int[n]``) is given, row
    ``i`` of the updates belongs to client ``client_ids[i]`` (partial
    participation; weights compare only the clients sampled this round).
    Otherwise row ``i`` is client ``i``, which requires ``n == num_clients``
    (full participation with a fixed client order).

    Args:
      num_clients: size of the client population (static: fixes the state).
      kappa: confidence ``κ`` of the logit (reference: 1).
      normalize: divide by the sum of the weights (a weighted mean) instead
        of the reference's weighted sum.

    Returns:
      An :class:`Aggregator` whose state is :class:`FoolsGoldState`; ``info``
      holds ``weights`` (``float[n]``), ``accepted`` (weights > 0) and
      ``num_nonfinite``.

    References:
      Fung et al., RAID 2020, Algorithm 1 and their reference code.
    """
    require(isinstance(num_clients, int) and num_clients >= 1, "foolsgold",
            f"num_clients={num_clients!r} must be an int >= 1")
    if isinstance(kappa, (int, float)):
        require(kappa > 0, "foolsgold", f"kappa={kappa} must be > 0")

    def init(dim):
        return FoolsGoldState(jnp.zeros((num_clients, dim), jnp.float32))

    def aggregate(updates, state, key, context=None):
        del key
        n = updates.shape[0]
        ids: Optional[jax.Array] = getattr(context, "client_ids", None)
        if ids is None:
            require(n == num_clients, "foolsgold",
                    f"got n={n} rows but num_clients={num_clients}; without "
                    "context.client_ids row i must be client i (full participation)")
            ids = jnp.arange(n)
        else:
            require(n <= num_clients, "foolsgold",
                    f"got n={n} rows but num_clients={num_clients}")
        finite = finite_rows(updates)  # bool[n]
        x = jnp.where(finite[:, None], updates, 0.0)  # float[n, d]
        history = state.history.at[ids].add(x.astype(state.history.dtype))
        # Two finite updates near float32's largest overflow a history to
        # ±inf (never NaN: screened rows add 0). Read as ±float32's largest, so
        # the direction survives: an inf history gave NaN cosines and zero
        # weight to every client in every later round. (Saturating the stored
        # sums instead cost a second [n, d] pass.)
        big = jnp.finfo(state.history.dtype).max
        rows = history[ids]  # float[n, d]
        rows = jnp.where(jnp.isinf(rows), jnp.sign(rows) * big, rows)
        w = foolsgold_weights(rows.astype(updates.dtype), kappa, finite)  # float[n]
        total = jnp.sum(w)
        # The weighted mean first (a convex combination cannot overflow), then
        # the reference's sum as total * mean: finite whenever it is representable.
        unit = jnp.dot(w / jnp.where(total > 0, total, 1.0), x,
                       precision=jax.lax.Precision.HIGHEST)  # float[d]
        out = unit if normalize else total * unit
        info = {"weights": w, "accepted": w > 0, "num_nonfinite": n - jnp.sum(finite)}
        return out, FoolsGoldState(history), info

    def memory(n, d, itemsize):  # unit rows of the history, [n, n] similarities
        return 3 * n * d * itemsize + 3 * n * n * itemsize  # XLA: 120 MB at 200 x 50,000

    return Aggregator(init, aggregate, memory=memory)
