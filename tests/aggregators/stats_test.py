"""Rule-specific checks of the order-statistic and distance-based rules.

The shared checks (references, order, fixed point, huge and non-finite rows,
traces, pytrees) live in ``conformance_test.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as agg
from fljax.aggregators import _ops
from fljax.aggregators.bulyan import closest_to_median_mean
from tests.aggregators import hostile
from tests.aggregators import references as ref

KEY = jax.random.PRNGKey(0)


def _agg(rule, x, key=KEY, context=None):
    x = jnp.asarray(x)
    return rule.aggregate(x, rule.init(x.shape[1]), key, context)


@pytest.mark.parametrize("build, n, pattern", [
    (lambda: agg.krum(2), 6, r"krum: .*n=6, num_byzantine=2.*at least 7"),
    (lambda: agg.multi_krum(3), 8, r"multi_krum: .*n=8, num_byzantine=3.*at least 9"),
    (lambda: agg.bulyan(2), 10, r"bulyan: .*n >= 4 \* num_byzantine \+ 3.*n=10, num_byzantine=2.*at least 11"),
    (lambda: agg.trimmed_mean(3), 6, r"trimmed_mean: .*num_trim=3, n=6 \(2 \* 3 = 6 >= 6\)"),
])
def test_impossible_settings_raise(build, n, pattern):
    rule = build()
    with pytest.raises(ValueError, match=pattern):
        jax.eval_shape(rule.aggregate, jnp.zeros((n, 4)), rule.init(4), KEY)
    # One more client is enough (traced only: the check is static).
    out = jax.eval_shape(rule.aggregate, jnp.zeros((n + 1, 4)), rule.init(4), KEY)[0]
    assert out.shape == (4,)


def test_pairwise_sq_dists_matches_loop():
    x = np.random.default_rng(0).standard_normal((9, 50)).astype(np.float32)
    d = np.asarray(_ops.pairwise_sq_dists(jnp.asarray(x)))
    want = ref.sq_dists_loop(x.astype(np.float64))
    np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-4)
    assert np.all(np.diag(d) == 0) and np.all(d >= 0) and np.array_equal(d, d.T)


@pytest.mark.parametrize("columns,rows", [(8, 3), (50, 100), (7, 1), (64, 2)])
def test_blocked_gram_matches_numpy(columns, rows):
    """Column blocks with a remainder, several row blocks of the upper
    triangle, one block covering everything, and a zeroed invalid row,
    against float64 NumPy. (At the default sizes, 8,000 columns and 100
    rows, the other tests' shapes take one block.)

    Catches: the blocks' rows concatenated along the columns (``axis=1``),
    the remainder tile dropped or subtracted, invalid rows centred to 1."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 50)).astype(np.float32) + 100.0
    valid = np.ones(9, bool)
    valid[4] = False
    x[4] = 0.0
    centre = x[valid].mean(0)
    c = np.where(valid[:, None], x.astype(np.float64) - centre, 0.0)
    got = np.asarray(_ops.centred_gram_blocked(jnp.asarray(x), jnp.asarray(centre),
                                               jnp.asarray(valid), columns, rows))
    np.testing.assert_allclose(got, c @ c.T, rtol=1e-5, atol=1e-3)


def test_finite_rows_catches_every_nonfinite_and_keeps_huge_finite():
    x = np.ones((6, 1000), np.float32)
    x[1, 7] = np.nan
    x[2, 0] = np.inf
    x[3, 999] = -np.inf
    x[4, :2] = [np.inf, -np.inf]
    x[5] = 3.4e38  # finite, but its sum or squared norm would overflow
    got = np.asarray(agg.base.finite_rows(jnp.asarray(x)))
    np.testing.assert_array_equal(got, [True, False, False, False, False, True])


def test_pairwise_sq_dists_invalid_rows_are_infinite():
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    x[1, 3] = np.nan
    valid = jnp.asarray(np.isfinite(x).all(1))
    d = np.asarray(_ops.pairwise_sq_dists(jnp.asarray(x), valid))
    assert np.all(np.isinf(np.delete(d[1], 1))) and d[1, 1] == 0
    assert np.all(np.isfinite(np.delete(np.delete(d, 1, 0), 1, 1)))


def test_krum_float32_shared_offset_picks_the_right_client():
    # Models instead of deltas: a +1000 offset on every row. The uncentred Gram
    # loses all the digits that separate the clients in float32.
    rng = np.random.default_rng(1)
    n, f, d = 12, 2, 2000
    x = 1000.0 + 1e-3 * rng.standard_normal((n, d))
    x[3] = 1000.0 + 1e-4 * rng.standard_normal(d)  # the most central client
    want = int(np.argmin(ref.krum_scores_ref(x, f)))
    assert want == 3
    _, _, info = _agg(agg.krum(f), x.astype(np.float32))
    assert int(info["index"]) == want
    d32 = np.asarray(_ops.pairwise_sq_dists(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(d32, ref.sq_dists_loop(x), rtol=2e-2)


def test_krum_ties_do_not_favour_low_indices():
    x = np.ones((9, 4), np.float32)  # every score ties
    chosen = {int(_agg(agg.krum(2), x, jax.random.PRNGKey(s))[2]["index"]) for s in range(12)}
    assert len(chosen) > 3


def test_krum_never_selects_nonfinite_rows():
    """Non-finite rows are never picked, also with more of them than ``f``:
    then every finite row's score is +inf too (fewer finite neighbours than
    ``k``), and the tie-break ranks the finite rows first for every key.

    Catches: invalid rows ranked before valid rows of equal score
    (``lexsort((rank, valid, scores))``: Krum then returns zeros)."""
    x = np.random.default_rng(2).standard_normal((9, 6)).astype(np.float32)
    x[0], x[1, 2] = np.nan, -np.inf  # NaN would win a naive argmin
    _, _, info = _agg(agg.krum(2), x)
    assert int(info["index"]) not in (0, 1)
    assert np.isinf(np.asarray(info["scores"])[:2]).all()
    out, _, info = _agg(agg.multi_krum(2, 5), x)
    assert not set(np.asarray(info["selected"]).tolist()) & {0, 1}
    assert np.isfinite(np.asarray(out)).all()
    x[3:7] = np.nan  # finite rows 2, 7, 8: two finite neighbours each, k = 5
    rule = agg.krum(2)
    run = jax.jit(lambda k: rule.aggregate(jnp.asarray(x), rule.init(6), k))
    for seed in range(4):
        out, _, info = run(jax.random.PRNGKey(seed))
        assert np.isinf(np.asarray(info["scores"])).all()
        assert int(info["index"]) in (2, 7, 8)
        np.testing.assert_array_equal(np.asarray(out), x[int(info["index"])])


def test_multi_krum_selecting_one_row_is_krum():
    """``multi_krum(f, num_selected=1)`` is accepted and equals Krum, output
    and scores (with the same key, so the same tie rule).

    Catches: ``num_selected >= 1`` tightened to ``> 1`` / ``>= 2``; the
    selection's weights normalised by ``max(count, 2)`` (half of the one row);
    multi-Krum's ``info['scores']`` dropped or renamed.
    """
    x = np.random.default_rng(6).standard_normal((9, 6)).astype(np.float32)
    one, _, info = _agg(agg.multi_krum(2, num_selected=1), x)
    want, _, kinfo = _agg(agg.krum(2), x)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(info["selected"]), [int(kinfo["index"])])
    np.testing.assert_array_equal(np.asarray(info["scores"]), np.asarray(kinfo["scores"]))


def test_bulyan_info():
    x = np.random.default_rng(3).standard_normal((11, 7)).astype(np.float32)
    _, _, info = _agg(agg.bulyan(2), x)
    sel = np.asarray(info["selected"])
    assert sel.shape == (7,) and len(set(sel.tolist())) == 7


def test_bitonic_sort_rows_sorts_every_zero_one_column():
    """The sorting network on every 0-1 column of ``n`` rows for ``n = 1..9``
    (by the 0-1 principle a comparator network that sorts all of them sorts
    everything), with powers of two (no padding) and the sizes between them;
    then real columns at ``n = 8`` and 13 with ties, -0.0 and infinities,
    against ``np.sort``.

    Catches: a power-of-two ``n`` padded or not kept (``x = None``), the
    padding's size or value, a merge step not mirrored, the half cleaners'
    pairs, rows cut from the wrong end."""
    sort = jax.jit(_ops.bitonic_sort_rows)
    for n in range(1, 10):
        cols = ((np.arange(2 ** n)[None, :] >> np.arange(n)[:, None]) & 1).astype(np.float32)
        got = np.asarray(sort(jnp.asarray(cols)))
        np.testing.assert_array_equal(got, np.sort(cols, axis=0), err_msg=f"n={n}")
    rng = np.random.default_rng(3)
    for n in (8, 13):
        x = np.round(rng.standard_normal((n, 50)), 1).astype(np.float32)
        x[0, :5] = [np.inf, -np.inf, -0.0, 0.0, np.inf]
        x[1, :5] = [-np.inf, np.inf, 0.0, -0.0, np.inf]
        got = np.asarray(sort(jnp.asarray(x)))
        np.testing.assert_array_equal(got, np.sort(x, axis=0))


@pytest.mark.parametrize("n", [2, 5, 10])
def test_order_statistic_methods_agree(n):
    rng = np.random.default_rng(n)
    x = np.round(rng.standard_normal((n, 40)), 1).astype(np.float32)  # many ties
    x[:, 0] = 0.0
    x[: n // 2, 1] = -0.0
    b = (n - 1) // 2
    for make in (lambda m: agg.coordinate_median(m, block=16),
                 lambda m: agg.trimmed_mean(b, m, block=16),
                 lambda m: agg.invariant(method=m, block=16)):
        a, s = _agg(make("bisect"), x)[0], _agg(make("sort"), x)[0]
        np.testing.assert_allclose(a, s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_agg(agg.coordinate_median("bisect", 16), x)[0],
                               np.median(x, 0), atol=1e-7)
    np.testing.assert_allclose(_agg(agg.trimmed_mean(b, "bisect", 16), x)[0],
                               ref.trimmed_mean_ref(x.astype(np.float64), b), atol=1e-6)


@pytest.mark.parametrize("method", ["sort", "bisect"])
def test_trimmed_mean_does_not_overflow(method):
    # "sum minus top-k" gives -3 here (byzantine.md section 7.3).
    x = np.array([[1e38], [1e38], [1.0], [2.0], [3.0]], np.float32)
    assert _agg(agg.trimmed_mean(2, method), x)[0].tolist() == [3.0]
    x = np.array([[3e38], [3e38], [3e38], [1.0], [2.0]], np.float32)
    assert np.isfinite(_agg(agg.trimmed_mean(1, method), x)[0]).all()


@pytest.mark.parametrize("n", [1, 3, 5, 7, 9])
def test_invariant_is_finite_for_small_odd_n(n):
    # The official code keeps ranks [0.45 n, 0.55 n), empty for odd n < 10 (NaN).
    x = np.abs(np.random.default_rng(n).standard_normal((n, 5))).astype(np.float32)
    out = np.asarray(_agg(agg.invariant(), x)[0])
    np.testing.assert_allclose(out, np.median(x, 0), rtol=1e-6)


def test_invariant_masks_low_agreement():
    x = np.array([[1.0, 1.0], [2.0, -1.0], [3.0, 1.0], [4.0, -1.0], [5.0, 2.0]], np.float32)
    out, _, info = _agg(agg.invariant(tau=0.6), x)
    assert out.tolist() == [3.0, 0.0]  # coordinate 1: |mean sign| = 0.2 < 0.6
    assert float(info["mask_density"]) == 0.5


def test_geometric_median_weights_and_robustness():
    x = np.random.default_rng(4).standard_normal((9, 6)).astype(np.float32)
    w = np.arange(1, 10, dtype=np.float32)
    ctx = agg.AggregationContext(weights=jnp.asarray(w))
    out = _agg(agg.geometric_median(weighted=True), x, context=ctx)[0]
    z = (w[:, None] * x).sum(0) / w.sum()
    for _ in range(4):
        beta = w / np.maximum(1e-5, np.linalg.norm(z - x, axis=1))
        z = (beta[:, None] * x).sum(0) / beta.sum()
    np.testing.assert_allclose(out, z, rtol=1e-4, atol=1e-5)
    info = _agg(agg.geometric_median(weighted=True), x, context=ctx)[2]
    z_prev = (w[:, None] * x).sum(0) / w.sum()  # the weights of the last step, normalised
    for _ in range(3):
        beta = w / np.maximum(1e-5, np.linalg.norm(z_prev - x, axis=1))
        z_prev = (beta[:, None] * x).sum(0) / beta.sum()
    beta = w / np.maximum(1e-5, np.linalg.norm(z_prev - x, axis=1))
    np.testing.assert_allclose(np.asarray(info["weights"]), beta / beta.sum(), rtol=1e-4)
    unweighted = _agg(agg.geometric_median(), x, context=ctx)[0]
    np.testing.assert_allclose(unweighted, ref.geometric_median_ref(x.astype(np.float64)),
                               rtol=1e-4, atol=1e-5)


def test_median_even_n_is_mean_of_middle_pair():
    x = np.array([[1.0], [10.0], [3.0], [4.0]], np.float32)
    assert _agg(agg.coordinate_median(), x)[0].tolist() == [3.5]


@pytest.mark.parametrize("method", ["bisect", "sort"])
def test_median_jnp_paths_with_one_or_no_finite_row(method):
    """Both jnp methods equal ``np.median``; one finite row among NaN rows is
    the median (also through the kernel); no finite row gives zeros.

    Catches: the ``'sort'`` path's middle values weighted or combined wrongly
    (``1.5 *``, ``-``, ``/``), ``hi_rank`` floored at 1 (one finite row then
    averaged with a screened one), the all-screened zero dropped or given
    for one finite row (``m >= 0``, ``m > 1``, ``1.0``).
    """
    x = np.random.default_rng(8).standard_normal((6, 5)).astype(np.float32)
    rule = agg.coordinate_median(method=method, kernel=None)
    np.testing.assert_allclose(np.asarray(_agg(rule, x)[0]), np.median(x, 0), atol=1e-6)
    one = np.full_like(x, np.nan)
    one[2] = x[2]
    for r in (rule, agg.coordinate_median()):
        np.testing.assert_array_equal(np.asarray(_agg(r, one)[0]), x[2])
    none = np.full_like(x, np.nan)
    assert np.asarray(_agg(rule, none)[0]).tolist() == [0.0] * 5


def test_all_rows_nonfinite_gives_zeros():
    x = np.full((5, 3), np.nan, np.float32)
    for rule in (agg.coordinate_median(), agg.trimmed_mean(1), agg.invariant(),
                 agg.geometric_median(), agg.krum(1), agg.multi_krum(1)):
        assert np.asarray(_agg(rule, x)[0]).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.unrolled
def test_default_unrolled_bisection_matches_numpy():
    x = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    np.testing.assert_allclose(_agg(agg.coordinate_median(), x)[0], np.median(x, 0), atol=1e-7)


def test_vectorised_bulyan_reference_matches_the_loop():
    # The benchmark's NumPy peer must compute what the conformance reference does.
    x = np.random.default_rng(3).standard_normal((15, 40)).astype(np.float32)
    x[2] = np.nan
    rank = np.random.default_rng(4).permutation(15)
    np.testing.assert_allclose(ref.bulyan_fast_ref(x, 3, rank), ref.bulyan_ref(x, 3, rank),
                               rtol=1e-6, atol=1e-6)


def test_mean_screens_nonfinite_rows_even_with_zero_weight():
    """A NaN row is left out (and counted) also when its example weight is 0.

    Catches: the unscreened ``w @ updates`` (0 * NaN = NaN: one NaN row made the
    model NaN, and the README said every rule screens them).
    """
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[1, 2], x[3] = np.nan, -np.inf
    ctx = agg.AggregationContext(weights=jnp.array([1.0, 0.0, 3.0, 2.0]))
    out, _, info = _agg(agg.mean(), x, context=ctx)
    np.testing.assert_allclose(out, (x[0] + 3 * x[2]) / 4, rtol=1e-6)
    assert int(info["num_nonfinite"]) == 2
    out, _, info = _agg(agg.mean(), x[[0, 2]])
    np.testing.assert_allclose(out, (x[0] + x[2]) / 2, rtol=1e-6)
    assert int(info["num_nonfinite"]) == 0


def test_geometric_median_start_floor_and_zero_steps():
    """``num_iters=0`` returns the better start: the mean, or the origin (with
    zero weights) when a huge row drags the mean; the floor ``nu`` (default
    1e-5) decides the fixed point when rows coincide: two rows at 0 and one
    at 1 settle at ``nu / (2 + nu)``.

    Catches: ``num_iters = 0`` refused, the origin start replaced by ones (the
    estimate or its reported weights), another default ``nu``, the
    ``weights`` info renamed.
    """
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]], np.float32)
    out, _, info = _agg(agg.geometric_median(num_iters=0), x)
    np.testing.assert_allclose(np.asarray(out), x.mean(0), rtol=1e-6)
    assert not bool(info["zero_start"])
    huge = x.copy()
    huge[2] = 1e30
    out, _, info = _agg(agg.geometric_median(num_iters=0), huge)
    assert bool(info["zero_start"])
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    np.testing.assert_array_equal(np.asarray(info["weights"]), 0.0)
    y = np.array([[0.0], [0.0], [1.0]], np.float32)
    for kwargs, nu in (({}, 1e-5), ({"nu": 1e-3}, 1e-3)):
        z = float(_agg(agg.geometric_median(num_iters=60, **kwargs), y)[0][0])
        np.testing.assert_allclose(z, nu / (2 + nu), rtol=1e-3)


@pytest.mark.parametrize("f", [1, 3, 5])
def test_geometric_median_stated_bound_under_any_outliers(f):
    """The README's guarantee: ``|z| <= (2 sum_G |x_i| + nu n / 2) / (n - 2f)``.

    f outliers of every magnitude from 1e3 to float32's largest, equal or
    random-signed; the honest rows are N(1, 1) (so the origin is not their
    centre). The bound is derived, not tuned (see ``geometric_median``).

    Catches: RFA's mean-only start (4 steps from the dragged mean kept
    ~1.5-20 % of the outliers' magnitude, 1.5e16 at 1e18).
    """
    n, d, nu = 11, 50, 1e-5
    rule = agg.geometric_median(nu=nu)
    fn = jax.jit(rule.aggregate)
    honest = np.random.default_rng(f).standard_normal((n - f, d)).astype(np.float32) + 1.0
    bound = (2 * np.linalg.norm(honest.astype(np.float64), axis=1).sum() + nu * n / 2) / (n - 2 * f)
    for kind in ("same", "signs"):
        for magnitude in (1e3, 1e6, 1e12, 1e18, 1e19, 1e30, 3e38, float(np.finfo(np.float32).max)):
            x = np.concatenate([np.zeros((f, d), np.float32), honest])
            x = hostile.set_rows(x, np.arange(f), magnitude, kind)
            out, _, info = fn(jnp.asarray(x), rule.init(d), KEY)
            norm = float(np.linalg.norm(np.asarray(out, np.float64)))
            assert np.isfinite(norm) and norm <= bound, (kind, magnitude, norm, bound)
    # Without outliers the mean is the better start: exactly RFA.
    _, _, info = fn(jnp.asarray(np.concatenate([honest[:f], honest])), rule.init(d), KEY)
    assert not bool(info["zero_start"])


@pytest.mark.parametrize("method", ["sort", "bisect"])
def test_trimmed_mean_jnp_paths_with_few_or_no_finite_rows(method):
    """Both jnp methods (and the kernel) equal the reference when NaN rows
    shrink the trim: 3, 2, 1 and 0 finite rows under ``num_trim=2``, with
    ties; no finite row gives zeros.

    Catches: the trim's shrink ``(m - 1) // 2`` changed, the kept count's
    floor, the all-screened zero dropped (``m >= 0``) or given for one finite
    row, the bisection's tie handling at ``klo == khi`` and its count of kept
    copies of a tied bound (``(hi * inv) * (m - t - n_lt_hi)`` -> ``/``).
    """
    rng = np.random.default_rng(9)
    x = np.round(rng.standard_normal((7, 6)), 1).astype(np.float32)
    x[:, 0] = 0.5  # one column of equal values
    x[:, 1] = [1, 2, 3, 3, 5, 0, 3]  # kept 2, 3, 3: two kept copies of the upper bound
    x[:, 2] = [1, 1, 1, 2, 4, 0, 5]  # kept 1, 1, 2: the same at the lower bound
    fns = [jax.jit(lambda u, r=r: r.aggregate(u, None, KEY)) for r in
           (agg.trimmed_mean(2, method, kernel=None), agg.trimmed_mean(2))]
    for finite in (7, 3, 2, 1, 0):
        y = x.copy()
        y[finite:] = np.nan
        want = ref.trimmed_mean_ref(y.astype(np.float64), 2)
        for fn in fns:
            out, _, info = fn(jnp.asarray(y))
            np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-7,
                                       err_msg=f"{method} finite={finite}")
            assert int(info["num_nonfinite"]) == 7 - finite



def test_invariant_keeps_agreement_equal_to_tau_and_screens_nan_rows():
    """A coordinate whose ``|mean sign|`` over the finite rows equals ``tau``
    exactly is kept (``agree >= tau``, as in the official code), on the
    kernel and jnp paths; a row with a NaN does not vote; ``sign(0)`` is no
    vote but counts in the mean.

    Catches: ``>= sign_tau`` tightened to ``>``; the sign mean's ``1 / m``
    scaled (``2.0 /``); the screened row voting (its signs oppose the
    others' in columns 1 and 2), or voting +1; the jnp path's zero for no
    finite row given also for one (``m > 1``) or replaced (``1.0``).
    """
    x = np.array([[1.0, 1.0, -1.0, 1.0, 1.0],
                  [2.0, 1.0, -1.0, -1.0, 2.0],
                  [3.0, 1.0, -1.0, 1.0, -1.0],
                  [4.0, -1.0, 1.0, -1.0, 0.0],
                  [np.nan, -1.0, 1.0, 1.0, 5.0]], np.float32)
    # Agreement over rows 0-3: 1, 0.5, 0.5, 0, 0.25 (1 of 4 after sign(0) = 0).
    for kernel in ("auto", None):
        rule = agg.invariant(tau=0.5, kernel=kernel)
        out, _, info = jax.jit(lambda u, r=rule: r.aggregate(u, None, KEY))(jnp.asarray(x))
        assert np.asarray(out).tolist() == [2.5, 1.0, -1.0, 0.0, 0.0], kernel
        assert int(info["num_nonfinite"]) == 1 and np.isclose(float(info["mask_density"]), 0.6)
        one, none = np.full_like(x, np.nan), np.full_like(x, np.nan)
        one[0] = x[0]  # one finite row: full agreement, the row itself
        out = jax.jit(lambda u, r=rule: r.aggregate(u, None, KEY))
        assert np.asarray(out(jnp.asarray(one))[0]).tolist() == x[0].tolist(), kernel
        assert np.asarray(out(jnp.asarray(none))[0]).tolist() == [0.0] * 5, kernel



def test_bulyan_paths_agree_with_more_than_f_nonfinite_rows():
    """With more than ``f`` non-finite rows (3, 5, 6 or 7 of 7, ``f = 1``)
    the selection takes every finite row once, then picks finite ones again
    (never a non-finite one while one is finite); both paths then average the
    ``min(beta, m)`` values closest to the median of the ``m`` *distinct*
    finite rows (4, 2, 1: even and odd ``m``); no finite row gives zeros.
    The kernel reads a row mask; the jnp path used to count a repeat twice.

    Catches: the jnp path's repeated row counted twice (it gave another
    result than the kernel, which CPU runs use, for the same input); the
    tie order letting a non-finite row be selected (``valid`` for
    ``~valid``, ``/ (2 * n)``, ``* (2 / n)``, ``- removed * n``); the jnp
    median's ranks for even or single ``m`` (``/ 2``, ``// 3``,
    ``max(m, 2)``) and the count floor ``clip(.., 2)`` (one valid row).
    """
    x0 = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    fns = [jax.jit(agg.bulyan(1, kernel=k).aggregate) for k in ("auto", None)]
    for bad in ([1, 3, 5], [0, 1, 3, 4, 5], [0, 1, 2, 3, 4, 5], list(range(7))):
        x = x0.copy()
        x[bad] = np.nan
        keep = np.setdiff1d(np.arange(7), bad)
        finite = x[keep].astype(np.float64)
        want = np.zeros(4)
        if len(keep):
            med = np.median(finite, 0)
            closest = np.argsort(np.abs(finite - med), axis=0, kind="stable")[:min(3, len(keep))]
            want = np.take_along_axis(finite, closest, 0).mean(0)
        for fn in fns:
            out, _, info = fn(jnp.asarray(x), None, KEY)
            np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, err_msg=str(bad))
            if len(keep):  # every finite row once, before any repeat
                sel = np.asarray(info["selected"])
                assert sorted(sel[:len(keep)].tolist()) == keep.tolist(), (bad, sel)
                assert set(sel.tolist()) == set(keep.tolist()), (bad, sel)
            assert int(info["num_nonfinite"]) == len(bad)
    # The jnp step alone, one valid row among NaN rows (in Bulyan its masked
    # rows are repeats of finite rows, so there the count floor cannot show).
    one = np.full((5, 4), np.nan, np.float32)
    one[2] = x0[0]
    step = jax.jit(closest_to_median_mean, static_argnums=2)
    got = step(jnp.asarray(one), jnp.asarray(np.arange(5) == 2), 3)
    np.testing.assert_array_equal(np.asarray(got), x0[0])


def test_invariant_beta_bounds():
    """``beta`` in ``[0, 0.5)``: 0 builds (no trimming: the mean of the
    agreeing coordinates), 0.5 and above fail with the rule's message.
    Catches: ``0 < beta``, ``beta <= 0.5``, ``< 1.5`` in the check."""
    x = jnp.asarray(np.random.default_rng(30).standard_normal((5, 4)), jnp.float32)
    agg.invariant(beta=0.0).aggregate(x, None, jax.random.PRNGKey(0))
    for bad in (0.5, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"invariant: beta must be in \[0, 0.5\)"):
            agg.invariant(beta=bad)
