"""Fang et al.'s leave-one-out rejection (ERR / LFR), shared by ``err`` and ``lfr``.

References:
  Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
  Federated Learning", USENIX Security 2020, Section 5 (defenses).
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from fljax.aggregators.base import (
    AggregationContext,
    Aggregator,
    finite_rows,
    init_empty,
    require,
)

EvalFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def _client_weights(updates, context):
    n = updates.shape[0]
    if context is not None and context.weights is not None:
        return context.weights.astype(updates.dtype)
    return jnp.ones((n,), updates.dtype)


def _subset(context, rows):
    """The context restricted to ``rows`` (weights and client ids follow the rows)."""
    ids = getattr(context, "client_ids", None)
    return AggregationContext(
        weights=None if context.weights is None else context.weights[rows],
        params=context.params,
        client_ids=None if ids is None else ids[rows],
    )


def loo_rejection(rule: str, metric: int, eval_fn: EvalFn, num_reject: int,
                  base: Union[str, Aggregator], server_lr: float) -> Aggregator:
    """Builds ERR (``metric=0``, error rate) or LFR (``metric=1``, loss)."""
    require(isinstance(num_reject, int) and num_reject >= 0, rule,
            f"num_reject={num_reject!r} must be an int >= 0")
    if isinstance(base, str):
        require(base == "mean", rule, f"base={base!r} must be 'mean' or an Aggregator")
        base_agg = None
        init = init_empty
    else:
        require(isinstance(base, Aggregator), rule,
                f"base={base!r} must be 'mean' or an Aggregator")
        base_agg = base
        init = base.init

    def aggregate(updates, state, key, context=None):
        n, _ = updates.shape
        require(n >= 2, rule, f"needs n >= 2 updates, got n={n}")
        require(num_reject <= n - 1, rule,
                f"num_reject={num_reject} must be <= n - 1 = {n - 1} (one update must remain)")
        require(context is not None and context.params is not None, rule,
                "needs context.params (the current global parameters, float[d]) "
                "to evaluate the candidate aggregates")
        params = context.params
        finite = finite_rows(updates)  # bool[n]
        w = _client_weights(updates, context)  # float[n]
        k_all, k_loo, k_final = jax.random.split(key, 3)

        if base_agg is None:
            # Weighted mean of the finite rows; leave-one-out in closed form.
            x = jnp.where(finite[:, None], updates, 0.0)  # float[n, d]
            wf = jnp.where(finite, w, 0.0)
            total, mass = wf @ x, jnp.sum(wf)  # float[d], scalar
            full = total / jnp.maximum(mass, 1e-12)
            rest = jnp.maximum(mass - wf, 1e-12)[:, None]  # float[n, 1]
            loo = (total[None, :] - wf[:, None] * x) / rest  # float[n, d]
        else:
            # Row i of `others` lists every index but i: float[n, n-1, d] gathered.
            others = jnp.asarray(
                np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32))
            full, _, _ = base_agg.aggregate(updates, state, k_all, context)

            def without(rows, key_i):
                return base_agg.aggregate(updates[rows], state, key_i, _subset(context, rows))[0]

            loo = jax.vmap(without)(others, jax.random.split(k_loo, n))  # float[n, d]

        candidates = jnp.concatenate([full[None, :], loo], axis=0)  # float[n+1, d]
        models = params[None, :] + server_lr * candidates
        values = jax.vmap(eval_fn)(models)[metric]  # float[n+1]
        impact = values[0] - values[1:]  # float[n]: how much worse with client i
        impact = jnp.where(jnp.isnan(impact), -jnp.inf, impact)
        impact = jnp.where(finite, impact, jnp.inf)  # non-finite rows go first
        order = jnp.argsort(impact, stable=True)  # ascending: least harmful first
        kept_idx = order[: n - num_reject]  # int[n - num_reject]
        accepted = jnp.zeros((n,), bool).at[kept_idx].set(True)

        if base_agg is None:
            wk = jnp.where(accepted & finite, w, 0.0)
            x = jnp.where(finite[:, None], updates, 0.0)
            out = (wk @ x) / jnp.maximum(jnp.sum(wk), 1e-12)
            new_state = state
        else:
            out, new_state, _ = base_agg.aggregate(
                updates[kept_idx], state, k_final, _subset(context, kept_idx))
        info = {
            "impact": impact,
            "accepted": accepted,
            "metric_full": values[0],
            "num_nonfinite": n - jnp.sum(finite),
        }
        return out, new_state, info

    return Aggregator(init, aggregate)
