"""ByzFL's expansion / contraction line search over an attack's scale, in vectorised waves.

ByzFL's ``Optimal_ALittleIsEnough`` and ``Optimal_InnerProductManipulation``
pick the scale ``tau`` of their attack that maximises ``y(tau) = ‖rule(rows
with the attackers' rows at scale tau) − honest mean‖`` by a sequential search
of ``evals`` evaluations (defaults ``start = 0, delta = 10, ratio = 0.8,
evals = 20``)::

    best_x, best_y = start, y(start);  left = evals - 1
    while left > 0:                               # expansion
        x = best_x + delta;  left -= 1
        if y(x) > best_y: best_x, best_y = x, y(x); delta *= 2
        else: delta *= ratio; break
    while left > 0:                               # contraction
        x = best_x + delta;  left -= 1
        if y(x) > best_y: best_x, best_y = x, y(x)
        delta *= ratio
    return best_x

:func:`expansion_contraction` makes exactly these decisions (the same
candidates, the same comparisons, ``>`` so ties and NaN never win), but
evaluates ``y`` on a batch of candidates at once (one vmapped call of the rule
per wave), ``lookahead`` steps of the loop per wave:

* expansion: the candidates of the next ``L`` steps are fixed in advance
  (``start + delta (2^k − 1)``, the loop's positions while it keeps
  improving), so a wave is ``L`` candidates and the first non-improving one
  ends the phase;
* contraction: step ``l`` of a wave proposes ``b + Σ_{i<l} a_i D r^i + D
  r^l`` for the accept / reject outcomes ``a_i`` of the steps before it, so a
  wave is the ``2^L − 1`` nodes of that decision tree; walking the tree with
  the wave's values picks the path the loop would take.

``L = 1`` is the sequential loop (``evals`` evaluations in ``evals`` waves);
larger ``L`` trades evaluations for fewer, wider waves (an accelerator may
run a wave of a few candidates in about the time of one; the CPU does not:
``L = 0``, the default, is 1 there, see :data:`AUTO_LOOKAHEAD`).
Evaluations beyond the budget in the last wave are computed and ignored.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# ByzFL's defaults (Optimal_ALittleIsEnough / Optimal_InnerProductManipulation).
EVALS = 20
START = 0.0
DELTA = 10.0
RATIO = 0.8
MAX_LOOKAHEAD = 6  # a contraction wave of 2^6 - 1 = 63 candidates at most
# lookahead = 0 picks by platform: on the 2-core CPU one candidate per wave
# was fastest (optimal_alie against the median, 100 x 100k: 0.60 s at
# lookahead 1, 20 evaluations; 1.62 s at 2, 31 evaluations; load 12);
# elsewhere waves of 2 steps (not measured on an accelerator).
AUTO_LOOKAHEAD = {"cpu": 1}
AUTO_LOOKAHEAD_ELSE = 2


def resolve_lookahead(lookahead: int) -> int:
    """``lookahead``, or for 0 the platform's default (:data:`AUTO_LOOKAHEAD`)."""
    if lookahead:
        return lookahead
    return AUTO_LOOKAHEAD.get(jax.default_backend(), AUTO_LOOKAHEAD_ELSE)


class SearchResult(NamedTuple):
    scale: jax.Array  # float32[]: the best tau
    objective: jax.Array  # float32[]: y(scale)
    evaluations: jax.Array  # int32[]: candidates evaluated (waves x width)


def check_search(name: str, evals: int, lookahead: int, start, delta, ratio) -> None:
    """One-line errors for a search that cannot run (values checked when numbers)."""
    from fljax.attacks.base import is_number

    if not isinstance(evals, int) or isinstance(evals, bool) or evals < 1:
        raise ValueError(f"{name}: evals={evals!r} must be an integer >= 1 (ByzFL: 20)")
    if (not isinstance(lookahead, int) or isinstance(lookahead, bool)
            or not 0 <= lookahead <= MAX_LOOKAHEAD):
        raise ValueError(f"{name}: lookahead={lookahead!r} must be an integer in "
                         f"[0, {MAX_LOOKAHEAD}] (1: the sequential search, 0: by platform)")
    if is_number(start) and not np.isfinite(start):
        raise ValueError(f"{name}: start={start} must be finite")
    if is_number(delta) and not (np.isfinite(delta) and delta != 0):
        raise ValueError(f"{name}: delta={delta} must be finite and non-zero (ByzFL: 10.0)")
    if is_number(ratio) and not 0.5 < ratio < 1:
        raise ValueError(f"{name}: ratio={ratio} must be in (0.5, 1), both excluded (ByzFL: 0.8)")


def _tree(lookahead: int) -> np.ndarray:
    """``float[2^L − 1, L]`` static: node ``2^l − 1 + p`` (level ``l``, earlier
    outcomes ``p``, bit ``i`` = step ``i`` accepted) proposes ``b + D Σ_i
    coef[node, i] r^i``."""
    rows = []
    for level in range(lookahead):
        for p in range(2 ** level):
            coef = [float((p >> i) & 1) for i in range(level)] + [1.0]
            rows.append(coef + [0.0] * (lookahead - level - 1))
    return np.asarray(rows, np.float32)


def expansion_contraction(evaluate: Callable[[jax.Array], jax.Array], start, delta, ratio,
                          evals: int, lookahead: int) -> SearchResult:
    """ByzFL's search (module docstring) in waves of candidates.

    Args:
      evaluate: ``float32[W] -> float32[W]``, the objective of each candidate
        scale (one vmapped call of the rule); ``W`` is ``lookahead`` in the
        expansion and ``2^lookahead − 1`` in the contraction.
      start, delta, ratio: the search's values (may be traced).
      evals: the evaluation budget of the sequential search (static).
      lookahead: loop steps per wave (static, ``>= 1``; 0: by platform,
        :func:`resolve_lookahead`).

    Returns:
      :class:`SearchResult`.
    """
    f32 = jnp.float32
    start, delta, ratio = (jnp.asarray(v, f32) for v in (start, delta, ratio))
    L = resolve_lookahead(lookahead)

    # Expansion: candidate k is start + delta (2^k - 1), accepted while improving.
    def exp_cond(s):  # not ended, and budget left for the next candidate
        return ~s[3] & (s[0] < evals)

    def exp_body(s):
        k0, best_x, best_y, _, stop_k, used = s
        ks = k0 + jnp.arange(L, dtype=jnp.int32)
        xs = start + delta * (jnp.ldexp(jnp.ones((L,), f32), ks) - 1.0)  # float32[L], exact 2^k
        ys = evaluate(xs)
        prev = jnp.concatenate([best_y[None], ys[:-1]])
        ok = ((ks == 0) | (ys > prev)) & (ks < evals)
        fail = ~ok
        done = jnp.any(fail)
        j = jnp.where(done, jnp.argmax(fail), L)  # candidates ks[:j] accepted
        last = jnp.maximum(j - 1, 0)
        best_x = jnp.where(j > 0, xs[last], best_x)
        best_y = jnp.where(j > 0, ys[last], best_y)
        stop_k = jnp.where(done, ks[jnp.minimum(j, L - 1)], stop_k)
        return k0 + L, best_x, best_y, done, stop_k, used + L

    zero_i = jnp.zeros((), jnp.int32)
    init = (zero_i, start, jnp.asarray(-jnp.inf, f32), jnp.zeros((), bool),
            jnp.asarray(evals, jnp.int32), zero_i)
    _, best_x, best_y, _, stop_k, used = lax.while_loop(exp_cond, exp_body, init)
    # stop_k < evals: candidate stop_k was rejected (it used an evaluation);
    # stop_k == evals: the budget ran out while improving.
    rejected = stop_k < evals
    left = jnp.where(rejected, evals - stop_k - 1, 0).astype(jnp.int32)
    step = delta * jnp.ldexp(jnp.ones((), f32), jnp.maximum(stop_k - 1, 0)) * ratio

    # Contraction: waves of the 2^L - 1 nodes of the next L steps' decision tree.
    coef = jnp.asarray(_tree(L))  # float32[W, L]
    powers = ratio ** jnp.arange(L, dtype=f32)  # r^0 .. r^(L-1)

    def con_cond(s):
        return s[3] > 0

    def con_body(s):
        b, by, dd, left, used = s
        xs = b + dd * jnp.matmul(coef, powers, precision=lax.Precision.HIGHEST)  # float32[W]
        ys = evaluate(xs)
        p = 0 * left
        for level in range(L):  # walk the tree (static, L steps)
            node = (2 ** level - 1) + p
            y, x = ys[node], xs[node]
            take = (level < left) & (y > by)
            b = jnp.where(take, x, b)
            by = jnp.where(take, y, by)
            p = p + jnp.where(take, 2 ** level, 0)
        return b, by, dd * ratio ** L, left - L, used + coef.shape[0]

    best_x, best_y, _, _, used = lax.while_loop(
        con_cond, con_body, (best_x, best_y, step, left, used))
    return SearchResult(best_x, best_y, used)


def distance(v: jax.Array) -> jax.Array:
    """``‖v‖`` without overflow (the largest entry factored out); ``inf`` if an
    entry is infinite, NaN if one is NaN (such an aggregate never wins a
    comparison against NaN, and infinitely far wins, as in ByzFL)."""
    m = jnp.max(jnp.abs(v))
    safe = jnp.isfinite(m) & (m > 0)
    scaled = v / jnp.where(safe, m, 1.0)
    return jnp.where(safe, m * jnp.sqrt(jnp.sum(jnp.square(scaled))), m)


# --------------------------------------------------------------------------- #
# An attack whose malicious rows are one row ``make(tau)``, searched against the rule.


def rule_in_use(context, dim: int):
    """``(rule, state, AggregationContext)`` the attack simulates: the server's
    rule and state from ``context`` when given, else the unweighted mean."""
    from fljax.aggregators import mean
    from fljax.aggregators.base import AggregationContext

    if context is not None and context.aggregator is not None:
        rule, state = context.aggregator, context.agg_state
    else:
        rule, state = mean(weighted=False), None
    if state is None:
        state = rule.init(dim)
    actx = None
    if context is not None:
        actx = AggregationContext(weights=context.weights, params=context.params,
                                  client_ids=context.client_ids)
    return rule, state, actx


def population(updates: jax.Array, malicious: jax.Array, known: jax.Array,
               knowledge: str) -> jax.Array:
    """``float[n, d]``: the rows the attacker runs the rule on (its own rows are
    then set to the candidate). Full knowledge: the round's rows. Partial: the
    honest rows it cannot see are stood in for by the known rows (its own
    clients' honest updates) in turn: the ``r``-th honest row by known row
    ``r mod m``, so the rule still sees ``n`` rows (one gather of ``[n, d]``)."""
    if knowledge == "full":
        return updates
    from fljax.attacks import _common

    n = updates.shape[0]
    idx = jnp.nonzero(known, size=n, fill_value=0)[0]  # int[n], known rows first
    m = jnp.maximum(_common.count(known), 1)
    rank = jnp.cumsum((~malicious).astype(jnp.int32)) - 1  # rank among honest rows
    src = jnp.where(malicious, jnp.arange(n), idx[jnp.mod(rank, m)])
    return updates[src]


def searched_attack(name: str, prepare, min_known: int, knowledge: str, start, delta, ratio,
                    evals: int, lookahead: int):
    """The craft of optimal ALIE / IPM.

    Args:
      prepare: ``(updates, valid, known, mu) -> make`` with ``make(tau) ->
        float[d]`` the attackers' row at scale ``tau`` (traced).
      min_known: known rows the attack needs (fewer: fallback).
      The rest: as the factories'.
    """
    from fljax.attacks import _common
    from fljax.attacks.base import UpdateAttack, check_knowledge

    check_knowledge(name, knowledge)
    check_search(name, evals, lookahead, start, delta, ratio)

    def craft(updates, malicious, key, context=None):
        n, d = updates.shape
        f32 = jnp.float32
        valid, known = _common.known_rows(updates, malicious, knowledge)
        mu = _common.mean_of(updates, valid, known)  # float[d]
        make = prepare(updates, valid, known, mu)
        rule, state, actx = rule_in_use(context, d)
        base = population(updates, malicious, known, knowledge)  # float[n, d]
        rkey = jax.random.PRNGKey(0) if key is None else key
        mu32 = mu.astype(f32)

        def objective(taus):  # float32[W] -> float32[W]
            def one(tau):
                rows = jnp.where(malicious[:, None], make(tau).astype(updates.dtype)[None], base)
                agg = rule.aggregate(rows, state, rkey, actx)[0]  # float[d]
                return distance(agg.astype(f32) - mu32)

            return jax.vmap(one)(taus)

        can = _common.can_learn(malicious, known, min_known)

        def run():
            return expansion_contraction(objective, start, delta, ratio, evals, lookahead)

        def skip():  # no attacker in this round, or nothing to learn from
            return SearchResult(jnp.asarray(start, f32), jnp.asarray(jnp.nan, f32),
                                jnp.zeros((), jnp.int32))

        res = lax.cond(can, run, skip)
        crafted = make(res.scale)  # float[d]
        ok = can & _common.all_finite(crafted)
        out = _common.replace_rows(updates, malicious, crafted, ok)
        info = {"scale": jnp.where(ok, res.scale, 0.0),
                "objective": jnp.where(ok, res.objective, 0.0),  # 0, not NaN: averaged per round
                "evaluations": res.evaluations, "fallback": ~ok}
        return out, info

    return UpdateAttack(craft)
