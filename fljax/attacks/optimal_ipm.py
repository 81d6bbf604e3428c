"""Optimal IPM: the inner-product manipulation's scale searched against the server's rule.

References:
  Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
  Inner Product Manipulation", UAI 2019.
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023 (the
  optimised attacks, ByzFL's ``Optimal_InnerProductManipulation``).
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.attacks import _search
from fljax.attacks.base import UpdateAttack


def optimal_ipm(knowledge: str = "full", start: float = _search.START,
                delta: float = _search.DELTA, ratio: float = _search.RATIO,
                evals: int = _search.EVALS, lookahead: int = 0) -> UpdateAttack:
    """Optimal IPM: every malicious row is ``-tau * mu`` with the ``tau`` that
    moves the rule's output farthest from the honest mean.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu    = mean of the known rows                          # float[d]
        rule  = context.aggregator (with context.agg_state) | the plain mean
        X(tau) = the round's rows (full) | known rows standing in for the
                 honest ones (partial), malicious rows <- -tau * mu
        y(tau) = ‖rule(X(tau)) - mu‖
        tau* = ByzFL's expansion / contraction search maximising y
               (start 0, delta 10, ratio 0.8, 20 evaluations; fljax._search),
               evaluated in waves of candidates: one vmapped call of the rule each
        every malicious row <- -tau* * mu

    Same sign as ByzFL's ``Optimal_InnerProductManipulation`` and fljax's
    :func:`~fljax.attacks.ipm` (``tau`` is IPM's ``epsilon``), so with the
    same rule and constants the scale equals ByzFL's (tested). Against a
    rule that does not bound the attackers' influence (the plain mean, the
    default without a context) ``y`` grows with ``tau`` and the search ends
    at its largest candidate, ``start + delta (2^(evals-1) - 1)`` (5.2e6 with
    the defaults); ByzFL's default clips the rows to norm 2 first. The rule
    runs as the server runs it, with the attack's key (see
    :func:`~fljax.attacks.optimal_alie` for the cost and what is not
    simulated). With no known row, or no malicious row, the malicious
    clients send their honest updates and ``info['fallback']`` is True.

    Args:
      knowledge: ``'full'`` or ``'partial'`` (static).
      start: the first scale tried (a value; may be traced).
      delta: the first step (a value, non-zero; may be traced).
      ratio: the step's contraction factor (a value in ``(0.5, 1)``).
      evals: the search's evaluation budget (static, ``>= 1``).
      lookahead: loop steps per wave (static, 1 to 6; 0: by platform, 1 on CPU,
        2 elsewhere).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'scale':
      float32[]`` (tau*, 0 on fallback), ``'objective': float32[]``,
      ``'evaluations': int32[]``, ``'fallback': bool[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from fljax import aggregators
      >>> from fljax.attacks.base import AttackContext
      >>> u = jnp.array([[1., 1.], [2., 2.], [3., 3.], [0., 0.], [0., 0.]])
      >>> mal = jnp.array([False, False, False, True, True])
      >>> float(optimal_ipm(evals=3).craft(u, mal, None)[1]['scale'])  # the mean: 0, 10, 30
      30.0
      >>> ctx = AttackContext(aggregator=aggregators.coordinate_median())
      >>> float(optimal_ipm().craft(u, mal, None, ctx)[1]['scale'])  # the median never moves
      0.0

    References:
      Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD
      by Inner Product Manipulation", UAI 2019; Allouah et al., "Fixing by
      Mixing", AISTATS 2023 (ByzFL's ``Optimal_InnerProductManipulation``).
    """

    def prepare(updates, valid, known, mu):
        del updates, valid, known
        return lambda tau: -jnp.asarray(tau, mu.dtype) * mu

    return _search.searched_attack("optimal_ipm", prepare, 1, knowledge, start, delta, ratio,
                                   evals, lookahead)
