"""Optimal ALIE: ALIE's scale searched against the server's rule (ByzFL's line search).

References:
  Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
  Distributed Learning", NeurIPS 2019.
  Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing: A
  Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023 (the
  optimised attacks, ByzFL's ``Optimal_ALittleIsEnough``).
"""

from __future__ import annotations

import jax.numpy as jnp

from fljax.attacks import _common, _search
from fljax.attacks.base import UpdateAttack


def optimal_alie(knowledge: str = "full", start: float = _search.START,
                 delta: float = _search.DELTA, ratio: float = _search.RATIO,
                 evals: int = _search.EVALS, lookahead: int = 0) -> UpdateAttack:
    """Optimal ALIE: every malicious row is ``mu - tau * sigma`` with the ``tau``
    that moves the rule's output farthest from the honest mean.

    Algorithm::

        known = finite rows (full) | finite malicious rows (partial)
        mu, sigma = per-coordinate mean and std (ddof = 1) of the known rows
        rule = context.aggregator (with context.agg_state) | the plain mean
        X(tau) = the round's rows (full) | known rows standing in for the
                 honest ones (partial), malicious rows <- mu - tau * sigma
        y(tau) = ‖rule(X(tau)) - mu‖
        tau* = ByzFL's expansion / contraction search maximising y
               (start 0, delta 10, ratio 0.8, 20 evaluations; fljax._search),
               evaluated in waves of candidates: one vmapped call of the rule each
        every malicious row <- mu - tau* * sigma

    The row at scale ``tau`` is :func:`~fljax.attacks.alie`'s with ``z =
    tau`` (fljax's sign, ``mu - z sigma``, after Karimireddy et al.). ByzFL's
    ``Optimal_ALittleIsEnough`` sends ``mu + tau sigma``; with ``delta = -10``
    it visits the negated scales of this search and sends the same row
    (tested). The rule is run as the server runs it (its state, the round's
    example-count weights, global parameters and client ids), with the
    attack's key standing in for the server's (the attacker cannot know
    it); server transforms after the attack are not simulated. Cost:
    ``evals`` rule evaluations at ``lookahead = 1`` (the sequential search,
    the CPU default); otherwise a wave of ``lookahead`` expansion or
    ``2^lookahead - 1`` contraction candidates per ``lookahead`` steps, in
    ``lookahead``-fold fewer waves (each candidate of a wave holds an ``[n,
    d]`` copy). Measured on the 2-core CPU against the median at 100 x 100k
    (``benchmarks/attacks.py``): 0.60 s at lookahead 1, 1.62 s at 2 (31
    evaluations), ByzFL's loop 34 s. With fewer than two known rows, or
    no malicious row, there is nothing to search: the malicious clients send
    their honest updates and ``info['fallback']`` is True.

    Args:
      knowledge: ``'full'`` or ``'partial'`` (static).
      start: the first scale tried (a value; may be traced).
      delta: the first step (a value, non-zero; may be traced); its sign
        is the direction searched.
      ratio: the step's contraction factor (a value in ``(0.5, 1)``).
      evals: the search's evaluation budget (static, ``>= 1``).
      lookahead: loop steps per wave (static, 1 to 6; 0: by platform, 1 on CPU,
        2 elsewhere).

    Returns:
      An :class:`~fljax.attacks.base.UpdateAttack` with ``info = {'scale':
      float32[]`` (tau*, 0 on fallback), ``'objective': float32[]`` (``y(tau*)``, 0 on
      fallback),
      ``'evaluations': int32[]`` (candidates evaluated), ``'fallback': bool[]}``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> u = jnp.array([[0., 1.], [2., 1.], [4., 1.], [0., 0.]])
      >>> out, info = optimal_alie(evals=4).craft(u, jnp.array([False, False, False, True]), None)
      >>> float(info['scale'])  # against the mean: farther is always better
      70.0

    References:
      Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses
      For Distributed Learning", NeurIPS 2019; Allouah et al., "Fixing by
      Mixing", AISTATS 2023 (ByzFL's ``Optimal_ALittleIsEnough``).
    """

    def prepare(updates, valid, known, mu):
        del valid
        sigma = jnp.sqrt(_common.var_of(updates, known, mu, ddof=1))  # float[d]
        return lambda tau: mu - jnp.asarray(tau, mu.dtype) * sigma

    return _search.searched_attack("optimal_alie", prepare, 2, knowledge, start, delta, ratio,
                                   evals, lookahead)
