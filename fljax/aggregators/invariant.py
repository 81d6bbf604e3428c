"""Invariant aggregator: sign-consistency mask times a near-median (Wang et al., AISTATS 2024).

References:
  Wang, Dimitriadis, Koyejo, Tople, "Invariant Aggregator for Defending
  against Federated Backdoor Attacks", AISTATS 2024 (arXiv 2210.01834).
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.aggregators import _kernels
from fljax.aggregators.base import Aggregator, finite_rows, init_empty, require
from fljax.aggregators.trimmed_mean import trimmed_mean_of_valid
from fljax.types import StaticFloat


def invariant(
    tau: float = 0.6,
    beta: StaticFloat = 0.45,
    method: str = "sort",
    block: int | None = None,
    batch: int | None = None,
    kernel: _kernels.KernelArg = "auto",
) -> Aggregator:
    """AND-mask on sign consistency, then a coordinate-wise trimmed mean.

    As in the official code (backdoor.md section 1.2), per coordinate ``j``::

        agree_j = | mean_i sign(x_ij) |          # sign(0) = 0 is a non-vote
        out_j   = TM_beta(x_1j .. x_nj)  if agree_j >= tau  else 0

    where ``TM_beta`` averages the order statistics of rank ``[lo, m - lo)`` with
    ``lo = floor(beta * m)`` over the ``m`` finite rows (``beta = 0.45`` keeps
    the central ~10%: n = 20 averages the 10th and 11th values, n = 100 the
    central 10). Deviation from the official code: it keeps ranks
    ``[floor(0.45 n), floor(0.55 n))``, which is empty for odd ``n < 10`` (NaN)
    and asymmetric for other odd ``n``; here the slice is symmetric and never
    empty. Unweighted. Non-finite rows are screened out of both the mask and the
    trimmed mean.

    Args:
      tau: sign-agreement threshold in ``[0, 1]`` (may be traced).
      beta: fraction trimmed from each end, in ``[0, 0.5)`` (static).
      method: the jnp path's trimmed mean: ``'sort'`` or ``'bisect'`` (both exact).
      block: column-tile width of the jnp path (None: the measured default).
      batch: tiles per ``lax.map`` step (None: the measured default).
      kernel: ``'auto'`` (default: the compiled CPU kernel
        ``kernels.order_stats.rank_weighted_sum``, which also returns the sign
        sums, where it can be built and the backend is the CPU, else the jnp
        path; see ``_kernels.py``), None (the jnp path) or an
        order-statistics kernel with that function's signature. The paths
        differ only in the rounding of the sum.

    Returns:
      An :class:`Aggregator` with ``info = {'mask_density': float[]`` (fraction of
      coordinates kept), ``'num_nonfinite': int32[]}``.

    References:
      Wang et al., "Invariant Aggregator for Defending against Federated
      Backdoor Attacks", AISTATS 2024.
    """
    require(0.0 <= beta < 0.5, "invariant", f"beta must be in [0, 0.5), got {beta}")
    _kernels.check(kernel, "invariant")

    def aggregate(updates, state, key, context=None):
        del key, context
        n = updates.shape[0]
        valid = finite_rows(updates)  # bool[n]
        m = jnp.sum(valid.astype(jnp.int32))
        lo = jnp.floor(beta * m.astype(jnp.float32)).astype(jnp.int32)
        # Sign mask and trimmed mean in one pass over each column tile.
        out, mask = trimmed_mean_of_valid(updates, valid, lo, method, block, batch,
                                          sign_tau=tau, kernel=kernel)
        info = {
            "mask_density": jnp.mean(mask.astype(jnp.float32)),
            "num_nonfinite": n - m,
        }
        return out, state, info

    def memory(n, d, itemsize):  # the trimmed mean's tiles (XLA: 2.1 MB at 200 x 50,000)
        from fljax.aggregators.trimmed_mean import order_stat_memory

        return order_stat_memory(n, d, itemsize, method, block, batch)

    return Aggregator(init_empty, aggregate, memory=memory)
