"""Fang et al.'s leave-one-out rejection (ERR / LFR), shared by ``err`` and ``lfr``.

Hostile input (byzantine.md section 7):

* Non-finite rows are screened first (impact ``+inf``, never averaged).
* The leave-one-out means stay exact when one row dwarfs the others: the
  closed form ``(S - w_i x_i) / (W - w_i)`` cancels every digit of the other
  rows when ``w_i x_i`` dominates ``S`` (a 3e38 row left nothing of the honest
  mean), so then (and only then, under ``lax.cond``) they come from one
  ``[n+1, n] x [n, d]`` product of convex weights instead. Weights are
  normalised before any sum, so no mean of finite rows overflows.
* A candidate model at which ``eval_fn`` returns a non-finite error rate or
  loss counts as the worst possible (metric ``+inf``). If one does, each
  finite row's *own* model ``params + lr * x_i`` is scored too; a row whose
  own model cannot be scored (a finite update near float32's largest value
  makes the logits overflow) is screened like a non-finite row, and the
  candidates are rebuilt and scored without those rows. Without this, two
  such rows made every candidate unscorable and the rule kept them.

References:
  Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
  Federated Learning", USENIX Security 2020, Section 5 (defenses).
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from fljax.aggregators import _ops
from fljax.aggregators._linalg import _HIGHEST, weighted_row_sum
from fljax.aggregators.base import (
    AggregationContext,
    Aggregator,
    init_empty,
    require,
)

EvalFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]

# The closed-form leave-one-out mean of row i loses ~eps * w_i max|x_i| to
# cancellation; it is used while no row's weighted magnitude exceeds this many
# times the others' together (error <= ~DOMINANCE * eps of the others' scale).
DOMINANCE = 16.0


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


def _normalised(w: jax.Array) -> jax.Array:
    return w / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)


def mean_and_leave_one_out(x: jax.Array, w: jax.Array, valid: jax.Array,
                           row_max: jax.Array) -> jax.Array:
    """The weighted mean of the valid rows and every leave-one-out mean.

    Args:
      x: ``float[n, d]``; invalid rows may hold anything.
      w: ``float[n]`` non-negative weights, 0 on invalid rows.
      valid: ``bool[n]``.
      row_max: ``float[n]`` ``max_j |x_ij|`` (any value on invalid rows).

    Returns:
      ``float[n+1, d]``: row 0 the mean ``sum_j p_j x_j`` (``p = w / sum w``),
      row ``1 + i`` the mean without row ``i`` (zero if no other row has
      weight). Every row is a convex combination of valid rows: finite.
    """
    n = x.shape[0]
    p = _normalised(w)  # float[n]
    # rest_i = sum_{j != i} p_j, from exclusive prefix and suffix sums (no 1 - p_i).
    cp = jnp.cumsum(p)
    rest = (cp - p) + (cp[-1] - cp)
    inv_rest = jnp.where(rest > 0, 1.0 / jnp.where(rest > 0, rest, 1.0), 0.0)
    mass = p * jnp.where(valid, row_max, 0.0)  # float[n]
    dominant = jnp.any(mass > DOMINANCE * (jnp.sum(mass) - mass))

    def closed_form(xv):  # xv: invalid rows zeroed
        total = jnp.dot(p, xv, precision=_HIGHEST)  # float[d]
        loo = (total[None, :] - p[:, None] * xv) * inv_rest[:, None]  # float[n, d]
        return jnp.concatenate([total[None, :], loo], axis=0)

    def product(xv):  # exact for any magnitudes: convex weights, one matmul
        loo_w = jnp.where(jnp.eye(n, dtype=bool), 0.0, p[None, :] * inv_rest[:, None])
        m = jnp.concatenate([p[None, :], loo_w], axis=0)  # float[n+1, n]
        return jnp.matmul(m, xv, precision=_HIGHEST)

    return _ops.map_valid_rows(
        lambda xv: jax.lax.cond(dominant, product, closed_form, xv), x, valid)


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
        # One row reduction gives both the screen and the magnitudes
        # (max|NaN| is NaN, max|inf| is inf).
        row_max = jnp.max(jnp.abs(updates), axis=1)  # float[n]
        finite = jnp.isfinite(row_max)  # bool[n]
        w = _client_weights(updates, context)  # float[n]
        k_all, k_loo, k_final, k_tie = jax.random.split(key, 4)

        step = getattr(context, "server_step", None)

        def evaluate(cands):  # float[m, d] -> (error float[m], loss float[m])
            # The models the server would make: its real step (optimizer and
            # state) when the simulator hands it over, else params + lr * aggregate.
            if step is not None:
                return jax.vmap(lambda c: eval_fn(step(c)))(cands)
            return jax.vmap(eval_fn)(params[None, :] + server_lr * cands)

        def candidates(usable, screened):  # -> float[n+1, d]: all usable rows, then each left out
            if base_agg is None:
                return mean_and_leave_one_out(updates, jnp.where(usable, w, 0.0), usable, row_max)
            # The wrapped rule screens NaN rows itself: unusable finite rows become NaN.
            x = jnp.where(usable[:, None], updates, jnp.nan) if screened else updates
            # Row i of `others` lists every index but i: float[n, n-1, d] gathered.
            others = jnp.asarray(
                np.array([[j for j in range(n) if j != i] for i in range(n)], np.int32))
            full, _, _ = base_agg.aggregate(x, state, k_all, context)

            def without(rows, key_i):
                return base_agg.aggregate(x[rows], state, key_i, _subset(context, rows))[0]

            loo = jax.vmap(without)(others, jax.random.split(k_loo, n))  # float[n, d]
            return jnp.concatenate([full[None, :], loo], axis=0)

        def scored(values, usable):  # bool: every candidate that matters could be scored
            ok = jnp.isfinite(values[0]) & jnp.isfinite(values[1])  # bool[n+1]
            return ok[0] & jnp.all(ok[1:] | ~usable)

        values = evaluate(candidates(finite, False))

        def screen():
            own = evaluate(_ops.map_valid_rows(lambda v: v, updates, finite))  # [n] each
            usable = finite & jnp.isfinite(own[0]) & jnp.isfinite(own[1])
            return usable, evaluate(candidates(usable, True))

        usable, values = jax.lax.cond(scored(values, finite), lambda: (finite, values), screen)

        value = values[metric]
        value = jnp.where(jnp.isfinite(value), value, jnp.inf)  # unscorable: the worst model
        impact = value[0] - value[1:]  # float[n]: how much worse with client i
        # inf - inf: neither the model with everyone nor the one without i could be
        # scored. Undetermined: ranked just below the rows whose removal fixed it.
        impact = jnp.where(jnp.isnan(impact), jnp.finfo(impact.dtype).max, impact)
        impact = jnp.where(usable, impact, jnp.inf)  # screened rows go first
        order = _ops.tie_break_order(impact, usable, k_tie)  # least harmful first
        kept_idx = order[: n - num_reject]  # int32[n - num_reject]
        accepted = jnp.zeros((n,), bool).at[kept_idx].set(True)

        if base_agg is None:
            p = _normalised(jnp.where(accepted & usable, w, 0.0))
            out = weighted_row_sum(updates, p, finite)  # float[d]
            new_state = state
        else:
            x = jnp.where(usable[:, None], updates, jnp.nan)
            out, new_state, _ = base_agg.aggregate(
                x[kept_idx], state, k_final, _subset(context, kept_idx))
        info = {
            "impact": impact,
            "accepted": accepted,
            "metric_full": values[metric][0],
            "num_nonfinite": n - jnp.sum(finite),
            "num_unscorable": jnp.sum(finite & ~usable),
        }
        return out, new_state, info

    return Aggregator(init, aggregate)
