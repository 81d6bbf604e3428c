"""CRFL: clip and perturb the global model every round (Xie et al., ICML 2021).

References:
  Xie, Chen, Chen, Li, "CRFL: Certifiably Robust Federated Learning against
  Backdoor Attacks", ICML 2021 (official code ``AI-secure/CRFL``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from fljax.aggregators._linalg import clip_weights, row_norms, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, require


class CRFLState(NamedTuple):
    """``round``: rounds aggregated so far (``int32[]``); ``base``: the base rule's state."""

    round: jax.Array
    base: object


def _finite_mean(updates, state, key, context):
    """FedAvg over the finite rows: weighted by ``context.weights`` when given."""
    del key
    n = updates.shape[0]
    finite = finite_rows(updates)
    w = getattr(context, "weights", None)
    w = jnp.ones((n,), updates.dtype) if w is None else w.astype(updates.dtype)
    w = jnp.where(finite, w, 0.0)
    total = jnp.sum(w)
    w = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)
    return weighted_row_sum(updates, w, finite), state, {"num_nonfinite": n - jnp.sum(finite)}


def crfl(clip: float, sigma: float, clip_growth: float = 0.0,
         base: Union[str, Aggregator] = "mean", base_kwargs: Optional[dict] = None) -> Aggregator:
    """Aggregate, then clip the new global model's norm and add Gaussian noise to it.

    ::

        Δ      = base(updates)                         (FedAvg by default)
        w      = params + Δ                            (the new global model)
        ρ_t    = clip + clip_growth · t                (t = rounds aggregated before)
        w      ← w · min(1, ρ_t / ‖w‖) + N(0, σ² I)
        return w - params

    CRFL acts on the *global model*, server side: it needs the current global
    parameters, which the simulator passes as ``context.params`` (the
    flattened model, as for FLTrust), and it returns the update that moves
    the model to the clipped, perturbed one. With the server optimizer
    ``sgd(learning_rate=1)`` (FedAvg's server step, the simulator's default)
    the next global model is exactly ``clip(params + Δ) + noise``, as in the
    paper; with another server optimizer (momentum, Adam) that optimizer
    rescales this update and the model is no longer clipped exactly. The
    base rule can be any aggregator (``base=krum(2)``, or a name with
    ``base_kwargs``), so CRFL composes with robust rules and pre-aggregators.

    The norm bound may grow with the round as in FedML's configs (``ρ_t =
    0.1 t + 2`` on MNIST: ``clip=2, clip_growth=0.1``); the round counter
    lives in the state. The paper's test-time certification (parameter
    smoothing over ``N`` noisy models) is not part of aggregation and is not
    implemented here. FLPoison's CRFL clips the aggregated *update* instead;
    that is ``norm_clipping`` / ``weak_dp``.

    Non-finite rows are screened by the default base (the weighted mean of
    the finite rows); the norm is overflow-safe (``_linalg.row_norms``).

    Args:
      clip: ``ρ``, the model norm bound (a value; 15 for MNIST and 100 for
        EMNIST in the official configs).
      sigma: noise std on every model coordinate (a value; 0.01 in the paper).
      clip_growth: per-round increase of the bound (a value; 0 by default).
      base: ``'mean'`` (the finite rows' mean, weighted by ``context.weights``)
        or a rule name from ``RULES`` (built with ``base_kwargs``), or an
        :class:`Aggregator`.
      base_kwargs: keyword arguments of a named base rule.

    Returns:
      An :class:`Aggregator` whose state is :class:`CRFLState`; ``info`` holds
      the base rule's entries plus ``model_norm`` (before clipping),
      ``clip_bound`` (``ρ_t``) and ``clipped``.

    References:
      Xie et al., ICML 2021, Algorithm 1 (training with model clipping and
      perturbation).
    """
    if isinstance(clip, (int, float)):
        require(clip > 0, "crfl", f"clip={clip} must be > 0")
    if isinstance(sigma, (int, float)):
        require(sigma >= 0, "crfl", f"sigma={sigma} must be >= 0")
    if isinstance(clip_growth, (int, float)):
        require(clip_growth >= 0, "crfl", f"clip_growth={clip_growth} must be >= 0")
    if isinstance(base, str):
        if base == "mean":
            require(not base_kwargs, "crfl", "base='mean' takes no base_kwargs")
            base_agg = Aggregator(lambda dim: None, _finite_mean)
        else:
            from fljax.aggregators import RULES, get_aggregator

            require(base in RULES and base != "crfl", "crfl",
                    f"base={base!r} must be 'mean', a rule in RULES or an Aggregator")
            base_agg = get_aggregator(base, **(base_kwargs or {}))
    else:
        require(isinstance(base, Aggregator), "crfl",
                f"base={base!r} must be 'mean', a rule name or an Aggregator")
        base_agg = base

    def init(dim):
        return CRFLState(jnp.zeros((), jnp.int32), base_agg.init(dim))

    def aggregate(updates, state, key, context=None):
        require(context is not None and context.params is not None, "crfl",
                "needs context.params (the current global parameters, float[d]): CRFL clips "
                "and perturbs the global model")
        d = updates.shape[1]
        k_base, k_noise = jax.random.split(key)
        delta, base_state, info = base_agg.aggregate(updates, state.base, k_base, context)
        params = context.params.astype(updates.dtype)
        model = (params + delta)[None, :]  # float[1, d]
        ok = jnp.all(jnp.isfinite(model), axis=1)
        scale, norm_base = row_norms(model, ok)
        bound = clip + clip_growth * state.round.astype(updates.dtype)
        w = clip_weights(scale, norm_base, bound)  # of model / scale
        clipped_model = weighted_row_sum(model, w, ok, scale=scale)  # float[d]
        noisy = clipped_model + sigma * jax.random.normal(k_noise, (d,), updates.dtype)
        out = jnp.where(ok[0], noisy - params, 0.0)
        norm = scale[0] * norm_base[0]
        info = {**info, "model_norm": norm, "clip_bound": bound, "clipped": norm > bound}
        return out, CRFLState(state.round + 1, base_state), info

    return Aggregator(init, aggregate)
