"""The second round of rules at their edges: float64 references for NNM, DnC's
coordinate subsets, Multi-Metrics' features and scores, SignGuard's clustering and
norm band, CAF's, SMEA's, MDA's, MeaMed's and MoNNA's smallest inputs and reported info,
CRFL's rounds. Added by the third mutation pass (docs/testing.md); split from
``round2_test.py`` so that the two files run on both xdist workers.

Each test's docstring names the deliberate bug (mutation) it catches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax.aggregators import AggregationContext
from fljax.aggregators.dnc import dnc_coordinates
from fljax.aggregators.multi_metrics import affine_gram, metric_features, pairwise_l1
from fljax.aggregators.signguard import sign_cluster_labels, signguard_block
from tests.aggregators import references_round2 as ref
from tests.aggregators.round2_test import KEY, _run


@pytest.mark.parametrize("name", ["mda", "smea", "meamed", "monna", "caf", "dnc"])
def test_factories_reject_bad_num_byzantine(name):
    """``num_byzantine`` must be an int >= 0: -1 and 1.5 fail when the rule is
    built, naming the rule and the value; 0 builds. Catches ``and`` as ``or``
    and ``>= 1`` in each rule's check."""
    factory = getattr(A, name)
    factory(0)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match=rf"{name}: num_byzantine={bad!r} must be an int >= 0"):
            factory(bad)


def test_caf_with_no_byzantine_is_the_mean_without_a_step():
    """``f = 0``: the loop's condition ``Σ c > n - 2f`` is false from the start
    (``Σ c = n``), so CAF returns the plain mean after 0 steps with no
    eigenvalue seen (inf); with ``f = 1`` it steps. Catches ``Σ c >=
    threshold`` (one step at ``f = 0``)."""
    x = np.random.default_rng(28).standard_normal((5, 4)).astype(np.float32)
    out, _, info = _run(A.caf(0), x)
    np.testing.assert_allclose(np.asarray(out), x.mean(0), rtol=1e-5, atol=1e-6)
    assert int(info["num_iters"]) == 0 and np.isinf(float(info["max_eigenvalue"]))
    assert int(_run(A.caf(1), x)[2]["num_iters"]) >= 1
    # Identical rows: zero covariance, the filter stops after its first step
    # (``tau_max <= 0``; ``< 0`` would step on to n).
    same = np.tile(x[:1], (5, 1))
    out, _, info = _run(A.caf(1), same)
    np.testing.assert_allclose(np.asarray(out), x[0], rtol=1e-6)
    assert int(info["num_iters"]) == 1


@pytest.mark.parametrize("nan_rows", [0, 1, 3])
def test_caf_nonfinite_rows_and_its_info(nan_rows):
    """CAF with ``k`` NaN rows equals the loop on the finite rows with ``f' =
    max(f - k, 0)`` (``f = 2``; three NaN rows leave ``f' = 0``: the plain
    mean); its info: the weights (zero on NaN rows, summing to 1), the
    smallest eigenvalue seen and the number of steps, as the reference's,
    on rows scaled by 1e3 (the Gram matrix is normalised internally). One
    row with ``f = 0`` is that row.

    Catches: ``f'`` floored at 1 or the threshold counting the NaN rows
    (``n + k``), the eigenvalue not scaled back (``/ scale``), the step count
    (``it - 1``, starting at 1), the info's names, the starting weights of
    one row halved."""
    rng = np.random.default_rng(29)
    x = (rng.standard_normal((9, 6)) * 1e3).astype(np.float32)
    x[:2] += 4e3
    x[9 - nan_rows:] = np.nan
    finite = np.isfinite(x).all(1)
    out, _, info = _run(A.caf(2), x)
    want, lam, steps = ref.caf_ref(x[finite].astype(np.float64), max(2 - nan_rows, 0), full=True)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-2)
    w = np.asarray(info["weights"])
    assert np.all(w[~finite] == 0) and abs(w.sum() - 1) < 1e-5
    assert int(info["num_iters"]) == steps
    if np.isfinite(lam):
        np.testing.assert_allclose(float(info["max_eigenvalue"]), lam, rtol=1e-3)
    else:
        assert np.isinf(float(info["max_eigenvalue"]))
    assert int(info["num_nonfinite"]) == nan_rows
    one = np.array([[2.0, -1.0, 0.5]], np.float32)
    np.testing.assert_allclose(np.asarray(_run(A.caf(0), one)[0]), one[0])


def test_smea_reports_its_subset_and_eigenvalue():
    """SMEA's info against the exhaustive loop: the kept rows and the top
    eigenvalue of their covariance (``1/k`` normalised); one row with ``f =
    0`` is that row. Catches: the eigenvalue times ``k``, the info's names,
    one kept row halved (``maximum(count, 2)``)."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    x[:2] += 3.0 * rng.standard_normal(5).astype(np.float32)
    out, _, info = _run(A.smea(2), x)
    want, kept, lam = ref.smea_ref(x.astype(np.float64), 2, full=True)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(info["selected"]), kept)
    np.testing.assert_allclose(float(info["max_eigenvalue"]), lam, rtol=1e-4)
    one = np.array([[1.0, -2.0]], np.float32)
    np.testing.assert_allclose(np.asarray(_run(A.smea(0), one)[0]), one[0])


@pytest.mark.parametrize("name", ["meamed", "monna"])
def test_median_based_rules_on_one_finite_row_or_none(name):
    """One row (``f = 0``), one finite row among NaN rows (they use up ``f``),
    and no finite row: the row itself, the finite row, zero. Catches: the
    median's upper rank floored at 2 (``maximum(m, 2) // 2``), the kept count
    floored at 2, ``m > 1`` or ``else 1.0`` in the no-row guard."""
    factory = getattr(A, name)
    one = np.array([[1.5, -2.0, 4.0]], np.float32)
    np.testing.assert_allclose(np.asarray(_run(factory(0), one)[0]), one[0])
    x = np.full((5, 3), np.nan, np.float32)
    x[2] = one[0]
    np.testing.assert_allclose(np.asarray(_run(factory(2), x)[0]), one[0])
    out = np.asarray(_run(factory(2), np.full((5, 3), np.nan, np.float32))[0])
    np.testing.assert_array_equal(out, 0.0)


def test_monna_near_rows_duplicates_and_its_pivot():
    """Rows at distances below 1 from the pivot, with the cut among them, and
    two exact duplicates of the pivot (distance 0: always kept): the kept rows
    and the mean are the reference's. The default pivot is row 0; a pivot
    outside ``[0, n)`` or not an int fails. Catches: distances of at most 1
    (``base > 1``) or 0 (``+inf``, ``base >= 0``) mis-ranked, another default
    pivot, the pivot checks, the info's name."""
    rng = np.random.default_rng(32)
    x = np.zeros((9, 4), np.float32)
    x[0] = rng.standard_normal(4)
    x[1] = x[5] = x[0]  # duplicates of the pivot
    for i, r in zip((2, 3, 4, 6, 7, 8), (0.1, 0.3, 0.5, 0.7, 0.9, 3.0)):
        v = rng.standard_normal(4)
        x[i] = x[0] + r * v / np.linalg.norm(v)
    for f in (2, 4):
        out, _, info = _run(A.monna(f), x)
        want = ref.monna_ref(x.astype(np.float64), f, 0)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
        sel = np.asarray(info["selected"])
        assert sel[[0, 1, 5]].all() and sel.sum() == 9 - f
    # Another pivot: row 8 (the far one) and its nearest.
    np.testing.assert_allclose(np.asarray(_run(A.monna(2, pivot=8), x)[0]),
                               ref.monna_ref(x.astype(np.float64), 2, 8), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"monna: pivot=9 must be < n=9"):
        _run(A.monna(2, pivot=9), x)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="monna: pivot="):
            A.monna(1, pivot=bad)


@pytest.mark.parametrize("n, f, case", [(7, 2, "plain"), (8, 3, "ties"), (6, 5, "k=1"),
                                        (9, 2, "nonfinite"), (6, 1, "few-finite")])
def test_nnm_matches_its_reference(n, f, case):
    """NNM against a float64 loop: each row's ``n - f`` nearest rows (itself
    first, ties by the key's per-client rank), non-finite rows passed through,
    ``num_nonfinite`` reported (also under ``compose``'s ``nnm/`` prefix).

    Catches (the ByzFL comparison skips where ByzFL is not installed):
    neighbourhoods of ``n - f + 1`` or ``n + f`` rows, ``order[:, :k]`` off by
    one, itself not put first among duplicates (``eye`` not negated), ties
    broken by index, invalid rows chosen (``chosen | valid``), the mixing
    count floored at 2 (one neighbour: ``f = n - 1``), a wrong count of
    non-finite rows, the pre-aggregator's name."""
    rng = np.random.default_rng(n * 10 + f)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    x[:f] *= 4.0
    if case == "ties":  # row 0's 5 rows at distance 1 (4 taken): the key's rank decides
        x = np.zeros((n, 6), np.float32)
        x[1:6] = [[1, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0],
                  [0, -1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
        x[6, 3], x[7, 4] = 10.0, 20.0
    if case == "nonfinite":
        x[1, 2], x[5] = np.nan, np.inf
    if case == "few-finite":  # 2 finite rows, fewer than n - f = 5
        x[2:] = np.nan
    rank = np.asarray(jax.random.permutation(KEY, n))
    rows, _, info = jax.jit(A.nnm(f).apply)(jnp.asarray(x), KEY)
    want = ref.nnm(x, f, rank)
    finite = np.isfinite(x).all(1)
    np.testing.assert_allclose(np.asarray(rows)[finite], want[finite], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(rows)[~finite], x[~finite])
    assert int(info["num_nonfinite"]) == int(np.sum(~finite))
    if case != "nonfinite":
        return
    # compose: the stages' half of the key, split once per stage
    k_stage = jax.random.split(jax.random.split(KEY)[0], 1)[0]
    want = ref.nnm(x, f, np.asarray(jax.random.permutation(k_stage, n)))
    out, _, info = _run(A.compose(A.nnm(f), aggregator=A.mean(weighted=False)), x)
    np.testing.assert_allclose(np.asarray(out), want[finite].mean(0), rtol=1e-5, atol=1e-6)
    assert int(info["nnm/num_nonfinite"]) == int(np.sum(~finite))


def test_nnm_bounds():
    """``f = 0`` (every row the mean of all) and ``f = n - 1`` build; ``f = n``
    and ``f < 0`` fail with the bound. Catches: ``num_byzantine >= 1`` or
    ``< n`` as ``<= n`` in the checks."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), jnp.float32)
    rows = np.asarray(A.nnm(0).apply(x, KEY)[0])
    np.testing.assert_allclose(rows, np.broadcast_to(np.asarray(x).mean(0), (4, 3)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(A.nnm(3).apply(x, KEY)[0]), np.asarray(x))
    with pytest.raises(ValueError, match=r"nnm: needs num_byzantine < n, got n=4, num_byzantine=4"):
        A.nnm(4).apply(x, KEY)
    for bad in (-1, 1.0, "1"):
        with pytest.raises(ValueError, match="nnm: num_byzantine="):
            A.nnm(bad)


def test_signguard_block_is_a_uniform_contiguous_block():
    """``size = max(1, int(fraction * d))`` and the start is uniform over
    ``[0, d - size]`` (400 keys: every start drawn, each count within 5
    standard deviations). Catches: ``max(2, ..)``, ``fraction / d``, a start
    range one short or long."""
    assert signguard_block(KEY, 20, 0.01)[1] == 1 and signguard_block(KEY, 20, 0.25)[1] == 5
    start, size = signguard_block(KEY, 20, 1.0)
    assert size == 20 and int(start) == 0
    starts = np.asarray(jax.vmap(lambda k: signguard_block(k, 20, 0.25)[0])(
        jax.random.split(KEY, 400)))
    counts = np.bincount(starts, minlength=16)
    assert len(counts) == 16 and np.all(np.abs(counts - 25) < 5 * np.sqrt(25 * 15 / 16)), counts


def test_signguard_clusterings_on_built_features():
    """The host clustering on features whose labels are known by construction.
    DBSCAN (eps 0.05, 3 samples): a chain spaced 0.04 is one cluster, a pair
    and a lone point are outliers, an invalid row is -1. MeanShift equals the
    reference's (bandwidth at quantile 0.5, bin seeding); identical
    features group by row; one valid row is cluster 0; none valid, all -1.

    Catches: other DBSCAN or MeanShift settings, invalid rows labelled, the
    identical-features fallback or the one-row case broken."""
    chain = [[0.04 * i, 0, 0] for i in range(4)]
    feats = np.array(chain + [[1, 1, 1], [1.03, 1, 1], [0.5, 0.5, 0.5], [0.3, 0, 0]], np.float32)
    valid = np.array([True] * 7 + [False])
    np.testing.assert_array_equal(sign_cluster_labels(feats, valid, "dbscan"),
                                  [0, 0, 0, 0, -1, -1, -1, -1])
    rng = np.random.default_rng(5)
    spread = np.concatenate([rng.normal(0.2, 0.02, (6, 3)), rng.normal(0.8, 0.05, (4, 3)),
                             [[0.5, 0.0, 1.0], [1.0, 1.0, 0.0]]]).astype(np.float32)
    got = sign_cluster_labels(spread, np.ones(12, bool), "meanshift")
    np.testing.assert_array_equal(got, ref.signguard_labels(spread.astype(np.float64)))
    assert got.max() >= 2  # more than two clusters: the bandwidth matters
    many = rng.random((60, 3)).astype(np.float32)  # more rows than estimate_bandwidth samples
    np.testing.assert_array_equal(sign_cluster_labels(many, np.ones(60, bool), "meanshift"),
                                  ref.signguard_labels(many.astype(np.float64)))
    same = np.array([[1, 0, 0]] * 3 + [[0, 0, 1]] * 2, np.float32)
    np.testing.assert_array_equal(sign_cluster_labels(same, np.ones(5, bool), "meanshift"),
                                  [1, 1, 1, 0, 0])
    one = np.array([True, False, False, False, False])
    np.testing.assert_array_equal(sign_cluster_labels(spread[:5], one, "meanshift"),
                                  [0, -1, -1, -1, -1])
    for clustering in ("meanshift", "dbscan"):
        np.testing.assert_array_equal(sign_cluster_labels(spread[:4], np.zeros(4, bool),
                                                          clustering), [-1] * 4)


@pytest.mark.parametrize("clustering", ["meanshift", "dbscan"])
def test_signguard_drops_the_minority_sign_cluster(clustering):
    """Ten rows of equal norms: seven with mostly positive signs, three with
    mostly negative (all inside the norm band). The sign clusters decide:
    the output is the reference's and the three are not selected."""
    rng = np.random.default_rng(9)
    x = np.abs(rng.standard_normal((10, 60))) * np.where(rng.random((10, 60)) < 0.9, 1, -1)
    x[7:] *= -1.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= rng.uniform(0.9, 1.1, (10, 1))
    out, _, info = _run(A.signguard(clustering=clustering), x)
    start, size = signguard_block(KEY, 60, 0.1)
    want = ref.signguard_ref(x, int(start), size, clustering=clustering)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    selected = np.asarray(info["selected"])
    assert not selected[7:].any() and selected[:7].sum() >= 4, selected
    np.testing.assert_array_equal(np.asarray(info["norm_ok"]), np.ones(10, bool))


@pytest.mark.parametrize("on", ["models", "updates"])
def test_multi_metrics_features_match_the_official_sums(on):
    """The three per-client sums against the official loop in float64, each
    feature up to its positive factor (divided by its largest value), at
    ``d = 300`` (one Manhattan tile of 256 and a remainder) with a NaN row
    (zero features, left out of every sum), a sign-flipped row (cosine -1:
    ``1 - cos`` at its bound 2) and a zero model (cosine 0 by convention).
    The Mahalanobis scores the rule reports equal the official ones (they do
    not depend on the features' factors).

    Catches (the aggregate's test only sees which rows rank lowest): the
    Manhattan remainder tile dropped or subtracted, the centring by the
    mean unit vector wrong (signs, ``* m``, the shift's term), the Gram
    matrix's offset sign, ``1 - cos`` scaled (``1.5 *``: the bound binds),
    a zero row's cosines not 1 or taken from the Gram matrix, constants
    added to a feature (``where(pair, .., 1.0)``), invalid rows' features
    not zero, the covariance's divisor (``m - 2``, ``* (m - 1)``)."""
    rng = np.random.default_rng(21)
    n, d = 8, 300
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, (n, 1))
    x[1] *= 4.0
    x[3, 5] = np.nan
    x[5] = -x[0]
    shift = rng.standard_normal(d) * 2.0 if on == "models" else np.zeros(d)
    x[6] = -shift if on == "models" else 0.0  # the zero model
    x[5] -= 2.0 * shift  # w_5 = -w_0
    valid = np.isfinite(x).all(1)
    x32, s32 = jnp.asarray(x, jnp.float32), jnp.asarray(shift, jnp.float32)
    got = np.asarray(metric_features(x32, jnp.asarray(valid), s32))
    want = ref.multi_metrics_features(x[valid] + shift)
    np.testing.assert_allclose(got[valid] / got[valid].max(0), want / want.max(0),
                               rtol=2e-4, atol=1e-6)
    np.testing.assert_array_equal(got[~valid], 0.0)
    info = A.multi_metrics(p=0.5, on=on).aggregate(x32, None, KEY,
                                                   AggregationContext(params=s32))[2]
    scores = np.asarray(info["scores"])
    np.testing.assert_allclose(scores[valid], ref.multi_metrics_scores(want), rtol=1e-3)
    assert np.all(np.isinf(scores[~valid]))


def test_multi_metrics_cosines_of_models_with_a_large_common_part():
    """Models ``params + Δ_i`` with ``|params| ~ 1e3`` and ``|Δ_i| ~ 1`` are
    nearly parallel (``1 - cos ~ 1e-7``): the cosine sums still match the
    float64 loop to 1e-3, because the Gram matrix is of the unit vectors
    centred on their mean; on the updates themselves, one of norm 0.5.
    Catches: the shift's term in the mean unit vector (its sign, ``* m``),
    the offset's sign (``+unit_mean``: cancellation at float32), a norm
    below 1 taken as zero (``base > 1``)."""
    rng = np.random.default_rng(23)
    n, d = 6, 40
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))
    x[2] = 0.0
    x[2, :4] = 2.0  # ‖Δ_2‖ = 4
    x[4] *= 0.5 / np.linalg.norm(x[4])  # a norm below 1
    params = 1e3 * rng.uniform(0.5, 1.5, d)
    valid = np.ones(n, bool)
    got = np.asarray(metric_features(jnp.asarray(x, jnp.float32), jnp.asarray(valid),
                                     jnp.asarray(params, jnp.float32)))[:, 0]
    w = (x.astype(np.float32) + params.astype(np.float32)).astype(np.float64)
    want = ref.multi_metrics_features(w)[:, 0]
    np.testing.assert_allclose(got / got.max(), want / want.max(), rtol=1e-3)
    on_updates = np.asarray(metric_features(jnp.asarray(x, jnp.float32), jnp.asarray(valid),
                                            jnp.zeros(d)))[:, 0]
    want = ref.multi_metrics_features(x)[:, 0]
    np.testing.assert_allclose(on_updates / on_updates.max(), want / want.max(), rtol=1e-4)


def test_multi_metrics_p_bounds():
    """``p = 1`` keeps every client (the mean); ``p = 0`` and ``p > 1`` fail when
    built. Catches: ``0 <= p`` or ``p < 1`` or ``p <= 2`` in the check."""
    x = np.random.default_rng(24).standard_normal((5, 4)).astype(np.float32)
    out, _, info = _run(A.multi_metrics(p=1.0, on="updates"), x)
    np.testing.assert_allclose(np.asarray(out), x.mean(0), rtol=1e-5, atol=1e-6)
    assert np.asarray(info["selected"]).all()
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"multi_metrics: p="):
            A.multi_metrics(p=bad)
    # Two valid rows have equal features (one pair each), so the covariance is
    # zero and both score 0, as in the reference; one valid row has no pair.
    y = x[:3].copy()
    y[2] = np.nan
    scores = np.asarray(_run(A.multi_metrics(p=1.0, on="updates"), y)[2]["scores"])
    want = ref.multi_metrics_scores(ref.multi_metrics_features(y[:2].astype(np.float64)))
    np.testing.assert_allclose(scores[:2], want, rtol=1e-4)
    y[1] = np.nan
    assert float(_run(A.multi_metrics(p=1.0, on="updates"), y)[2]["scores"][0]) == 0.0


def test_multi_metrics_client_weights_and_no_kept_row():
    """The kept rows are averaged with the clients' weights (here summing to
    0.6, below 1), as the reference; no kept row (``floor(p m) = 0`` after
    three NaN rows) gives zero; ``on='models'`` without the parameters fails
    with the rule's message. Catches: the weights ignored, weights summing
    below 1 not normalised (``total > 1``), every valid row summed when none
    is kept, ``and`` as ``or`` in the context check."""
    rng = np.random.default_rng(25)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    params = rng.standard_normal(5).astype(np.float32)
    w = rng.uniform(0.05, 0.15, 7).astype(np.float32)
    out, _, _ = _run(A.multi_metrics(p=0.5), x,
                     AggregationContext(params=jnp.asarray(params), weights=jnp.asarray(w)))
    rank = np.asarray(jax.random.permutation(KEY, 7))
    want = ref.multi_metrics_ref(x.astype(np.float64), params.astype(np.float64), p=0.5,
                                 rank=rank, weights=w)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    y = x[:5].copy()
    y[:3] = np.nan
    out, _, info = _run(A.multi_metrics(p=0.3, on="updates"), y)
    assert not np.asarray(info["selected"]).any()
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    with pytest.raises(ValueError, match=r"multi_metrics: on='models' needs context.params"):
        _run(A.multi_metrics(), x)


def test_multi_metrics_blocked_gram_and_manhattan_sums_match_numpy():
    """``affine_gram`` and ``pairwise_l1`` in tiles of 7 columns over 30 (four
    tiles and a remainder of 2), invalid rows zero, against NumPy. Catches:
    the remainder tile skipped, subtracted or cut at the wrong column, a tile
    added with the wrong sign."""
    rng = np.random.default_rng(22)
    n, d = 5, 30
    x = rng.standard_normal((n, d)).astype(np.float32)
    valid = np.array([True, True, False, True, True])
    rs, ss = rng.uniform(0.5, 2, n).astype(np.float32), rng.uniform(0.5, 2, n).astype(np.float32)
    shift = rng.standard_normal(d).astype(np.float32)
    off = rng.standard_normal(d).astype(np.float32)
    r = np.where(valid[:, None], x * rs[:, None] + shift[None] * ss[:, None] + off[None], 0.0)
    got = affine_gram(jnp.asarray(x), jnp.asarray(rs), jnp.asarray(shift), jnp.asarray(ss),
                      jnp.asarray(off), jnp.asarray(valid), columns=7)
    np.testing.assert_allclose(np.asarray(got), r @ r.T, rtol=1e-5, atol=1e-4)
    z = np.where(valid[:, None], x, 0.0)
    got = pairwise_l1(jnp.asarray(x), jnp.asarray(valid), columns=7)
    np.testing.assert_allclose(np.asarray(got), np.abs(z[:, None] - z[None]).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("zeros", [0.1, 0.8])
def test_signguard_counts_zero_coordinates_as_their_own_sign(zeros):
    """Seven dense rows and three rows with a share ``zeros`` of exact zeros
    (sparse updates) of the same norms; a few entries are exactly 1. Only the
    share of zeros tells them apart: the output, the kept rows and the labels
    match the reference, and the sparse rows are dropped. At 10 % zeros the
    zero share's column maximum is 0.1, so the features must be divided by
    their maxima to count.

    Catches: ``!= 0`` or ``== 1`` as the zero share, features multiplied by
    their maxima, the info's labels. (Zeros also counted as positive or
    negative pass here: the zero share alone separates these rows; see
    ``test_signguard_positive_and_negative_shares_leave_zeros_out``.)"""
    rng = np.random.default_rng(26)
    x = rng.standard_normal((10, 200))
    x[:, ::17] = 1.0
    sparse = rng.random((3, 200)) < zeros
    x[7:][sparse] = 0.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out, _, info = _run(A.signguard(selection_fraction=0.5), x)
    start, size = signguard_block(KEY, 200, 0.5)
    want = ref.signguard_ref(x, int(start), size)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    selected = np.asarray(info["selected"])
    assert not selected[7:].any() and selected[:7].all(), selected
    labels = np.asarray(info["labels"])
    assert len(set(labels[:7])) == 1 and labels[7] != labels[0]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_signguard_positive_and_negative_shares_leave_zeros_out(sign):
    """Five rows with 30 % of one sign, 60 % zeros, 10 % of the other, and
    three with 28 % / 62 % / 10 % (the whole row is the sign block). Scaled
    by their column maxima the two groups' features differ by 0.067 in the
    first share and 0.032 in the zero share: farther apart than DBSCAN's eps
    (0.05), so the three are a cluster of their own and are dropped (the
    reference's output). ``sign = -1`` mirrors the rows.

    Catches: zeros counted in the positive or the negative share too
    (``block >= 0``, ``block <= 0``): that share is then 0.9 in both groups,
    only the zero share's 0.032 remains and DBSCAN joins all eight rows."""
    rng = np.random.default_rng(31)
    rows = []
    for first, zeros in [(30, 60)] * 5 + [(28, 62)] * 3:
        signs = np.repeat([sign, 0.0, -sign], [first, zeros, 100 - first - zeros])
        rows.append(rng.permutation(signs) * rng.uniform(0.5, 1.5, 100))
    x = np.stack(rows)
    out, _, info = _run(A.signguard(selection_fraction=1.0, clustering="dbscan"), x)
    want = ref.signguard_ref(x, 0, 100, clustering="dbscan")
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(info["selected"]), [True] * 5 + [False] * 3)


def test_signguard_edges():
    """One finite row is kept (it is its own cluster of one and its own
    median); no finite row gives zero with median 0; the norm band is strict
    at both ends (rows of norm exactly ``lower * med`` and ``upper * med``,
    with ``med = 2``); the default ``upper`` is 3; ``selection_fraction`` in
    ``(0, 1]``; a traced ``lower`` beside a number ``upper`` is not checked.

    Catches: ``m > 1`` or the cluster size ``> 1`` (one row dropped), the
    kept count floored at 2, the median of no row not 0, ``>=`` / ``<=`` in
    the band, ``lower / med``, another default, the bounds' checks."""
    y = np.full((3, 4), np.nan, np.float32)
    y[1] = [3.0, 0.0, -4.0, 0.0]
    out, _, info = _run(A.signguard(), y)
    np.testing.assert_allclose(np.asarray(out), y[1])
    assert float(info["median_norm"]) == 5.0 and int(info["num_nonfinite"]) == 2
    out, _, info = _run(A.signguard(), np.full((3, 4), np.nan))
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    assert float(info["median_norm"]) == 0.0
    # norms 1 (= 0.5 * 2), 2, 2, 2, 6 (= 3 * 2), 5.5: the band (1, 6) keeps rows 1, 2, 3, 5.
    e = np.eye(6, dtype=np.float32)[0]
    x = np.stack([1.0 * e, 2.0 * e, 2.0 * e, 2.0 * e, 6.0 * e, 5.5 * e])
    info = _run(A.signguard(lower=0.5), x)[2]
    assert float(info["median_norm"]) == 2.0
    np.testing.assert_array_equal(np.asarray(info["norm_ok"]), [0, 1, 1, 1, 0, 1])
    explicit = _run(A.signguard(lower=0.5, upper=3.0), x)[2]["norm_ok"]
    np.testing.assert_array_equal(np.asarray(explicit), np.asarray(info["norm_ok"]))
    A.signguard(selection_fraction=1.0)
    A.signguard(lower=0.0)
    for bad in (lambda: A.signguard(selection_fraction=0.0),
                lambda: A.signguard(selection_fraction=1.5),
                lambda: A.signguard(selection_fraction="0.1"),
                lambda: A.signguard(lower=1.0, upper=1.0),
                lambda: A.signguard(lower=-0.1)):
        with pytest.raises(ValueError, match="signguard: "):
            bad()
    fn = jax.jit(lambda v: A.signguard(lower=v, upper=3.0).aggregate(
        jnp.asarray(x), None, KEY)[2]["norm_ok"])
    np.testing.assert_array_equal(np.asarray(fn(0.5)), np.asarray(info["norm_ok"]))


def _jit_run(rule, x):
    """``rule.aggregate`` jitted: MDA's search runs ~4x slower op by op."""
    x = jnp.asarray(x, jnp.float32)
    return jax.jit(rule.aggregate)(x, rule.init(x.shape[1]), KEY)


def test_mda_smallest_inputs_and_its_diameter():
    """One row (no pair: diameter 0, the row itself), two rows (their mean,
    their distance) and three rows whose farthest pair are neighbours in
    client order (0 and 1), with ``f = 0``; the reported diameter is the
    largest distance inside the kept subset.

    Catches: the one kept row halved (``maximum(count, 2)``), the pairs
    ``(i, i + 1)`` skipped (``triu(k=2)``), the info's names, the spread's
    tie-break, ``work < max_work``, infinite distances in the spread."""
    one = np.array([[3.0, -4.0]], np.float32)
    out, _, info = _jit_run(A.mda(0), one)
    np.testing.assert_allclose(np.asarray(out), one[0])
    assert float(info["diameter"]) == 0.0 and np.asarray(info["selected"]).tolist() == [True]
    two = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    out, _, info = _jit_run(A.mda(0), two)
    np.testing.assert_allclose(np.asarray(out), [1.5, 2.0])
    np.testing.assert_allclose(float(info["diameter"]), 5.0, rtol=1e-6)
    three = np.array([[0.0, 0.0], [6.0, 0.0], [3.0, 1.0]], np.float32)
    out, _, info = _jit_run(A.mda(0), three)
    np.testing.assert_allclose(float(info["diameter"]), 6.0, rtol=1e-6)
    x = np.random.default_rng(27).standard_normal((7, 3)).astype(np.float32)
    x[0] += 6.0
    out, _, info = _jit_run(A.mda(2), x)
    kept = x[np.asarray(info["selected"])]
    assert len(kept) == 5
    want = max(np.linalg.norm(a - b) for a in kept for b in kept)
    np.testing.assert_allclose(float(info["diameter"]), want, rtol=1e-5)
    np.testing.assert_allclose(out, ref.mda_ref(x.astype(np.float64), 2), rtol=1e-5, atol=1e-6)
    # Two leaves of equal diameter (2: A-B) after dropping C or D (the farthest
    # pair): the smaller spread ({A, B, C}) wins for every key. Catches the
    # spread divided by the mask (``/ m``: NaN spreads, the key decides).
    abcd = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.9], [1.0, -1.2]], np.float32)
    rule = A.mda(1)
    run = jax.jit(lambda k: rule.aggregate(jnp.asarray(abcd), rule.init(2), k)[0])  # one compile
    for seed in range(6):
        np.testing.assert_allclose(np.asarray(run(jax.random.PRNGKey(seed))), abcd[:3].mean(0),
                                   rtol=1e-6)
    # More non-finite rows (3, 4) than f = 1: every subset holds one, so every
    # leaf's diameter is infinite and the spread over the finite pairs decides.
    # Dropping row 0 ({1, 2, 3, 4}: spread 2 * 0.01) beats dropping row 3
    # ({0, 1, 2, 4}: 2 * (0.25 + 0.16 + 0.01)); the outlying finite row goes.
    # Catches infinite distances counted as 1 in the spread (``finite_d``'s
    # fill: 10 + 0.02 against 6 + 0.84, the other leaf).
    nan2 = np.array([[0.5, 0.0], [0.0, 0.0], [0.1, 0.0], [np.nan, 0.0], [0.0, np.inf]],
                    np.float32)
    out, _, info = _jit_run(A.mda(1), nan2)
    np.testing.assert_allclose(np.asarray(out), [0.05, 0.0], rtol=1e-6)
    assert np.asarray(info["selected"]).tolist() == [False, True, True, False, False]
    assert int(info["num_nonfinite"]) == 2
    # The size bound is inclusive: 2^f n^2 equal to max_work is allowed.
    jax.eval_shape(A.mda(2, max_work=4 * 10 * 10).aggregate, jnp.zeros((10, 3)), None, KEY)


def test_bucketing_of_one_only_shuffles_and_bad_sizes_fail():
    """``bucket_size = 1`` builds and returns the rows in the key's order;
    ``0``, ``-1`` and ``2.0`` fail. Catches: ``>= 1`` as ``> 1`` / ``>= 2``,
    ``and`` as ``or`` in the check."""
    x = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    rows, _, info = A.bucketing(1).apply(jnp.asarray(x), KEY)
    bucket = np.asarray(info["bucket"])
    assert sorted(bucket.tolist()) == list(range(5))
    np.testing.assert_array_equal(np.asarray(rows)[bucket], x)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="bucketing: bucket_size="):
            A.bucketing(bad)


def test_compose_groups_consecutive_transforms_between_pre_aggregators():
    """Two transforms, a pre-aggregator, two more transforms: the stages run
    in order (each group of consecutive transforms as one chain, one key per
    group), equal to applying them by hand. Catches: a transform appended to
    another group than the last (``groups[+1]``, ``groups[-2]``)."""
    from fljax.transforms import clip_by_norm

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((7, 5)) * 3).astype(np.float32)
    rule = A.compose(clip_by_norm(2.0), clip_by_norm(1.0), A.nnm(2), clip_by_norm(0.5),
                     clip_by_norm(3.0), aggregator=A.mean(weighted=False))
    out, _, info = _run(rule, x)

    def clip(v, c):
        return v * np.minimum(1.0, c / np.linalg.norm(v, axis=1, keepdims=True))

    k_stages = jax.random.split(KEY)[0]
    rank = np.asarray(jax.random.permutation(jax.random.split(k_stages, 3)[1], 7))
    want = clip(ref.nnm(clip(x, 1.0), 2, rank), 0.5).mean(0)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
    assert int(info["nnm/num_nonfinite"]) == 0


@pytest.mark.parametrize("case", ["subsets", "nonfinite", "filter_frac"])
def test_dnc_subsets_match_the_reference(case):
    """DnC with ``sub_dim < d`` (3 iterations of 12 of 40 coordinates) against
    Algorithm 3 in float64: the output, the kept rows and the last
    iteration's scores; with two NaN rows (they count towards ``f`` and the
    reference sees only the finite rows), and with ``filter_frac = 1.5``.

    Catches (the slow test below has larger shapes): the coordinate subsets
    unused (``coords = None``), one iteration instead of ``num_iters``, the
    gather along another axis, ``top_k``'s values taken for indices, the
    non-finite rows given non-zero centred rows (``where(ok, .., 1.0)``), the
    info's names."""
    rng = np.random.default_rng(17)
    n, d, f, frac = 9, 40, 2, 1.0
    x = rng.standard_normal((n, d))
    x[:2] += 2.5 * rng.standard_normal(d)  # a shifted pair
    if case == "nonfinite":
        f = 3
        x[4, 7], x[6] = np.nan, np.inf
    if case == "filter_frac":
        frac = 1.5
    finite = np.isfinite(x).all(1)
    for key in (jax.random.PRNGKey(1), jax.random.PRNGKey(2)):
        out, _, info = jax.jit(A.dnc(f, sub_dim=12, num_iters=3, filter_frac=frac).aggregate)(
            jnp.asarray(x, jnp.float32), None, key)
        k_coords, k_tie = jax.random.split(key)
        coords = list(np.asarray(dnc_coordinates(k_coords, d, 12, 3)))
        rank = np.asarray(jax.random.permutation(k_tie, n))[finite]
        want, kept, scores = ref.dnc_ref(x[finite], f - int(np.sum(~finite)), coords, rank,
                                         filter_frac=frac, full=True)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.flatnonzero(info["selected"]),
                                      np.flatnonzero(finite)[kept])
        got = np.asarray(info["scores"])
        np.testing.assert_allclose(got[finite], scores, rtol=1e-3, atol=1e-4 * scores.max())
        assert np.all(np.isinf(got[~finite]))
        assert int(info["num_nonfinite"]) == int(np.sum(~finite))


def test_dnc_coordinates_are_uniform_subsets():
    """Each iteration's subset holds ``sub_dim`` distinct coordinates of
    ``range(dim)``, the iterations differ, every coordinate is drawn with
    probability ``b / d`` (over 300 keys: within 5 standard deviations of the
    binomial count), and ``sub_dim >= dim`` means all coordinates (None).

    Catches: the same key for every iteration, indices not distinct (drawn
    with replacement), a biased draw, the all-coordinates shortcut taken only
    above ``dim`` (``sub_dim > dim``)."""
    c = np.asarray(dnc_coordinates(KEY, 30, 8, 4))
    assert c.shape == (4, 8) and c.min() >= 0 and c.max() < 30
    assert all(len(set(row)) == 8 for row in c)
    assert len({tuple(sorted(row)) for row in c}) == 4
    draws = jax.vmap(lambda k: dnc_coordinates(k, 30, 8, 1)[0])(
        jax.random.split(jax.random.PRNGKey(3), 300))
    counts = np.bincount(np.asarray(draws).ravel(), minlength=30)
    p = 8 / 30
    assert np.all(np.abs(counts - 300 * p) < 5 * np.sqrt(300 * p * (1 - p))), counts
    assert dnc_coordinates(KEY, 30, 30, 4) is None and dnc_coordinates(KEY, 30, 31, 4) is None


def test_dnc_defaults_and_bounds():
    """The defaults are the paper's ``sub_dim = 10000``, fedlib's
    ``num_iters = 5`` and FLPoison's ``filter_frac = 1``; the factory's
    bounds hold at their edges (``f = 0``, ``sub_dim = 1``, ``num_iters =
    1``, ``filter_frac = 0``, dropping ``n - 1`` rows: the one kept row is
    the output); one finite row scores 0.

    Catches: other defaults, ``>=`` as ``>`` or ``and`` as ``or`` in the
    checks, ``floor(c f) < n`` as ``<= n``, the mean of one kept row divided
    by 2 (``maximum(count, 2)``), the centre of one finite row halved."""
    import inspect

    params = inspect.signature(A.dnc).parameters
    assert (params["sub_dim"].default, params["num_iters"].default) == (10_000, 5)
    assert params["filter_frac"].default == 1.0
    y = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    for rule in (A.dnc(0), A.dnc(1, sub_dim=1), A.dnc(1, num_iters=1), A.dnc(1, filter_frac=0.0)):
        assert np.all(np.isfinite(np.asarray(_run(rule, y)[0])))
    out, _, info = _run(A.dnc(1, filter_frac=3.0), y)  # drops 3 of 4 rows: one is kept
    kept = np.flatnonzero(info["selected"])
    assert len(kept) == 1
    np.testing.assert_allclose(np.asarray(out), y[kept[0]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"dnc: drops floor\(filter_frac \* num_byzantine\) = 4"):
        _run(A.dnc(1, filter_frac=4.0), y)
    for bad in (lambda: A.dnc(-1), lambda: A.dnc(1.5), lambda: A.dnc(1, sub_dim=0),
                lambda: A.dnc(1, sub_dim=2.0), lambda: A.dnc(1, num_iters=0),
                lambda: A.dnc(1, num_iters=2.0), lambda: A.dnc(1, filter_frac=-0.5)):
        with pytest.raises(ValueError, match="dnc: "):
            bad()
    z = np.full((3, 6), np.nan, np.float32)
    z[1] = y[0]
    out, _, info = _run(A.dnc(1), z)  # one finite row (the two NaN rows use up f)
    np.testing.assert_allclose(np.asarray(out), y[0], rtol=1e-6)
    assert float(info["scores"][1]) == 0.0


def test_crfl_rounds_noise_and_base():
    """CRFL over three rounds against the reference (FedAvg of the finite rows
    with client weights summing to 0.28, the model clipped to ``clip + growth
    * t``), its info; the noise is exactly ``sigma`` times the key's normal
    draw; a named base rule with its kwargs, and a built one.

    Catches: the weights ignored or not normalised when they sum below 1,
    the bound's growth subtracted, the round not counted by one, the noise's
    sign or ``sigma / normal``, the model norm (``scale / base``), the info's
    names, ``clipped`` at equality, the base's kwargs dropped, a built base
    rule replaced."""
    x = np.random.default_rng(8).standard_normal((7, 6)).astype(np.float32)
    x[4, 1] = np.nan
    params = np.full(6, 3.0, np.float32)
    w = np.arange(1.0, 8.0) / 100.0
    ctx = AggregationContext(params=jnp.asarray(params), weights=jnp.asarray(w, jnp.float32))
    rule = A.crfl(2.0, 0.0, clip_growth=0.5)
    fn = jax.jit(rule.aggregate)
    state = rule.init(6)
    for t in range(3):
        out, state, info = fn(jnp.asarray(x), state, KEY, ctx)
        want = ref.crfl_ref(x.astype(np.float64), params, 2.0 + 0.5 * t, weights=w)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
        assert float(info["clip_bound"]) == 2.0 + 0.5 * t and bool(info["clipped"])
        unclipped = params + ref.crfl_ref(x.astype(np.float64), params, np.inf, weights=w)
        np.testing.assert_allclose(float(info["model_norm"]), np.linalg.norm(unclipped),
                                   rtol=1e-5)
        assert int(state.round) == t + 1
    # Defaults: no growth. A model of norm exactly the bound is not clipped.
    edge = A.crfl(2.0, 0.0)
    e_state = edge.init(6)
    p2 = np.zeros(6, np.float32)
    p2[0] = 2.0
    for _ in range(2):
        out, e_state, info = edge.aggregate(jnp.zeros((3, 6)), e_state, KEY,
                                            AggregationContext(params=jnp.asarray(p2)))
        assert float(info["clip_bound"]) == 2.0 and not bool(info["clipped"])
    # The noise: sigma times the normal draw of the key's second half.
    out, _, _ = _run(A.crfl(100.0, 0.5), np.zeros((5, 50)),
                     AggregationContext(params=jnp.zeros(50)))
    noise = jax.random.normal(jax.random.split(KEY)[1], (50,))
    np.testing.assert_allclose(np.asarray(out), 0.5 * np.asarray(noise), rtol=1e-6, atol=1e-7)
    # A named robust base rule (with kwargs), and a built one.
    y = np.random.default_rng(9).standard_normal((7, 6)).astype(np.float32)
    y[0] = 1e6
    z = AggregationContext(params=jnp.zeros(6))
    out, _, _ = _run(A.crfl(50.0, 0.0, base="coordinate_median"), y, z)
    np.testing.assert_allclose(out, np.median(y, axis=0), rtol=1e-5, atol=1e-6)
    out, _, _ = _run(A.crfl(50.0, 0.0, base="trimmed_mean", base_kwargs={"num_trim": 2}), y, z)
    trimmed = np.sort(y, axis=0)[2:-2].mean(0)
    np.testing.assert_allclose(out, trimmed, rtol=1e-5, atol=1e-6)
    out, _, _ = _run(A.crfl(50.0, 0.0, base=A.coordinate_median()), y, z)
    np.testing.assert_allclose(out, np.median(y, axis=0), rtol=1e-5, atol=1e-6)


def test_crfl_bounds_and_context():
    """``clip`` just above 0 builds, 0 fails; ``base='crfl'`` fails; no
    parameters fail with the rule's message; a non-finite model gives zero.
    Catches: ``clip >= 0`` / ``> 1``, the base check's ``and`` / ``!=``
    mutated, the context check's ``or``, ``where(ok, .., 1.0)``."""
    A.crfl(0.5, 0.1)
    for bad in (lambda: A.crfl(0.0, 0.1), lambda: A.crfl(1.0, 0.1, base="crfl")):
        with pytest.raises(ValueError, match="crfl: "):
            bad()
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"crfl: needs context.params"):
        _run(A.crfl(1.0, 0.0), x)
    out, _, _ = _run(A.crfl(1.0, 0.0), x, AggregationContext(params=jnp.full(4, jnp.inf)))
    np.testing.assert_array_equal(np.asarray(out), 0.0)
