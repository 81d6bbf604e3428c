"""Untargeted model-poisoning attacks (Fang, ALIE, IPM, Min-Max / Min-Sum, scaling).

Each attack is checked against a NumPy reference that follows its paper
literally (``references.py``): Fang's lambda against the sequential halving
search with the real Krum scores, Shejwalkar's gamma against the reference
code's bisection, ALIE's z against the notes' table. Every test docstring
names the bug it catches.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators, attacks
from fljax.attacks import _common
from fljax.attacks.alie import alie_z
from tests.attacks import references as ref

KEY = jax.random.PRNGKey(0)


def _problem(seed, n=20, d=30, c=4, loc=0.5):
    """Rows of mixed scale around a common offset; ``c`` random malicious rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc, 1.0, (n, d)) * rng.uniform(0.2, 3, (n, 1))
    mal = np.zeros(n, bool)
    mal[rng.choice(n, c, replace=False)] = True
    return x, mal


# Every update attack with a build that crafts (no fallback) on _problem(8).
# name -> (factory kwargs, the value argument passed traced, another value)
TABLE = {
    "sign_flip": ({"scale": 2.0}, "scale", 3.0),
    "gaussian": ({"stddev": 2.0}, "stddev", 1.0),
    "scaling": ({"factor": 5.0}, "factor", 2.0),
    "ipm": ({"epsilon": 0.5}, "epsilon", 2.0),
    "alie": ({"z": 1.0}, "z", 0.5),
    "min_max": ({"cap": 50.0}, "cap", 5.0),
    "min_sum": ({"cap": 50.0}, "cap", 5.0),
    "fang_trimmed_mean": ({"b": 2.0}, "b", 3.0),
    "fang_krum": ({"num_byzantine": 4, "jitter": 1e-5}, "jitter", 1e-3),
    "optimal_alie": ({"evals": 8, "delta": 10.0}, "delta", 5.0),
    "optimal_ipm": ({"evals": 8, "delta": 10.0}, "delta", 5.0),
    "mimic": ({"epsilon": 2}, None, None),  # no value argument
    "inf": ({}, None, None),
}
KNOWLEDGE = ["ipm", "alie", "min_max", "min_sum", "fang_trimmed_mean", "fang_krum",
             "optimal_alie", "optimal_ipm", "mimic"]
CASES = [(name, "full") for name in TABLE] + [(name, "partial") for name in KNOWLEDGE]
TRACES = {}  # jit cache key -> number of traces so far


@functools.lru_cache(maxsize=None)
def _jitted(name, knowledge, static, with_value):
    """``craft`` jitted once per build (the table's value argument traced), so
    that the tests share compilations; counts its traces in ``TRACES``."""
    value_name = TABLE[name][1]
    cache_key = (name, knowledge, static, with_value)

    def run(u, m, k, value):
        TRACES[cache_key] = TRACES.get(cache_key, 0) + 1
        kwargs = dict(static)
        if with_value:
            kwargs[value_name] = value
        if name in KNOWLEDGE:
            kwargs["knowledge"] = knowledge
        return attacks.UPDATE_ATTACKS[name](**kwargs).craft(u, m, k, None)

    return jax.jit(run), cache_key


def _craft(name, x, mal, knowledge="full", key=KEY, **over):
    """``(out, info)`` (NumPy) of ``name``'s attack built from the table's kwargs
    updated by ``over``; the value argument is traced (None: its default)."""
    kwargs = dict(TABLE[name][0], **over)
    value = kwargs.pop(TABLE[name][1], None)
    fn, _ = _jitted(name, knowledge, tuple(sorted(kwargs.items())), value is not None)
    out, info = fn(jnp.asarray(x, jnp.float32), jnp.asarray(mal), key,
                   jnp.float32(0 if value is None else value))
    return np.asarray(out), {k: np.asarray(v) for k, v in info.items()}


def test_every_update_attack_is_in_the_table():
    """Catches a new attack registered in UPDATE_ATTACKS without these checks."""
    assert set(TABLE) == set(attacks.UPDATE_ATTACKS)


@pytest.mark.parametrize("name,knowledge", CASES)
def test_benign_rows_bit_identical_and_malicious_rows_crafted(name, knowledge):
    """Catches an attack that touches (even rounds) a benign row, or silently
    falls back on a problem where it should craft."""
    x, mal = _problem(8)
    out, info = _craft(name, x, mal, knowledge)
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(out[~mal], x32[~mal])
    assert np.all(np.isfinite(out)) or name == "inf"
    assert not np.any(info.get("fallback", False))
    if (name, knowledge) == ("mimic", "partial"):  # one attacker's own row, copied by the others
        assert np.sum(np.any(out[mal] != x32[mal], axis=1)) == mal.sum() - 1
        return
    assert np.all(np.any(out[mal] != x32[mal], axis=1))


@pytest.mark.parametrize("name,knowledge,extra", [(n, k, {}) for n, k in CASES] + [
    ("mimic", "full", {"target": "direction"})])
def test_every_matrix_product_is_at_highest_precision(name, knowledge, extra):
    """As for the rules (``conformance_test.py``): every matrix product an
    attack traces runs at ``Precision.HIGHEST`` (a GPU's float32 default is
    TF32). Catches: ``_common.row_dots`` at the default precision, or a
    product beside it at the default (Min-Max's ``delta . mu`` minus the
    rows' products: a difference of near-equal terms)."""
    from tests.aggregators.conformance_test import _dot_precisions

    kwargs = dict(TABLE[name][0], **extra)
    if name in KNOWLEDGE:
        kwargs["knowledge"] = knowledge
    attack = attacks.UPDATE_ATTACKS[name](**kwargs)
    x, mal = _problem(8)
    jaxpr = jax.make_jaxpr(lambda u, m, k: attack.craft(u, m, k, None))(
        jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert [p for p in _dot_precisions(jaxpr.jaxpr) if p != highest] == []


@pytest.mark.parametrize("name,knowledge", CASES)
def test_no_retrace_on_new_mask_count_or_value(name, knowledge):
    """Catches Python control flow on the mask, its count or a value argument
    (each would retrace, i.e. recompile, per round or per sweep point)."""
    x, mal = _problem(8)
    other = TABLE[name][2]
    out, _ = _craft(name, x, mal, knowledge)
    _, cache_key = _jitted(name, knowledge, tuple(sorted(
        (k, v) for k, v in TABLE[name][0].items() if k != TABLE[name][1])),
        TABLE[name][1] is not None)
    before = TRACES[cache_key]
    _craft(name, x, np.roll(mal, 1), knowledge)  # another mask
    more = mal.copy()
    more[np.flatnonzero(~mal)[:2]] = True
    _craft(name, x, more, knowledge)  # another number of malicious rows
    if TABLE[name][1] is None:  # no value argument
        assert TRACES[cache_key] == before == 1
        return
    second, _ = _craft(name, x, mal, knowledge, **{TABLE[name][1]: other})  # another value
    assert TRACES[cache_key] == before == 1
    # (fang_krum's jitter is below float32 resolution here; partial Fang
    # trimmed mean does not use b.)
    if (name, knowledge) not in (("fang_krum", "full"), ("fang_krum", "partial"),
                                 ("fang_trimmed_mean", "partial")):
        assert np.any(second != out)


# --------------------------------------------------------------------------- #
# Fang et al., attack on Krum.


@pytest.mark.parametrize("seed", [8, 9, 11, 0, 2])
@pytest.mark.parametrize("knowledge", ["full", "partial"])
def test_fang_krum_lambda_equals_the_sequential_search(seed, knowledge):
    """Catches a batched search that disagrees with the paper's loop (a wrong
    neighbour count, ties counted as wins, an off-by-one in the halvings, the
    bound's m - 2c - 1) on problems that succeed after 3-12 halvings and on
    ones where the attacker gives up."""
    x, mal = _problem(seed)
    lam, lam_max, halvings = ref.fang_krum_ref(x, mal, 4, knowledge)
    out, info = _craft("fang_krum", x, mal, knowledge, jitter=0.0)
    np.testing.assert_allclose(info["lambda_max"], lam_max, rtol=1e-5)
    assert int(info["halvings"]) == halvings
    np.testing.assert_allclose(info["lambda"], lam, rtol=1e-5)
    assert bool(info["fallback"]) == (halvings < 0)
    if halvings < 0:  # gave up: the honest updates go out
        np.testing.assert_array_equal(out, x.astype(np.float32))
    else:
        s = np.sign((x if knowledge == "full" else x[mal]).mean(0))
        np.testing.assert_allclose(out[mal], np.broadcast_to(-lam * s, out[mal].shape), rtol=1e-5)


_KRUM4 = jax.jit(aggregators.krum(4).aggregate)


@pytest.mark.parametrize("seed", [8, 9, 10, 11])
def test_fang_krum_makes_krum_select_a_crafted_row(seed):
    """Catches a lambda that the simulated Krum accepts but fljax's real Krum
    (Gram distances, random tie-break) does not, e.g. a scoring mismatch."""
    x, mal = _problem(seed)
    out, info = _craft("fang_krum", x, mal)
    assert not info["fallback"] and info["halvings"] >= 1
    for k in range(3):  # several tie-break keys
        picked = int(_KRUM4(jnp.asarray(out), (), jax.random.PRNGKey(k))[2]["index"])
        assert mal[picked], picked


def test_fang_krum_supporters_are_within_the_jitter():
    """Catches supporters placed outside jitter/d of the crafted row, or a
    jitter on the first (exact) crafted row."""
    x, mal = _problem(8)
    out, info = _craft("fang_krum", x, mal, jitter=1.0)
    d = x.shape[1]
    lam = float(info["lambda"])
    s = np.sign(x.mean(0))
    rows = np.flatnonzero(mal)
    np.testing.assert_array_equal(out[rows[0]], (-lam * s).astype(np.float32))
    dev = out[rows[1:]] - (-lam * s)[None]
    assert np.all(np.abs(dev) <= 1.0 / d * (1 + 1e-3)) and np.any(dev != 0)


def test_fang_krum_rejects_an_impossible_krum():
    """Catches a Krum attack built for a rule that cannot run (n <= 2f + 2)."""
    x, mal = _problem(8)
    with pytest.raises(ValueError, match="fang_krum.*num_byzantine"):
        attacks.fang_krum(9)(jnp.asarray(x), jnp.asarray(mal), KEY)


def test_sequential_peer_matches_the_loop_reference():
    """Catches a benchmark peer (NumPy fast Krum) that searches differently from
    the loop reference the tests trust."""
    for seed in (8, 0):
        x, mal = _problem(seed)
        lam, _, halvings = ref.fang_krum_ref(x, mal, 4)
        assert ref.fang_krum_sequential(x, mal, 4) == pytest.approx((lam, halvings))


def _check_fang_krum(x, mal, knowledge, f=4):
    """fang_krum (jitter 0) against the loop reference on ``x``: lambda_max,
    the halvings, lambda and the rows sent."""
    lam, lam_max, halvings = ref.fang_krum_ref(x, mal, f, knowledge)
    out, info = _craft("fang_krum", x, mal, knowledge, jitter=0.0)
    np.testing.assert_allclose(info["lambda_max"], lam_max, rtol=1e-5)
    assert int(info["halvings"]) == halvings
    np.testing.assert_allclose(info["lambda"], lam, rtol=1e-5)
    assert bool(info["fallback"]) == (halvings < 0)
    if halvings < 0:
        np.testing.assert_array_equal(out, x.astype(np.float32))
    else:
        s = np.sign((x if knowledge == "full" else x[mal]).mean(0))
        np.testing.assert_allclose(out[mal], np.broadcast_to(-lam * s, out[mal].shape), rtol=1e-5)
    return halvings


def test_fang_krum_gives_up_below_1e_5_at_any_scale():
    """The search halves lambda until it drops below 1e-5 (the paper), tries
    ``lambda_max`` even when that is already below 1e-5, and is scale-free:
    rows scaled by ``a`` give lambda scaled by ``a`` and the same halvings.
    Rows of norm ~1e-4 put the winning lambda at 1.5e-5 (found) or
    ``lambda_max`` at 0.6e-5 with the win one halving later (given up).

    Catches: ``GIVE_UP = 2e-5``; halvings below ``GIVE_UP`` tried (``steps !=
    0`` or ``steps == 1`` in ``tried``); clamps at 1 instead of 0 of the
    squared norms, distances or ``e_i`` (only visible on rows of norm < 1).
    """
    x, mal = _problem(8)  # full knowledge: found after 5 halvings
    lam, _, halvings = ref.fang_krum_ref(x, mal, 4)
    assert halvings == 5
    assert _check_fang_krum(x * (1.5e-5 / lam), mal, "full") == 5
    x, mal = _problem(1, c=2)  # partial knowledge, two attackers: found after 1 halving
    lam, lam_max, halvings = ref.fang_krum_ref(x, mal, 4, "partial")
    assert halvings == 1
    assert _check_fang_krum(x * (1.5e-5 / lam), mal, "partial") == 1
    assert _check_fang_krum(x * (0.6e-5 / lam_max), mal, "partial") == -1


def test_fang_krum_edge_cases_match_the_loop():
    """Against the loop reference: partial knowledge with 8 attackers (Krum's
    neighbour count ``2c - 1 = 15`` capped at ``n - f - 2 = 14``); full
    knowledge with 6 attackers, with 14 attackers (the bound's ``k - c + 1 = 1``) and with 19
    attackers beside one honest row (the bound's neighbour sum is empty, and
    the crafted rows, each other's nearest neighbours, win at once); a
    coordinate no client moves (``s_j = 0``: the crafted rows keep 0 there);
    two partial attackers with the same honest update (crafted and known rows
    tie at every lambda: a tie is no win, so they give up); one attacker
    among 15 rows centred on 0 (the crafted row is among the deciding honest
    row's ``k`` nearest: one copy, ``t = 1``, in its score).

    Catches: the cap ``n - f - 2`` changed (``n + f - 2``, ``n - f + 2``,
    ``n - f - 3``); ``lambda^2 / |s|^2`` in ``e_i``; ``max(k - c + 1, 2)``;
    the bound's neighbour count clipped at 1 (lambda_max infinite: fallback); full knowledge needing two
    honest rows; ``-lambda / s`` (-inf where ``s_j = 0``); ties counted as
    wins (``crafted_score <= best_bench``); a single crafted copy left out of
    an honest row's score (``where(t > 1, ...)``: 5 halvings instead of 4).
    """
    x, mal = _problem(0, c=8)
    assert _check_fang_krum(x, mal, "partial") == 4
    x, mal = _problem(0, c=6)  # the lambda^2 |s|^2 term decides the 6th halving
    assert _check_fang_krum(x, mal, "full") == 6
    x, mal = _problem(0, c=14)
    assert _check_fang_krum(x, mal, "full") == 0
    x, mal = _problem(0, c=19)
    assert _check_fang_krum(x, mal, "full") == 0
    x, mal = _problem(8)
    x[:, 0] = 0.0
    assert _check_fang_krum(x, mal, "full") == 5
    x, mal = _problem(1, c=2)
    rows = np.flatnonzero(mal)
    x[rows[1]] = x[rows[0]]
    assert _check_fang_krum(x, mal, "partial") == -1
    x, mal = _problem(0, n=15, d=12, c=1, loc=0.0)
    assert _check_fang_krum(x, mal, "full") == 4


def test_fang_krum_python_values_and_defaults():
    """``fang_krum(0)`` (a Krum with f = 0) and a Python ``jitter=0`` are
    valid; the default jitter is 1e-5 (the reference code's), and a Python
    jitter > 0 moves the supporters off the first crafted row.

    Catches: ``num_byzantine >= 0`` tightened to ``> 0`` / ``>= 1``;
    ``jitter >= 0`` tightened to ``> 0`` / ``>= 1``; another default jitter;
    the Python-number jitter test inverted (``jitter != 0``).
    """
    x, mal = _problem(8)
    u, m = jnp.asarray(x, jnp.float32), jnp.asarray(mal)
    attacks.fang_krum(0)
    attacks.fang_krum(4, jitter=0)
    out, _ = jax.jit(attacks.fang_krum(4).craft)(u, m, KEY)
    want, _ = _craft("fang_krum", x, mal, jitter=1e-5)
    np.testing.assert_array_equal(np.asarray(out), want)
    rows = np.flatnonzero(mal)
    assert np.any(np.asarray(out)[rows[1:]] != np.asarray(out)[rows[0]])


# --------------------------------------------------------------------------- #
# Fang et al., attack on the trimmed mean / median.


def _signed_problem(seed=0, n=20, d=2000, c=8):
    """Coordinates of four kinds: mean > 0 with min > 0 or < 0, mean < 0 with
    max < 0 or > 0 (every branch of the attack)."""
    rng = np.random.default_rng(seed)
    loc = np.tile([3.0, 0.3, -3.0, -0.3], d // 4)
    x = loc[None] + rng.normal(0, 1.0, (n, d))
    mal = np.zeros(n, bool)
    mal[rng.choice(n, c, replace=False)] = True
    return x, mal


def _fang_tm_violations(out, x, mal, b):
    """Coordinates (of malicious rows) outside Fang's interval: beyond the
    honest extreme on the side opposite to the mean's sign, within factor b."""
    mean, hi, lo = x.mean(0), x.max(0), x.min(0)
    up = mean > 0
    lower = np.where(up, np.where(lo > 0, lo / b, b * lo), hi)
    upper = np.where(up, lo, np.where(hi > 0, b * hi, hi / b))
    tol = 1e-5 * np.abs(x).max()
    v = out[mal]
    return np.sum((v < lower - tol) | (v > upper + tol))


def test_fang_trimmed_mean_values_beyond_the_extremes():
    """Catches values on the wrong side or outside the factor b, and the widely
    copied sign-mask bug ((dev > 0) * max_rand + (dev > 0) * min_rand), which
    this check rejects (run below on a port of it)."""
    x, mal = _signed_problem()
    for b in (2.0, 1.5):
        out, info = _craft("fang_trimmed_mean", x, mal, b=b)
        assert not info["fallback"]
        assert _fang_tm_violations(out, x, mal, b) == 0
        # All four branches were exercised.
        mean, hi, lo = x.mean(0), x.max(0), x.min(0)
        assert {(m > 0, e > 0) for m, e in zip(mean, np.where(mean > 0, lo, hi))} == {
            (True, True), (True, False), (False, True), (False, False)}
    # The bug, ported: its output must fail the same check.
    rng = np.random.default_rng(1)
    dev, hi, lo = np.sign(x.mean(0)), x.max(0), x.min(0)
    max_rand = np.where(hi > 0, hi * rng.uniform(1, 2, x.shape), hi / rng.uniform(1, 2, x.shape))
    min_rand = np.where(lo > 0, lo / rng.uniform(1, 2, x.shape), lo * rng.uniform(1, 2, x.shape))
    buggy = np.where(mal[:, None], (dev > 0) * max_rand + (dev > 0) * min_rand, x)
    assert _fang_tm_violations(buggy, x, mal, 2.0) > 0


def test_fang_trimmed_mean_samples_uniform_values_independently():
    """Catches one value shared by all attackers or coordinates, a multiplier
    (instead of the value) drawn uniformly, or a noise that ignores the key."""
    x, mal = _signed_problem()
    out, _ = _craft("fang_trimmed_mean", x, mal)
    mean, hi, lo = x.mean(0), x.max(0), x.min(0)
    up = mean > 0
    lower = np.where(up, np.where(lo > 0, lo / 2, 2 * lo), hi)
    upper = np.where(up, lo, np.where(hi > 0, 2 * hi, hi / 2))
    frac = (out[mal] - lower) / (upper - lower)  # uniform in [0, 1] per entry
    assert abs(frac.mean() - 0.5) < 0.01 and abs(frac.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(frac[0], frac[1])[0, 1]) < 0.05
    for q in (0.1, 0.5, 0.9):  # uniform also where the extreme is negative
        sub = frac[:, (~up) & (hi < 0)]
        assert abs(np.quantile(sub, q) - q) < 0.03
    other, _ = _craft("fang_trimmed_mean", x, mal, key=jax.random.PRNGKey(7))
    again, _ = _craft("fang_trimmed_mean", x, mal)
    assert np.all(other[mal] != out[mal]) or np.mean(other[mal] == out[mal]) < 1e-3
    np.testing.assert_array_equal(again, out)


def test_fang_trimmed_mean_partial_interval():
    """Catches a partial-knowledge attack that uses the wrong std (ddof), the
    wrong side, or the full-knowledge extremes."""
    x, mal = _signed_problem()
    out, info = _craft("fang_trimmed_mean", x, mal, "partial")
    assert not info["fallback"]
    mu, sigma = x[mal].mean(0), x[mal].std(0)
    lo = np.where(mu > 0, mu - 4 * sigma, mu + 3 * sigma)
    hi = np.where(mu > 0, mu - 3 * sigma, mu + 4 * sigma)
    v = out[mal]
    assert np.all((v >= lo - 1e-4) & (v <= hi + 1e-4))


def test_fang_trimmed_mean_partial_values_fill_the_interval():
    """Partial knowledge: the values are uniform on ``[mu + 3 sigma, mu + 4
    sigma]`` (or its mirror below ``mu``), not a point; two attackers are
    enough to learn ``mu`` and ``sigma``.

    Catches: an interval end moved onto the other (``mu + 4 sigma`` as the
    lower end, ``mu - 4 sigma`` as the upper one: every value at one end);
    partial knowledge needing three rows.
    """
    x, mal = _signed_problem()
    out, info = _craft("fang_trimmed_mean", x, mal, "partial")
    mu, sigma = x[mal].mean(0), x[mal].std(0)
    lo = np.where(mu > 0, mu - 4 * sigma, mu + 3 * sigma)
    frac = (out[mal] - lo) / sigma  # uniform in [0, 1] per entry
    for side in (mu > 0, mu <= 0):
        assert abs(frac[:, side].mean() - 0.5) < 0.02 and abs(frac[:, side].var() - 1 / 12) < 0.01
    two = np.zeros(20, bool)
    two[[3, 5]] = True
    out, info = _craft("fang_trimmed_mean", x, two, "partial")
    assert not info["fallback"]
    mu, sigma = x[two].mean(0), x[two].std(0)
    v = out[two]
    assert np.all((v >= np.where(mu > 0, mu - 4 * sigma, mu + 3 * sigma) - 1e-4)
                  & (v <= np.where(mu > 0, mu - 3 * sigma, mu + 4 * sigma) + 1e-4))


def test_fang_trimmed_mean_overflowing_bound_falls_back():
    """A bound past float32 range in the last coordinate (``b * max`` of a
    column holding 3e38 whose mean is negative) makes the attack send the
    honest updates, as documented for non-finite bounds.

    Catches: ``_common.all_finite`` looking at part of the vector only
    (``reshape(2, -1)[0]``: the first half), which sends inf.
    """
    x, mal = _problem(8)
    benign = np.flatnonzero(~mal)
    x[benign[0], -1], x[benign[1], -1] = 3e38, -3.3e38
    out, info = _craft("fang_trimmed_mean", x, mal, b=2.0)
    assert info["fallback"]
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_fang_trimmed_mean_python_b_and_default():
    """``fang_trimmed_mean()`` uses Fang's ``b = 2``; a Python ``b`` in (1, 2)
    is valid.

    Catches: another default ``b``; ``b > 1`` tightened to ``b > 2``.
    """
    x, mal = _problem(8)
    out, _ = jax.jit(attacks.fang_trimmed_mean().craft)(
        jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    want, _ = _craft("fang_trimmed_mean", x, mal, b=2.0)
    np.testing.assert_array_equal(np.asarray(out), want)
    attacks.fang_trimmed_mean(b=1.5)


def test_fang_trimmed_mean_zero_mean_and_screened_rows():
    """A coordinate whose known rows' mean is exactly 0 counts as ``s_j =
    -1`` (the docstring): the values go above the maximum (full) or to
    ``[mu + 3 sigma, mu + 4 sigma]`` (partial). The sign and extremes come
    from the finite rows only: two NaN rows beside a column that sums to -0.5
    do not flip it. With every other row non-finite, a full-knowledge
    attacker still crafts from its own row.

    Catches: ``total >= 0`` / ``mu >= 0`` (0 counted as +1); the non-known
    rows counted as 1 in the column sums; full knowledge needing two known
    rows.
    """
    x = np.zeros((20, 30))  # integer columns: exact sums; rows 4-7 malicious
    x[:8, 0] = [1, -1, 2, -2, 3, -3, 1, -1]  # sum 0, max 3; malicious: mean 0
    x[:8, 1] = [1, -2, 1, -1.5, 1, -1, 1, 0]  # sum -0.5, max 1
    x[18:] = np.nan
    mal = np.arange(20) // 4 == 1
    out, info = _craft("fang_trimmed_mean", x, mal, b=2.0)
    assert not info["fallback"]
    v = out[mal]
    assert np.all((v[:, 0] >= 3.0) & (v[:, 0] <= 6.0))  # total 0 -> above max 3, within b
    assert np.all((v[:, 1] >= 1.0) & (v[:, 1] <= 2.0))  # total -0.5 -> above max 1
    out, info = _craft("fang_trimmed_mean", x, mal, "partial")
    assert not info["fallback"]
    sigma = np.sqrt(5.0)  # malicious rows' column 0: 3, -3, 1, -1 (mean 0)
    v = out[mal][:, 0]
    assert np.all((v >= 3 * sigma - 1e-5) & (v <= 4 * sigma + 1e-5))
    lone = np.full_like(x, np.nan)
    lone[4] = x[4]
    one = np.arange(20) == 4
    out, info = _craft("fang_trimmed_mean", lone, one, b=2.0)
    assert not info["fallback"]
    assert np.all(np.isfinite(out[4])) and np.any(out[4] != x[4])


# --------------------------------------------------------------------------- #
# ALIE and IPM.


@pytest.mark.parametrize("n,f,z", [(10, 2, 0.0), (20, 4, 0.157), (25, 5, 0.253), (50, 10, 0.253),
                                   (50, 12, 0.336), (100, 20, 0.286), (100, 10, 0.112)])
def test_alie_z_matches_the_table(n, f, z):
    """Catches a wrong supporter count s or quantile (the notes' table: n = 100,
    f = 20 -> 0.286)."""
    assert float(alie_z(n, f)) == pytest.approx(z, abs=5e-4)
    assert float(alie_z(n, f)) == pytest.approx(ref.alie_z_ref(n, f), abs=1e-5)


def test_alie_crafts_mu_minus_z_sigma():
    """Catches a z not taken from the traced number of malicious rows, a std
    with the wrong ddof, or the wrong sign."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (100, 6))
    mal = np.zeros(100, bool)
    mal[rng.choice(100, 20, replace=False)] = True
    out, info = _craft("alie", x, mal, z=None)
    assert float(info["z"]) == pytest.approx(0.286, abs=5e-4)
    want = x.mean(0) - ref.alie_z_ref(100, 20) * x.std(0, ddof=1)
    np.testing.assert_allclose(out[mal], np.broadcast_to(want, out[mal].shape),
                               rtol=1e-5, atol=1e-6)


def test_alie_z_stays_finite_past_half():
    """Catches an infinite or NaN z when the malicious rows are a majority."""
    x, _ = _problem(1)
    mal = np.arange(20) < 15
    out, info = _craft("alie", x, mal, z=None)
    assert np.isfinite(info["z"]) and np.all(np.isfinite(out))


def test_alie_z_past_half_is_the_documented_clamp():
    """Past ``f = n / 2`` the formula has no answer and ``alie_z`` clamps ``s``
    at 1 and ``n - f`` at ``s + 1`` (its docstring): n = 10, f = 6 gives
    ``Phi^-1(3 / 4)``, f = 9 gives ``Phi^-1(1 / 2) = 0``.

    Catches: ``s`` clamped at 2, ``n - f`` at ``s - 1`` (z = -inf at f = 9) or
    at ``s + 2``.
    """
    assert float(alie_z(10, 6)) == pytest.approx(0.6744898, abs=1e-6)
    assert float(alie_z(10, 9)) == 0.0


def test_alie_and_ipm_accept_their_boundary_values():
    """``z = 0`` (ALIE sends the mean) and ``epsilon = 0`` (IPM sends zeros)
    are valid, as are values below 1.

    Catches: the ``>= 0`` checks tightened to ``> 0`` or ``>= 1``.
    """
    x, mal = _problem(3)
    for make in (lambda: attacks.alie(z=0.0), lambda: attacks.alie(z=0.5),
                 lambda: attacks.ipm(0.0), lambda: attacks.ipm(0.5)):
        make()
    out = attacks.alie(z=0.0)(jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    np.testing.assert_allclose(np.asarray(out)[mal][0], x.mean(0), rtol=1e-5, atol=1e-6)
    out = attacks.ipm(0.0)(jnp.asarray(x, jnp.float32), jnp.asarray(mal), KEY)
    assert not np.any(np.asarray(out)[mal])


def test_sign_flip_and_ipm_defaults_are_the_papers():
    """Defaults a config relies on: ``sign_flip()`` sends ``-u`` (scale 1),
    ``ipm()`` sends ``-0.1`` times the mean (Xie et al.'s epsilon).

    Catches: another default scale or epsilon.
    """
    x, mal = _problem(3)
    u = jnp.asarray(x, jnp.float32)
    flipped = np.asarray(attacks.sign_flip()(u, jnp.asarray(mal), KEY))
    np.testing.assert_array_equal(flipped[mal], -np.asarray(u)[mal])
    out = np.asarray(attacks.ipm()(u, jnp.asarray(mal), KEY))
    np.testing.assert_allclose(out[mal][0], -0.1 * x.mean(0), rtol=1e-5, atol=1e-6)


def test_partial_knowledge_needs_one_row_for_ipm_and_two_for_alie():
    """IPM learns a mean from one known row (a lone partial attacker sends
    ``-epsilon`` times its own update); ALIE needs a spread, so two rows.

    Catches: the known-row thresholds raised (IPM: 1 -> 2, ALIE: 2 -> 3),
    which silently turns these attackers honest.
    """
    x, _ = _problem(8)
    one = np.zeros(20, bool)
    one[3] = True
    out, info = _craft("ipm", x, one, "partial", epsilon=0.3)
    assert not bool(info["fallback"])
    np.testing.assert_allclose(out[3], -0.3 * x[3], rtol=1e-5, atol=1e-6)
    two = one.copy()
    two[5] = True
    out, info = _craft("alie", x, two, "partial", z=1.0)
    assert not bool(info["fallback"])
    want = x[two].mean(0) - x[two].std(0, ddof=1)
    np.testing.assert_allclose(out[3], want, rtol=1e-4, atol=1e-5)


def test_ipm_is_minus_epsilon_mean():
    """Catches a mean over the wrong rows (full: all honest rows, malicious
    included; partial: malicious only)."""
    x, mal = _problem(3)
    out, _ = _craft("ipm", x, mal, epsilon=0.3)
    np.testing.assert_allclose(out[mal][0], -0.3 * x.mean(0), rtol=1e-5, atol=1e-6)
    out, _ = _craft("ipm", x, mal, "partial", epsilon=0.3)
    np.testing.assert_allclose(out[mal][0], -0.3 * x[mal].mean(0), rtol=1e-5, atol=1e-6)


def test_scaling_boosts_the_own_row():
    """Catches a scaled row other than the client's own honest update."""
    x, mal = _problem(3)
    out, _ = _craft("scaling", x, mal, factor=-4.0)
    np.testing.assert_allclose(out[mal], -4.0 * x[mal], rtol=1e-6)


# --------------------------------------------------------------------------- #
# Min-Max / Min-Sum.


@pytest.mark.parametrize("rule,perturbation,knowledge", [
    (rule, p, "full") for rule in ("min_max", "min_sum") for p in ("unit", "sign", "std")
] + [("min_max", "unit", "partial"), ("min_sum", "unit", "partial")])
def test_min_max_min_sum_gamma_matches_bisection(rule, perturbation, knowledge):
    """Catches a wrong closed form (sign of b_i, the T or the min-sum bound, the
    std's ddof) and a cap that does not reproduce the reference search's 20."""
    x, mal = _problem(4, loc=0.2)
    x = 10.0 * x  # gamma* above 20 for the unit perturbation
    rows = x if knowledge == "full" else x[mal]
    delta = ref.perturbation_ref(perturbation, rows)
    ok = (ref.min_max_ok if rule == "min_max" else ref.min_sum_ok)(rows, delta)
    exact = ref.shejwalkar_gamma_ref(ok, gamma=2.0 ** 14)
    capped = ref.shejwalkar_gamma_ref(ok, gamma=10.0)
    out, info = _craft(rule, x, mal, knowledge, perturbation=perturbation, cap=np.inf)
    assert float(info["gamma"]) == pytest.approx(exact, rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(out[mal][0], rows.mean(0) - float(info["gamma"]) * delta,
                               rtol=1e-4, atol=1e-4)
    _, info20 = _craft(rule, x, mal, knowledge, perturbation=perturbation, cap=20.0)
    assert float(info20["gamma"]) == pytest.approx(capped, rel=1e-4, abs=1e-4)
    if perturbation == "unit":
        assert exact > 20 and capped == pytest.approx(20, abs=1e-4)


def test_min_max_without_cap_is_uncapped():
    """Catches cap=None treated as a cap (or the reference's 20 as a default)."""
    x, mal = _problem(4, loc=0.2)
    x = 10.0 * x
    for rule in ("min_max", "min_sum"):
        _, capped = _craft(rule, x, mal, cap=np.inf)
        _, none = _craft(rule, x, mal, cap=None)
        assert float(none["gamma"]) == pytest.approx(float(capped["gamma"]), rel=1e-6)
        assert float(none["gamma"]) > 20


@pytest.mark.parametrize("rule", ["min_max", "min_sum"])
def test_min_max_min_sum_gamma_is_scale_covariant_on_small_rows(rule):
    """Rows scaled by 1e-4 (``|mu|``, the spread ``T``, ``|delta|^2`` and the
    closed form's denominators all below 1): gamma scales by 1e-4 for the
    ``unit`` and ``sign`` directions (fixed length) and is unchanged for
    ``std`` (which scales with the rows); also with partial knowledge.

    Catches: clamps at 1 instead of 0 (``norm > 1`` zeroing the unit
    direction, the squared distances or ``T`` floored at 1) and divisions
    skipped below 1 (``dd > 1``, ``denom > 1``); ``T``'s fill for pairs with
    an unknown row 1 instead of 0 (partial knowledge).
    """
    x, mal = _problem(4, loc=0.2)
    for perturbation, factor in (("unit", 1e-4), ("sign", 1e-4), ("std", 1.0)):
        _, big = _craft(rule, x, mal, perturbation=perturbation, cap=np.inf)
        out, small = _craft(rule, x * 1e-4, mal, perturbation=perturbation, cap=np.inf)
        assert float(big["gamma"]) > 0 and not small["fallback"]
        assert float(small["gamma"]) == pytest.approx(factor * float(big["gamma"]), rel=1e-4)
    _, big = _craft(rule, x, mal, "partial")  # T over the known (malicious) rows only
    _, small = _craft(rule, x * 1e-4, mal, "partial", cap=50e-4)
    assert float(small["gamma"]) == pytest.approx(1e-4 * float(big["gamma"]), rel=1e-4)


def test_min_max_gamma_when_a_row_behind_the_mean_binds():
    """A tight cluster and one outlier on the ``-delta`` side: the constraint
    that binds first is the outlier's, whose ``b_i >= 0`` (on the usual
    problems a row on the ``+delta`` side binds, with ``b_i < 0``). Gamma
    against the reference search, for ``unit`` and ``sign``.

    Catches: a wrong ``b_i >= 0`` branch of the closed form (``(b + root)
    * C`` instead of ``/ C``).
    """
    rng = np.random.default_rng(0)
    mal = np.arange(20) >= 16
    for perturbation, s in (("unit", 0.5), ("sign", 2.0)):
        x = np.tile(np.eye(30)[0] * 3, (20, 1)) + 0.05 * rng.normal(size=(20, 30))
        x[0] += 10 * (np.eye(30)[1] - s * np.eye(30)[0])
        delta = ref.perturbation_ref(perturbation, x)
        assert (x.mean(0) - x[0]) @ delta >= 0  # the outlier is behind the mean
        exact = ref.shejwalkar_gamma_ref(ref.min_max_ok(x, delta), gamma=2.0 ** 14)
        _, info = _craft("min_max", x, mal, perturbation=perturbation, cap=np.inf)
        assert float(info["gamma"]) == pytest.approx(exact, rel=1e-4, abs=1e-4)


def test_min_max_min_sum_zero_mean_and_two_partial_attackers():
    """Known rows with a mean of exactly 0 give the ``unit`` direction 0:
    every gamma gives ``mu``, so the attackers send zeros with gamma reported
    0 (not a fallback). Two partial-knowledge attackers are enough; a lone
    one falls back and reports gamma 0. A Python cap below 1 is valid.

    Catches: the unit direction's ``norm > 0`` test loosened (``>= 0`` or
    ``|``: 0 / 0 = NaN, a fallback) or its 0 replaced by 1; gamma not
    reported 0 when ``delta = 0`` (``dd >= 0``, or 1 instead of 0) or on
    fallback; partial knowledge needing three rows; ``cap > 0`` tightened to
    ``cap > 1`` (or its ``and`` turned into ``or``).
    """
    rng = np.random.default_rng(5)
    half = rng.integers(-4, 5, (8, 30)).astype(float)
    x = np.concatenate([half, -half, np.full((4, 30), np.nan)])  # 16 finite rows, mean 0
    mal = np.isin(np.arange(20), [0, 3, 9, 12])
    y, _ = _problem(8)
    two, one = np.isin(np.arange(20), [3, 5]), np.arange(20) == 3
    for rule in ("min_max", "min_sum"):
        out, info = _craft(rule, x, mal, perturbation="unit", cap=np.inf)
        assert not info["fallback"] and float(info["gamma"]) == 0.0
        np.testing.assert_array_equal(out[mal], 0.0)
        out, info = _craft(rule, y, two, "partial")
        assert not info["fallback"] and float(info["gamma"]) > 0
        np.testing.assert_array_equal(out[3], out[5])
        assert np.all(out[3] != y[3].astype(np.float32))
        out, info = _craft(rule, y, one, "partial")
        assert info["fallback"] and float(info["gamma"]) == 0.0
    attacks.min_max(cap=0.5)
    attacks.min_sum(cap=0.5)


# --------------------------------------------------------------------------- #
# Knowledge, fallbacks, non-finite rows, bad values.


@pytest.mark.parametrize("name", KNOWLEDGE)
def test_partial_knowledge_uses_only_malicious_rows(name):
    """Catches a partial-knowledge attacker that reads a benign row (while the
    full-knowledge one must react to it)."""
    x, mal = _problem(8)
    y = x.copy()
    y[~mal] = y[~mal] * 1.5 + 0.3
    a, _ = _craft(name, x, mal, "partial")
    b, _ = _craft(name, y, mal, "partial")
    np.testing.assert_array_equal(a[mal], b[mal])
    a, _ = _craft(name, x, mal)
    b, _ = _craft(name, y, mal)
    assert np.any(a[mal] != b[mal])


@pytest.mark.parametrize("name", ["alie", "min_max", "min_sum", "fang_trimmed_mean", "fang_krum",
                                  "optimal_alie"])
def test_one_partial_attacker_falls_back(name):
    """Catches NaN (a std or a spread from one row) instead of the honest update
    when a partial-knowledge attacker has nothing to learn from."""
    x, _ = _problem(8)
    mal = np.zeros(20, bool)
    mal[3] = True
    out, info = _craft(name, x, mal, "partial")
    assert bool(info["fallback"])
    np.testing.assert_array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("name,knowledge", [c for c in CASES if c[0] in KNOWLEDGE])
def test_no_malicious_row(name, knowledge):
    """Catches a division by the number of malicious rows (0) leaking NaN."""
    x, _ = _problem(8)
    out, info = _craft(name, x, np.zeros(20, bool), knowledge)
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert bool(info["fallback"])
    if name.startswith("optimal"):  # info is averaged over rounds: no NaN on fallback
        assert all(np.all(np.isfinite(v)) for v in info.values())


@pytest.mark.parametrize("name,knowledge", [c for c in CASES if c[0] in KNOWLEDGE])
def test_nonfinite_benign_rows_are_screened(name, knowledge):
    """Catches a NaN or inf row (another attacker, a diverged client) that
    turns the crafted rows NaN through the mean, std, extremes or distances."""
    x, mal = _problem(8)
    bad = x.copy()
    benign = np.flatnonzero(~mal)
    bad[benign[0], 3] = np.nan
    bad[benign[1], 5] = np.inf
    out, info = _craft(name, bad, mal, knowledge)
    assert np.all(np.isfinite(out[mal])) and not info["fallback"]
    if name == "ipm":  # the mean skips those rows
        rows = np.isfinite(bad).all(1) & (mal if knowledge == "partial" else True)
        np.testing.assert_allclose(out[mal][0], -0.5 * bad[rows].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make,match", [
    (lambda: attacks.fang_trimmed_mean(b=1.0), r"fang_trimmed_mean: b=1.0 must be > 1"),
    (lambda: attacks.fang_trimmed_mean(b=0.5), r"b=0.5 must be > 1"),
    (lambda: attacks.ipm(-0.1), r"ipm: epsilon=-0.1 must be >= 0"),
    (lambda: attacks.alie(z=-1.0), r"alie: z=-1.0 must be >= 0"),
    (lambda: attacks.min_max(cap=0.0), r"min_max: cap=0.0 must be > 0"),
    (lambda: attacks.min_sum("gauss"), r"min_sum: perturbation='gauss'"),
    (lambda: attacks.fang_krum(-1), r"fang_krum: num_byzantine must be >= 0"),
    (lambda: attacks.fang_krum(2, jitter=-1.0), r"fang_krum: jitter=-1.0 must be >= 0"),
    (lambda: attacks.alie(knowledge="some"), r"alie: knowledge='some'"),
    (lambda: attacks.scaling(float("inf")), r"scaling: factor=inf must be finite"),
    (lambda: attacks.optimal_alie(ratio=0.5), r"optimal_alie: ratio=0.5 must be in \(0.5, 1\)"),
    (lambda: attacks.optimal_ipm(delta=0.0), r"optimal_ipm: delta=0.0 must be finite and non-zero"),
    (lambda: attacks.optimal_ipm(start=float("nan")), r"optimal_ipm: start=nan must be finite"),
    (lambda: attacks.optimal_alie(evals=0), r"optimal_alie: evals=0 must be an integer >= 1"),
    (lambda: attacks.optimal_alie(lookahead=7), r"optimal_alie: lookahead=7 must be an integer"),
    (lambda: attacks.optimal_ipm(lookahead=-1), r"optimal_ipm: lookahead=-1 must be an integer"),
    (lambda: attacks.optimal_ipm(knowledge="none"), r"optimal_ipm: knowledge='none'"),
    (lambda: attacks.mimic("random"), r"mimic: target='random' must be one of"),
    (lambda: attacks.mimic(epsilon=-1), r"mimic: epsilon=-1 must be an integer >= 0"),
    (lambda: attacks.mimic("direction", iters=0), r"mimic: iters=0 must be an integer >= 1"),
    (lambda: attacks.inf(0), r"inf: sign=0 must be 1"),
])
def test_bad_values_raise(make, match):
    """Catches a bad value that would only show up as a silent no-op or NaN."""
    with pytest.raises(ValueError, match=match):
        make()


def test_uniform_noise():
    """Catches a correlated or key-independent noise (per row and column)."""
    u = np.asarray(_common.uniform(KEY, (64, 4096), jnp.float32))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.05
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.3
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
    v = np.asarray(_common.uniform(jax.random.PRNGKey(1), (64, 4096), jnp.float32))
    assert np.mean(u == v) < 1e-3
