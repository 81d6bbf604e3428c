"""LFR: reject the clients whose update most raises the validation loss.

References:
  Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
  Federated Learning", USENIX Security 2020 (the LFR defense, after TRIM).
"""

from __future__ import annotations

from typing import Union

from fljax.aggregators._rejection import EvalFn, loo_rejection
from fljax.aggregators.base import Aggregator


def lfr(eval_fn: EvalFn, num_reject: int, base: Union[str, Aggregator] = "mean",
        server_lr: float = 1.0) -> Aggregator:
    """Loss-function-based rejection around a base rule.

    Identical to :func:`fljax.aggregators.err` except that the impact is the
    change in validation *loss* (the second output of ``eval_fn``):
    ``impact_i = loss(params + lr·A) − loss(params + lr·B_i)``. Fang et al.
    found LFR the more effective of the two.

    Args:
      eval_fn: ``(params float[d]) -> (error_rate, loss)``; a jax function.
      num_reject: how many rows to reject (static, ``<= n - 1``).
      base: ``'mean'`` or an :class:`Aggregator`.
      server_lr: the server learning rate, for direct calls (see :func:`err`);
        inside the simulator ``context.server_step`` is used instead.

    Returns:
      An :class:`Aggregator` that needs ``context.params``; ``info`` as for
      ``err`` (``metric_full`` is the loss).

    References:
      Fang et al., USENIX Security 2020, Section 5.
    """
    return loo_rejection("lfr", 1, eval_fn, num_reject, base, server_lr)
