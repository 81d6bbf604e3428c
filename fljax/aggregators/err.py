"""ERR: reject the clients whose update most raises the validation error rate.

References:
  Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to Byzantine-Robust
  Federated Learning", USENIX Security 2020 (the ERR defense, after RONI).
"""

from __future__ import annotations

from typing import Union

from fljax.aggregators._rejection import EvalFn, loo_rejection
from fljax.aggregators.base import Aggregator


def err(eval_fn: EvalFn, num_reject: int, base: Union[str, Aggregator] = "mean",
        server_lr: float = 1.0) -> Aggregator:
    """Error-rate-based rejection around a base rule.

    ::

        A   = base(all n updates);  B_i = base(all but update i)
        impact_i = error(params + lr·A) − error(params + lr·B_i)
        reject the num_reject rows with the largest impact; return base(the rest)

    The ``n`` leave-one-out aggregates and the ``n + 1`` evaluations each run
    as one ``vmap`` (for ``base='mean'`` the leave-one-out means are closed
    form, ``(S − w_i x_i) / (W − w_i)``, or one matrix product when a row
    dwarfs the others and the closed form would cancel their digits).
    ``context.weights`` weight the mean when given and are passed (as a
    subset) to a wrapped rule.

    Hostile rows: non-finite rows get impact ``+inf`` (rejected first, never
    averaged). A candidate model whose error rate or loss is not finite is
    the worst possible. If one is, every row's own model ``params + lr·x_i``
    is scored as well and rows whose own model cannot be scored (finite
    updates so large that the logits overflow) are screened like non-finite
    rows before the candidates are rebuilt (``info['num_unscorable']``).
    Impacts ``inf − inf`` (neither model scorable) are undetermined and rank
    just below ``+inf``. Screened rows are left out of the result even when
    ``num_reject`` is smaller than their number. Equal impacts are ordered by
    a random permutation drawn from ``key`` (never by row index).

    Limitation (Fang et al.'s leave-one-out): when two or more rows each ruin
    the model alone, leaving one of them out changes little, and the error
    rate (a coarse metric) often not at all, so their impacts tie with the
    honest rows' (masking). LFR's loss usually still tells them apart.

    Args:
      eval_fn: ``(params float[d]) -> (error_rate, loss)`` on the server's
        validation set; must be a jax function (it is vmapped). The simulator
        passes it by this name.
      num_reject: how many rows to reject (static; ``0 <= num_reject <= n-1``,
        checked at the first call). Fang et al. reject ``c``, the assumed
        number of attackers.
      base: ``'mean'`` (default; the mean of the finite rows) or any
        :class:`Aggregator`. A stateful base keeps its state through the final
        aggregate; the leave-one-out calls see the same input state and their
        new states are dropped. Memory for a wrapped rule is ``n·(n−1)·d``.
      server_lr: the server learning rate, for direct calls: candidates are
        scored as ``params + server_lr * aggregate``. Inside the simulator
        ``context.server_step`` is used instead (the server's real step, its
        optimizer and state included), and this value is ignored.

    Returns:
      An :class:`Aggregator` that needs ``context.params``. ``info`` holds
      ``impact`` (``float[n]``: ``+inf`` for screened rows, float32's
      largest where undetermined), ``accepted`` (``bool[n]``), ``metric_full``
      (the error rate with everyone, after screening), ``num_nonfinite`` and
      ``num_unscorable``.

    References:
      Fang et al., USENIX Security 2020, Section 5.
    """
    return loo_rejection("err", 0, eval_fn, num_reject, base, server_lr)
