"""The adaptive attacks: optimal ALIE / IPM (ByzFL's line search against the
rule in use), Mimic and Inf.

The searched scale is checked against a plain loop over the same candidates
(``references.line_search_ref``, ByzFL's two phases written out, one NumPy
rule call per candidate) and against ByzFL's own ``Optimal_*`` classes; the
vectorised waves against the sequential loop for every lookahead. The table
checks of ``poisoning_test.py`` (benign rows bit-identical, no retrace on a
new mask, count or value, partial knowledge, fallbacks, non-finite rows, bad
values) cover these attacks too.
"""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators, attacks
from fljax.attacks import _search
from fljax.attacks.base import AttackContext
from tests.aggregators import references as agg_ref
from tests.attacks import references as ref

KEY = jax.random.PRNGKey(0)


def _problem(seed, n=15, d=12, c=4):
    """Honest-looking rows (a shared direction, per-client noise of mixed scale)."""
    rng = np.random.default_rng(seed)
    x = (0.5 * rng.normal(size=d)[None] + rng.normal(size=(n, d)) * rng.uniform(0.3, 2, (n, 1)))
    mal = np.zeros(n, bool)
    mal[rng.choice(n, c, replace=False)] = True
    return x.astype(np.float32).astype(np.float64), mal


# name -> (fljax rule, NumPy reference rule); f = 4 of n = 15.
RULES = {
    "mean": (lambda: aggregators.mean(weighted=False), agg_ref.mean_ref),
    "coordinate_median": (aggregators.coordinate_median, agg_ref.median_ref),
    "trimmed_mean": (lambda: aggregators.trimmed_mean(4), lambda x: agg_ref.trimmed_mean_ref(x, 4)),
    "krum": (lambda: aggregators.krum(4), lambda x: agg_ref.krum_ref(x, 4)),
    "geometric_median": (aggregators.geometric_median, agg_ref.geometric_median_ref),
}


@functools.lru_cache(maxsize=None)
def _jitted(name, knowledge, rule, lookahead=2, evals=20):
    """``craft`` jitted once per build, the rule passed in the context."""
    agg = None if rule is None else RULES[rule][0]()

    def run(u, m, k, delta):
        ctx = None if agg is None else AttackContext(aggregator=agg)
        built = attacks.UPDATE_ATTACKS[name](knowledge=knowledge, evals=evals,
                                             lookahead=lookahead, delta=delta)
        return built.craft(u, m, k, ctx)

    return jax.jit(run)


def _craft(name, x, mal, rule, knowledge="full", delta=10.0, **kw):
    out, info = _jitted(name, knowledge, rule, **kw)(jnp.asarray(x, jnp.float32),
                                                      jnp.asarray(mal), KEY, jnp.float32(delta))
    return np.asarray(out), {k: np.asarray(v) for k, v in info.items()}


# --------------------------------------------------------------------------- #
# The search alone.


def _bumpy(a, b, c):
    """A multi-modal objective with a plateau: both implementations evaluate
    it the same way up to float32 rounding of the positions."""
    def y(t):
        t = np.asarray(t, np.float64)
        return np.where(t > c, 1.0, np.sin(t / a) * np.exp(-t / b) + 1e-3 * t)
    return y


@pytest.mark.parametrize("lookahead", [1, 2, 3, 4])
@pytest.mark.parametrize("case", [0, 1, 2, 3] + [pytest.param(c, marks=pytest.mark.slow)
                                                 for c in range(4, 12)])
def test_waves_make_the_sequential_loops_decisions(case, lookahead):
    """Catches a wave that accepts a candidate the loop would not (ties, the
    first candidate, the step after a rejection, the tree's node order), or
    runs past the budget, for objectives that stop the expansion at once, in
    the middle, or never (budget), with both signs of delta."""
    rng = np.random.default_rng(case)
    a, b, c = rng.uniform(3, 300), rng.uniform(50, 5000), rng.uniform(100, 1e5)
    start, delta = float(rng.uniform(-20, 20)), float(rng.choice([-1, 1]) * rng.uniform(1, 30))
    evals = int(rng.integers(1, 25))
    y = _bumpy(a, b, c)
    want, want_y = ref.line_search_ref(y, start, delta, 0.8, evals)

    def evaluate(xs):
        return jax.pure_callback(lambda v: y(v).astype(np.float32),
                                 jax.ShapeDtypeStruct(xs.shape, jnp.float32), xs)

    res = jax.jit(lambda s, dl, r: _search.expansion_contraction(evaluate, s, dl, r, evals,
                                                                 lookahead))(start, delta, 0.8)
    assert float(res.scale) == pytest.approx(want, rel=1e-5, abs=1e-4)
    assert float(res.objective) == pytest.approx(float(want_y), rel=1e-5, abs=1e-6)
    if lookahead == 1:  # the sequential search: exactly its budget
        assert int(res.evaluations) == evals


def test_expansion_to_the_budget_and_a_stop_at_once():
    """Catches the budget case (always improving: the last candidate of the
    expansion) and an immediate stop (the start is best); a wave past the
    budget (``s[0] <= evals``: 22 evaluations reported) or a candidate past it
    accepted (``ks <= evals``), a contraction wave counted as ``L`` evaluations
    instead of its ``2^L - 1`` (``coef.shape[1]``)."""
    up = lambda xs: xs.astype(jnp.float32)  # noqa: E731
    res = jax.jit(lambda: _search.expansion_contraction(up, 0.0, 10.0, 0.8, 20, 2))()
    assert (float(res.scale), int(res.evaluations)) == (10.0 * (2 ** 19 - 1), 20)
    # An odd budget: the last wave's second candidate lies past it.
    res = jax.jit(lambda: _search.expansion_contraction(up, 0.0, 10.0, 0.8, 5, 2))()
    assert float(res.scale) == 10.0 * (2 ** 4 - 1)
    res = jax.jit(lambda: _search.expansion_contraction(lambda xs: -jnp.abs(xs), 0.0, 10.0, 0.8,
                                                        20, 3))()
    # one expansion wave of 3 (candidate 1 rejected), then the 18 steps left in
    # ceil(18 / 3) = 6 contraction waves of the tree's 7 nodes
    assert (float(res.scale), int(res.evaluations)) == (0.0, 3 + 6 * 7)


@pytest.mark.parametrize("lookahead", [3, 4])
def test_contraction_waves_take_every_pattern_of_steps(lookahead):
    """Two objectives of a place ``c``, at eight places each, which the waves
    must walk as the loop does. A cliff (growing up to ``c``, dropping past
    it): the contraction accepts exactly the shrinking steps that still fit
    below it, so the result depends on every step's size. A peak at ``c``: a
    step may overshoot it while still improving. A cliff with a pothole on
    an expansion point below ``c / 2``: the expansion stops far from the
    cliff, so several steps of one wave are accepted in a row (the deep
    nodes of the decision tree).

    Catches a wrong decision tree (``3 ** level`` nodes per level, ``p << i``
    or ``& 2`` for the bit of an earlier step, the node ``- p``, an outcome
    bit ``3 ** level`` or subtracted, a step past the budget taken in a wave
    (``level <= left``)), a wrong first contraction step (``/ ratio``), or
    powers of the ratio that are not powers: the bumpy objectives above
    rarely accept two contraction steps in one wave."""
    def cliff(t, c, h, xp=jnp):  # t below c, and not within 0.25 of h (xp: jnp or np)
        return xp.where((t < c) & (xp.abs(t - h) > 0.25), t, -1e9)

    objectives = {  # (jnp, float64 loop) objectives of the places c and h
        "cliff": (lambda xs, c, h: cliff(xs, c, -9.0), lambda t, c, h: cliff(t, c, -9.0, np)),
        "pothole": (cliff, lambda t, c, h: cliff(t, c, h, np)),
        "peak": (lambda xs, c, h: -jnp.abs(xs - c), lambda t, c, h: -abs(t - c))}
    for name, (y, y_ref) in objectives.items():
        search = jax.jit(lambda c, h: _search.expansion_contraction(
            lambda xs: y(xs, c, h), 0.0, 1.0, 0.8, 30, lookahead))
        for c in (20.3, 37.9, 11.1, 50.5, 26.0, 44.4, 5.7, 61.2):
            h = 2.0 ** np.floor(np.log2(c / 2 + 1)) - 1  # the last expansion point below c / 2
            want, _ = ref.line_search_ref(lambda t: float(y_ref(t, c, h)), 0.0, 1.0, 0.8, 30)
            got = float(search(jnp.float32(c), jnp.float32(h)).scale)
            assert got == pytest.approx(want, rel=1e-5), (name, c)


def test_defaults_are_byzfls_and_the_smallest_budget_runs():
    """The defaults are ByzFL's (start 0, delta 10, ratio 0.8, 20 evaluations;
    lookahead 0: by platform), ``evals=1`` is accepted and evaluates the start
    only, and a bool is not a budget.

    Catches: a changed default (``EVALS = 21``), ``evals < 2`` or ``evals <= 1``
    in the check, ``and`` for its first ``or`` (``evals=True`` or
    ``lookahead=True`` accepted), the largest lookahead refused (``<``), a
    ratio of 1 accepted (``<= 1``, ``< 2``)."""
    for make in (attacks.optimal_alie, attacks.optimal_ipm):
        params = inspect.signature(make).parameters
        assert {k: params[k].default for k in ("start", "delta", "ratio", "evals", "lookahead")} \
            == {"start": 0.0, "delta": 10.0, "ratio": 0.8, "evals": 20, "lookahead": 0}
        make(evals=1, lookahead=_search.MAX_LOOKAHEAD, ratio=0.999)
        for bad, match in (({"evals": True}, "evals=True must be"),
                           ({"lookahead": True}, "lookahead=True must be"),
                           ({"ratio": 1.0}, r"ratio=1.0 must be in \(0.5, 1\)")):
            with pytest.raises(ValueError, match=match):
                make(**bad)
    up = lambda xs: xs.astype(jnp.float32)  # noqa: E731
    res = jax.jit(lambda: _search.expansion_contraction(up, 0.0, 10.0, 0.8, 1, 1))()
    assert (float(res.scale), int(res.evaluations)) == (0.0, 1)


# --------------------------------------------------------------------------- #
# Optimal ALIE / IPM against the rule in use.


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("name,kind", [("optimal_alie", "alie"), ("optimal_ipm", "ipm")])
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_scale_equals_the_plain_loop_over_the_same_candidates(name, kind, rule, seed):
    """Catches a search that simulates another population (benign rows, the
    malicious rows' own updates), another rule than the context's, another
    objective (distance to another mean, squared), or another row (sign,
    ddof)."""
    x, mal = _problem(seed)
    tau, row = ref.optimal_ref(x, mal, kind, RULES[rule][1])
    out, info = _craft(name, x, mal, rule)
    assert not info["fallback"]
    np.testing.assert_array_equal(out[~mal], x.astype(np.float32)[~mal])
    if rule == "geometric_median":
        # Against the geometric median the distance creeps up by ~1e-8 per
        # doubling of the scale (the outliers' pull shrinks as 1/tau), below
        # float32's resolution, so the two searches may stop at different
        # scales of the same objective: compare the objectives.
        def y(t):
            z = x.copy()
            z[mal] = (x.mean(0) - t * x.std(0, ddof=1)) if kind == "alie" else -t * x.mean(0)
            return np.linalg.norm(RULES[rule][1](z) - x.mean(0))
        assert y(float(info["scale"])) == pytest.approx(y(tau), rel=1e-6)
        return
    assert float(info["scale"]) == pytest.approx(tau, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(out[mal], np.broadcast_to(row, out[mal].shape), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("name,kind", [("optimal_alie", "alie"), ("optimal_ipm", "ipm")])
def test_partial_knowledge_simulates_stand_ins(name, kind):
    """Catches a partial-knowledge search that reads the honest rows, or
    stands in for them otherwise than documented (known rows in turn)."""
    x, mal = _problem(3)
    tau, row = ref.optimal_ref(x, mal, kind, RULES["trimmed_mean"][1], knowledge="partial")
    out, info = _craft(name, x, mal, "trimmed_mean", "partial")
    assert float(info["scale"]) == pytest.approx(tau, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(out[mal][0], row, rtol=1e-4, atol=1e-4)


def test_partial_population_is_the_known_rows_in_turn():
    """The rows a partial-knowledge attacker runs the rule on: the ``r``-th
    honest row is known row ``r mod m``, the malicious rows stay (and full
    knowledge sees the round's rows). Catches the rank taken among the
    malicious rows (``cumsum(malicious)``), one known row counted as two
    (``maximum(count, 2)``: an honest row of padding stands in)."""
    x = jnp.arange(8.0)[:, None] * jnp.array([1.0, 10.0])  # row i is (i, 10 i)
    mal = jnp.array([0, 1, 0, 0, 1, 0, 0, 1], bool)
    pop = _search.population(x, mal, mal, "partial")
    np.testing.assert_array_equal(np.asarray(pop), np.asarray(x)[[1, 1, 4, 7, 4, 1, 4, 7]])
    one = jnp.zeros(8, bool).at[4].set(True)  # one known row
    pop = _search.population(x, mal, one, "partial")
    np.testing.assert_array_equal(np.asarray(pop), np.asarray(x)[[4, 1, 4, 4, 4, 4, 4, 7]])
    assert _search.population(x, mal, mal, "full") is x


def test_a_round_without_attackers_reports_zeros():
    """No malicious row: the rows come back, and the info is a fallback with
    scale and objective 0 (not NaN or 1: the metrics average them per round)
    and no evaluation. Catches ``1.0`` for either zero."""
    x, _ = _problem(0)
    for name in ("optimal_ipm", "optimal_alie"):
        out, info = _craft(name, x, np.zeros(len(x), bool), "mean")
        np.testing.assert_array_equal(out, x.astype(np.float32))
        assert {k: float(v) for k, v in info.items()} == {
            "scale": 0.0, "objective": 0.0, "evaluations": 0.0, "fallback": 1.0}


def test_without_context_the_search_is_against_the_mean():
    """Catches another default rule: against the mean the distance grows with
    the scale, so the search ends at its last expansion candidate."""
    x, mal = _problem(0)
    _, info = _craft("optimal_ipm", x, mal, None)
    assert float(info["scale"]) == 10.0 * (2 ** 19 - 1)
    tau, _ = ref.optimal_ref(x, mal, "alie", agg_ref.mean_ref)
    _, info = _craft("optimal_alie", x, mal, None)
    assert float(info["scale"]) == pytest.approx(tau, rel=1e-6)


@pytest.mark.parametrize("lookahead", [1, 3])
def test_lookahead_changes_the_cost_not_the_scale(lookahead):
    """Catches waves that change the result with their width."""
    x, mal = _problem(1)
    _, base = _craft("optimal_alie", x, mal, "coordinate_median")  # lookahead 2
    _, info = _craft("optimal_alie", x, mal, "coordinate_median", lookahead=lookahead)
    assert float(info["scale"]) == float(base["scale"])
    if lookahead == 1:
        assert int(info["evaluations"]) == 20 < int(base["evaluations"])
    assert _search.resolve_lookahead(0) == (1 if jax.default_backend() == "cpu" else 2)


def test_the_rules_state_weights_and_parameters_reach_the_search():
    """The attack runs the rule as the server would: with example-count
    weights a weighted mean moves, and the state / parameters are passed.

    Catches a context whose weights (or parameters) are dropped: CRFL
    without parameters raises; a weighted mean with a near-zero weight on
    the malicious rows keeps the search's distance near its start. Also a
    default rule that takes the context's weights (``mean(weighted=True)``),
    a missing state not initialised (``state is not None``, ``= None``)."""
    x, mal = _problem(0)
    u, m = jnp.asarray(x, jnp.float32), jnp.asarray(mal)
    d = x.shape[1]
    crfl = aggregators.crfl(clip=1.0, sigma=0.0)
    info = jax.jit(lambda: attacks.optimal_ipm(evals=6).craft(u, m, KEY, AttackContext(
        aggregator=crfl, agg_state=crfl.init(d), params=jnp.zeros(d)))[1])()
    assert not info["fallback"]
    wm = aggregators.mean(weighted=True)
    craft = jax.jit(lambda w: attacks.optimal_ipm(evals=3).craft(
        u, m, KEY, AttackContext(aggregator=wm, weights=w))[1])
    light = craft(jnp.where(m, 1e-6, 1.0))
    heavy = craft(jnp.ones(len(x)))
    # The malicious rows weigh nothing: the aggregate stays the benign rows' mean.
    far = np.linalg.norm(x[~mal].mean(0) - x.mean(0))
    assert float(light["objective"]) == pytest.approx(far, rel=1e-3)
    assert float(heavy["objective"]) > 10 * far
    # Weights but no rule: the unweighted mean (the weights are the server's rule's to use).
    alone = jax.jit(lambda w: attacks.optimal_ipm(evals=3).craft(
        u, m, KEY, AttackContext(weights=w))[1])(jnp.where(m, 1e-6, 1.0))
    assert float(alone["objective"]) == float(heavy["objective"])
    # A rule without its state: the attack starts it from init (CRFL counts rounds).
    bare = jax.jit(lambda: attacks.optimal_ipm(evals=6).craft(u, m, KEY, AttackContext(
        aggregator=crfl, params=jnp.zeros(d)))[1])()
    assert float(bare["scale"]) == float(info["scale"])


def test_a_randomised_rule_is_simulated_with_the_attacks_key():
    """The rule the attack simulates draws from the attack's key (CRFL's
    noise): other keys, other objectives; no key is key 0. Catches the key
    ignored when given (``key is not None``: always key 0) or another default
    (``PRNGKey(1)``)."""
    x, mal = _problem(0)
    u, m = jnp.asarray(x, jnp.float32), jnp.asarray(mal)
    d = x.shape[1]
    crfl = aggregators.crfl(clip=1.0, sigma=0.5)
    ctx = AttackContext(aggregator=crfl, agg_state=crfl.init(d), params=jnp.zeros(d))
    craft = attacks.optimal_ipm(evals=4).craft
    run = jax.jit(lambda k: craft(u, m, k, ctx)[1]["objective"])
    objectives = {float(run(jax.random.PRNGKey(s))) for s in range(3)}
    assert len(objectives) == 3
    none = jax.jit(lambda: craft(u, m, None, ctx)[1]["objective"])()
    assert float(none) == float(run(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def byzfl_attacks():
    import importlib.util

    pytest.importorskip("torch")
    if importlib.util.find_spec("byzfl") is None:  # (importing the package needs torchvision)
        pytest.skip("byzfl is not installed")
    from benchmarks.aggregators import _import_byzfl_aggregators

    bz = _import_byzfl_aggregators()
    import importlib

    return bz, importlib.import_module("byzfl.attacks.attacks")


@pytest.mark.parametrize("rule,peer", [("mean", "Average"), ("coordinate_median", "Median"),
                                       ("trimmed_mean", "TrMean")])
@pytest.mark.parametrize("seed", [0, 2])
def test_equals_byzfl(byzfl_attacks, rule, peer, seed):
    """ByzFL's ``Optimal_ALittleIsEnough`` (with delta = -10: its ``mu + tau
    sigma`` is fljax's ``mu - tau sigma`` at the negated scale) and
    ``Optimal_InnerProductManipulation`` on the honest rows, with the same
    rule and no pre-aggregation, send the same row.

    The malicious clients' own updates are NaN, so the rows fljax learns
    from are exactly ByzFL's honest vectors (ByzFL's attackers have none);
    they come last, as ByzFL appends its Byzantine vectors."""
    bz, byz = byzfl_attacks
    x, _ = _problem(seed)
    c = 4
    mal = np.arange(len(x)) >= len(x) - c
    x[mal] = np.nan
    honest = x[~mal]
    agg = getattr(bz, peer)(**({"f": c} if peer == "TrMean" else {}))
    alie = byz.Optimal_ALittleIsEnough(agg=agg, pre_agg_list=[], f=c, delta=-10.0)(honest)
    ipm = byz.Optimal_InnerProductManipulation(agg=agg, pre_agg_list=[], f=c)(honest)
    out, _ = _craft("optimal_alie", x, mal, rule)
    np.testing.assert_allclose(out[mal][0], alie, rtol=1e-4, atol=1e-4)
    out, _ = _craft("optimal_ipm", x, mal, rule)
    np.testing.assert_allclose(out[mal][0], ipm, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- #
# Mimic and Inf.


@pytest.mark.parametrize("knowledge", ["full", "partial"])
@pytest.mark.parametrize("target,epsilon,iters", [("index", 0, 1), ("index", 3, 1),
                                                  ("index", 13, 1), ("direction", 0, 1),
                                                  ("direction", 0, 5)])
@pytest.mark.parametrize("seed", [0] + [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2)])
def test_mimic_copies_the_reference_row(seed, target, epsilon, iters, knowledge):
    """Catches a rank counted over the wrong rows (malicious or non-finite
    ones, or not wrapping), a power step without centring, or the argmin."""
    x, mal = _problem(seed)
    x[np.flatnonzero(~mal)[1], 2] = np.inf  # never a target
    z0 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (x.shape[1],), jnp.float32))
    want = ref.mimic_ref(x, mal, target, epsilon, iters, z0, knowledge)
    attack = attacks.mimic(target, epsilon, iters, knowledge)
    out, info = jax.jit(attack.craft)(jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    assert int(info["target"]) == want and not info["fallback"]
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(out)[mal], np.broadcast_to(x32[want], (mal.sum(),
                                                                                     x.shape[1])))
    np.testing.assert_array_equal(np.asarray(out)[~mal], x32[~mal])


def test_mimic_direction_picks_the_extreme_along_the_spread():
    """On rows spread along one direction, the heuristic copies an extreme row
    along it (the sign of a principal direction is arbitrary)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=50)
    a = rng.uniform(-3, 3, 12)
    x = a[:, None] * v[None] + 0.01 * rng.normal(size=(12, 50))
    mal = np.zeros(12, bool)
    mal[:3] = True
    _, info = jax.jit(attacks.mimic("direction").craft)(jnp.asarray(x, jnp.float32),
                                                        jnp.asarray(mal), KEY)
    assert int(info["target"]) in (3 + np.argmax(a[3:]), 3 + np.argmin(a[3:]))


@pytest.mark.parametrize("iters", [1, 3])
def test_mimic_direction_centres_rows_far_from_the_origin(iters):
    """Rows with a large common part (models near the global model) spread
    along two directions: the power steps run on the centred rows, as the
    reference's. (Each step centres twice, in ``w`` and in ``z``; either alone
    suffices, so a mutant of one of them is equivalent.) A round with no
    finite honest row falls back with target -1. Catches another fallback
    target (``+1``, ``-2``)."""
    rng = np.random.default_rng(4)
    c, v, w = rng.normal(size=(3, 40))
    a, b = rng.uniform(-3, 3, 14), rng.uniform(-1, 1, 14)
    x = 20 * c + a[:, None] * v + b[:, None] * w + 0.01 * rng.normal(size=(14, 40))
    mal = np.zeros(14, bool)
    mal[[0, 5, 9]] = True
    z0 = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (40,), jnp.float32))
    craft = jax.jit(attacks.mimic("direction", iters=iters).craft)
    _, info = craft(jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    assert int(info["target"]) == ref.mimic_ref(x, mal, "direction", 0, iters, z0)
    x[~mal] = np.nan
    out, info = craft(jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    assert int(info["target"]) == -1 and bool(info["fallback"])


def test_mimic_defaults_checks_and_a_pool_of_one():
    """The defaults (the first honest row by index, one power step, full
    knowledge); bools are not counts and bad values name the attack; with
    one honest finite row every rank is that row. Catches changed defaults
    (``epsilon=1``, ``iters=2``), ``and`` for ``or`` in the checks, the name
    left out of a message, a pool of one counted as two (``maximum(m, 2)``:
    no row has rank 1, and row 0 is copied)."""
    params = inspect.signature(attacks.mimic).parameters
    assert {k: p.default for k, p in params.items()} == {
        "target": "index", "epsilon": 0, "iters": 1, "knowledge": "full"}
    for kwargs, match in (({"epsilon": True}, "epsilon=True must be an integer >= 0"),
                          ({"iters": True}, "iters=True must be an integer >= 1"),
                          ({"knowledge": "some"}, "knowledge='some' must be one of")):
        with pytest.raises(ValueError, match="^mimic: " + re.escape(match)):
            attacks.mimic(**kwargs)
    x, _ = _problem(0, n=6)
    x[1:4] = np.nan  # one finite honest row (4); rows 0 and 5 malicious
    mal = np.array([True, False, False, False, False, True])
    out, info = jax.jit(lambda u: attacks.mimic(epsilon=1).craft(u, jnp.asarray(mal), KEY))(
        jnp.asarray(x, jnp.float32))
    assert int(info["target"]) == 4
    np.testing.assert_array_equal(np.asarray(out)[[0, 5]], np.asarray(x, np.float32)[[4, 4]])


def test_partial_searches_need_one_known_row_for_ipm_and_two_for_alie():
    """As the plain attacks: optimal IPM learns from one known row, optimal
    ALIE needs two (a spread). Catches the thresholds raised (1 -> 2, 2 -> 3),
    which turn these attackers honest."""
    x, _ = _problem(0)
    one = np.zeros(len(x), bool)
    one[3] = True
    assert not _craft("optimal_ipm", x, one, "mean", "partial")[1]["fallback"]
    assert _craft("optimal_alie", x, one, "mean", "partial")[1]["fallback"]
    two = one.copy()
    two[5] = True
    assert not _craft("optimal_alie", x, two, "mean", "partial")[1]["fallback"]


def test_inf_rows_and_every_robust_rule_screens_them():
    """Catches an Inf attack that touches benign rows, and a rule that lets
    an infinite row through (the aggregate must equal the rule on the honest
    rows alone for the rules that screen by dropping rows)."""
    x, mal = _problem(0)
    u = jnp.asarray(x, jnp.float32)
    names = ("mean", "coordinate_median", "trimmed_mean", "krum", "geometric_median")
    rules = [RULES[name][0]() for name in names]
    aggregate = jax.jit(lambda rows: [r.aggregate(rows, r.init(x.shape[1]), KEY)[0]
                                      for r in rules])
    for sign in (1, -1):
        out = np.asarray(attacks.inf(sign)(u, jnp.asarray(mal), KEY))
        assert np.all(out[mal] == sign * np.inf)
        np.testing.assert_array_equal(out[~mal], x.astype(np.float32)[~mal])
        aggs = [np.asarray(a) for a in aggregate(jnp.asarray(out))]
        for name, agg in zip(names, aggs):
            assert np.all(np.isfinite(agg)), name
        np.testing.assert_allclose(aggs[0], x[~mal].mean(0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Through the simulator.


def _round(*assignments, malicious=20):
    from tests.simulate_test import run_rounds, small_cfg

    cfg = small_cfg("clients_per_round=10", f"attack.num_malicious={malicious}", *assignments)
    state, info, _ = run_rounds(cfg, 1)
    return state, info


@pytest.mark.parametrize("name", [pytest.param("optimal_alie", marks=pytest.mark.slow),
                                  "optimal_ipm"])
def test_search_in_the_round_is_against_the_servers_rule(name):
    """By name in a config, the search sees the server's rule: against the
    (weighted) mean the distance grows with the scale up to the budget's
    last candidate; against the median (of 10 rows, fewer than half
    malicious) it does not. The malicious rows
    carry the crafted row, the benign ones their norms.

    Catches a round that builds the attack context without the rule (the
    search would run against the plain mean under both servers)."""
    scales = {}
    for rule in ("mean", "coordinate_median"):
        state, info = _round(f"attack.name={name!r}", "attack.kwargs={'evals': 8}",
                             f"aggregator={{'name': {rule!r}, 'kwargs': {{}}}}", malicious=12)
        mal = np.asarray(info.malicious)
        assert 0 < mal.sum() < 5 and not bool(info.attack_info["fallback"])
        norms = np.asarray(info.update_norms)[mal]
        np.testing.assert_allclose(norms, norms[0], rtol=1e-6)  # one crafted row
        assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(state.params))
        scales[rule] = float(info.attack_info["scale"])
    assert scales["mean"] == 10.0 * (2 ** 7 - 1)
    assert scales["coordinate_median"] < scales["mean"]


def test_mimic_and_inf_in_the_round():
    """Mimic's rows carry the target's norm; Inf's rows are infinite and the
    robust rule (and the mean, which screens them) keeps the model finite."""
    _, info = _round("attack.name='mimic'")
    mal = np.asarray(info.malicious)
    norms = np.asarray(info.update_norms)
    target = int(info.attack_info["target"])
    assert not mal[target] and mal.sum() > 0
    np.testing.assert_allclose(norms[mal], norms[target], rtol=1e-6)
    for rule in ("mean", "coordinate_median"):
        state, info = _round("attack.name='inf'",
                             f"aggregator={{'name': {rule!r}, 'kwargs': {{}}}}")
        mal = np.asarray(info.malicious)
        assert np.all(np.isinf(np.asarray(info.update_norms)[mal]))
        assert np.all(np.isfinite(np.asarray(info.update_norms)[~mal]))
        assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(state.params))
