"""FLTrust: trust scores from the server's own update on clean root data.

References:
  Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via
  Trust Bootstrapping", NDSS 2021.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fljax.aggregators._linalg import _HIGHEST, row_norms, unit_rows, weighted_row_sum
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.types import PRNGKey

ServerUpdateFn = Callable[[jax.Array, PRNGKey], jax.Array]


def fltrust(server_update_fn: ServerUpdateFn) -> Aggregator:
    """Cosine trust against the server update, norm matching, trust-weighted mean.

    ::

        g_0  = server_update_fn(params, key)            # float[d], clean root data
        TS_i = ReLU(cos(g_i, g_0))
        ḡ_i  = g_i · ‖g_0‖ / ‖g_i‖
        g    = Σ_i TS_i ḡ_i / Σ_i TS_i

    When every trust score is zero (all clients point away from ``g_0``, or
    ``g_0 = 0``) the result is the zero update. The paper leaves this case
    open; FLPoison falls back to the uniform mean, which would let a
    unanimous attack through. Non-finite rows and zero rows get trust 0.

    Args:
      server_update_fn: ``(params float[d], key) -> float[d]``, the server's
        update (after local training, minus ``params``) from its root data set
        (100 examples in the paper) at the current global parameters. The
        simulator passes it by this name. It must be a jax function.

    Returns:
      An :class:`Aggregator` that needs ``context.params`` (the current global
      parameters, ``float[d]``) at every call. ``info`` holds ``trust``
      (``float[n]``, the ReLU'd cosines), ``weights`` (``float[n]``, the
      normalised trust), ``accepted`` (``bool[n]``, trust > 0),
      ``server_update_norm`` and ``num_nonfinite``.

    References:
      Cao et al., NDSS 2021, Algorithm 1.
    """

    def aggregate(updates, state, key, context=None):
        require(context is not None and context.params is not None, "fltrust",
                "needs context.params (the current global parameters, float[d]) "
                "to compute the server update")
        n = updates.shape[0]
        g0 = server_update_fn(context.params, key).astype(updates.dtype)  # float[d]
        g0 = jnp.where(jnp.isfinite(g0), g0, 0.0)
        u0, norm0 = unit_rows(g0[None, :])  # float[1, d], float[1]
        finite = finite_rows(updates)  # bool[n]
        # ‖g_i‖ = scale_i · base_i (scale a power of two, 1 unless the row's
        # squares overflow or underflow); no unit-row copy of the updates.
        scale, base = row_norms(updates, finite)  # float[n] each
        dots = jnp.matmul(updates, u0[0], precision=_HIGHEST)  # float[n]; NaN only on bad rows

        def scaled_dots():
            return jnp.sum((updates / scale[:, None]) * u0[0][None, :], axis=1)

        # Rescaled rows (huge or tiny: their products may overflow or flush to
        # zero) and overflowed dots take the scaled pass; it is rare.
        rescale = jnp.any(finite & (~jnp.isfinite(dots) | (scale != 1)))
        dots = jax.lax.cond(rescale, scaled_dots, lambda: dots)  # float[n]: (g_i / scale_i) · u_0
        safe_base = jnp.where(base > 0, base, 1.0)
        cos = jnp.where(finite & (base > 0), dots / safe_base, 0.0)
        trust = jax.nn.relu(cos)
        total = jnp.sum(trust)
        weights = jnp.where(total > 0, trust / jnp.where(total > 0, total, 1.0), 0.0)
        # ḡ_i = g_i / ‖g_i‖ · ‖g_0‖: the weighted sum of g_i / scale_i with weight w_i / base_i.
        out = weighted_row_sum(updates, weights / safe_base, finite, scale=scale) * norm0[0]
        info = {
            "trust": trust,
            "weights": weights,
            "accepted": trust > 0,
            "server_update_norm": norm0[0],
            "num_nonfinite": n - jnp.sum(finite),
        }
        return out, state, info

    return Aggregator(init_empty, aggregate)
