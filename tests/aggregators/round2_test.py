"""Round-two rules and pre-aggregators (issue 15): what the shared table does not cover.

ByzFL comparisons skip when ``byzfl`` (and torch) are missing; the table's
NumPy references are the main correctness check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax.aggregators import AggregationContext
from fljax.aggregators.dnc import dnc_coordinates
from tests.aggregators import references_round2 as ref
from tests.aggregators import table_model, table_round2, table_stats

KEY = jax.random.PRNGKey(0)


def _run(rule, x, context=None, key=KEY):
    x = jnp.asarray(x, jnp.float32)
    return rule.aggregate(x, rule.init(x.shape[1]), key, context)


def _byzfl():
    pytest.importorskip("torch")
    pytest.importorskip("byzfl")
    from benchmarks.aggregators import _import_byzfl_aggregators

    bz = _import_byzfl_aggregators()
    from byzfl.aggregators import preaggregators

    return bz, preaggregators


# ------------------------------------------------------------------ build-time errors


@pytest.mark.parametrize("build, n, pattern", [
    (lambda: A.meamed(3), 6,
     r"meamed: needs n > 2 \* num_byzantine, got n=6, num_byzantine=3 \(n must be at least 7\)"),
    (lambda: A.monna(2), 4, r"monna: needs n > 2 \* num_byzantine"),
    (lambda: A.mda(2), 4, r"mda: needs n > 2 \* num_byzantine"),
    (lambda: A.smea(1), 2, r"smea: needs n > 2 \* num_byzantine"),
    (lambda: A.caf(4), 8, r"caf: needs n > 2 \* num_byzantine, .*at least 9"),
    (lambda: A.dnc(5), 10, r"dnc: needs n > 2 \* num_byzantine"),
    (lambda: A.multi_metrics(p=0.1, on="updates"), 9, r"multi_metrics: keeps floor\(p \* n\) = 0"),
])
def test_impossible_settings_raise(build, n, pattern):
    rule = build()
    with pytest.raises(ValueError, match=pattern):
        jax.eval_shape(rule.aggregate, jnp.zeros((n, 4)), rule.init(4), KEY)
    out = jax.eval_shape(rule.aggregate, jnp.zeros((n + 1, 4)), rule.init(4), KEY)[0]
    assert out.shape == (4,)


def test_combinatorial_rules_state_their_size_bound():
    x = jnp.zeros((200, 4))
    with pytest.raises(ValueError, match=r"mda: .*2\^f \* n\^2 <= .*num_byzantine can be at most 16"):
        jax.eval_shape(A.mda(17).aggregate, x, None, KEY)
    jax.eval_shape(A.mda(16).aggregate, x, None, KEY)  # at the bound: traced fine
    with pytest.raises(ValueError, match=r"smea: .*C\(n, f\) \* \(n - f\)\^3 .*can be at most 1"):
        jax.eval_shape(A.smea(2).aggregate, x, None, KEY)
    with pytest.raises(ValueError, match=r"mda: .*at most 3"):  # a custom bound
        jax.eval_shape(A.mda(4, max_work=800).aggregate, jnp.zeros((10, 4)), None, KEY)
    # The default bound 2^33 at n = 25: f = 9 (8.4e9) fits, f = 10 (1.1e10) does not.
    jax.eval_shape(A.smea(9).aggregate, jnp.zeros((25, 2)), None, KEY)
    with pytest.raises(ValueError, match=r"smea: .*with n=25 num_byzantine can be at most 9"):
        jax.eval_shape(A.smea(10).aggregate, jnp.zeros((25, 2)), None, KEY)
    # Inclusive: C(5, 1) * 4^3 = 320 is allowed at a bound of 320, not at 319.
    jax.eval_shape(A.smea(1, max_work=320).aggregate, jnp.zeros((5, 3)), None, KEY)
    with pytest.raises(ValueError, match=r"smea: .*= 320 exceeds the bound 319"):
        jax.eval_shape(A.smea(1, max_work=319).aggregate, jnp.zeros((5, 3)), None, KEY)


def test_factories_reject_bad_arguments():
    for bad in (lambda: A.nnm(-1), lambda: A.bucketing(0), lambda: A.arc(1.5),
                lambda: A.dnc(1, filter_frac=-1.0), lambda: A.signguard(lower=2.0, upper=1.0),
                lambda: A.signguard(clustering="kmeans"), lambda: A.multi_metrics(p=0.0),
                lambda: A.crfl(clip=0.0, sigma=0.1), lambda: A.crfl(1.0, 0.1, base="nope")):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="unknown pre-aggregator"):
        A.get_pre_aggregator("clip")
    assert A.get_pre_aggregator("arc", num_byzantine=2).name == "arc"
    for name in ("crfl", "multi_metrics"):
        with pytest.raises(ValueError, match="context.params"):
            jax.eval_shape(A.get_aggregator(name, **({"clip": 1.0, "sigma": 0.0}
                                                     if name == "crfl" else {})).aggregate,
                           jnp.zeros((7, 4)), A.crfl(1.0, 0.0).init(4), KEY)


# ------------------------------------------------------------------ pre-aggregators


@pytest.mark.parametrize("n,f", [(10, 0), (10, 1), (10, 3), (10, 5), (7, 7), (5, 2)])
def test_arc_matches_its_reference(n, f):
    """ARC against the float64 reference (without ByzFL, which CI does not
    install): rows of norms spread over 1e-3..1e30 (squares overflow), a
    non-finite row (ranked largest, returned unchanged), a zero row (ranked
    smallest), ``k =
    floor(2 f (n - f) / n)`` rows clipped to the ``(k + 1)``-th largest norm;
    ``info`` holds the clipped rows, the threshold and the non-finite count.

    Catches: another ``k`` (``3 f``, ``n + f``), the wrong order statistic
    (``n - k``, ``n - k - 2``), ties clipped (``>=``), the ratio inverted or
    its exponent added, clipping that enlarges rows (``min(ratio, 2)``), a
    zero row ranked above small rows,
    ``f = 0`` or ``f = n`` refused, renamed info keys.
    """
    rng = np.random.default_rng(n * 10 + f)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-3, 3, size=n)).astype(np.float32)[:, None]
    x[0] *= np.float32(1e27)  # its squares overflow float32
    if n > 5:
        x[1, 2] = np.nan
        x[-1] = 0.0  # a zero row ranks smallest
    y, _, info = A.arc(f).apply(jnp.asarray(x), KEY)
    want, clipped, tau = ref.arc(x, f)
    finite = np.isfinite(x).all(1)
    np.testing.assert_allclose(np.asarray(y)[finite], want[finite], rtol=2e-6)
    np.testing.assert_array_equal(np.isnan(np.asarray(y)), np.isnan(x))
    np.testing.assert_array_equal(np.asarray(info["clipped"]), clipped)
    assert int(np.sum(clipped)) <= (2 * f * (n - f)) // n
    np.testing.assert_allclose(float(info["threshold"]), tau, rtol=2e-6)
    assert int(info["num_nonfinite"]) == int(np.sum(~finite))


def test_nnm_and_arc_match_byzfl_before_average():
    bz, pre = _byzfl()
    import torch

    rng = np.random.default_rng(0)
    for n, f in [(7, 2), (12, 3), (10, 4), (5, 1), (9, 0)]:
        x = rng.standard_normal((n, 30)).astype(np.float32)
        x[:f] *= 10.0
        for mine, theirs in ((A.nnm(f), pre.NNM(f)), (A.arc(f), pre.ARC(f))):
            out, _, _ = _run(A.compose(mine, aggregator=A.mean(weighted=False)), x)
            want = bz.Average()(theirs(torch.from_numpy(x.copy()))).numpy()
            np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-6)
            rows, _, _ = mine.apply(jnp.asarray(x), KEY)
            np.testing.assert_allclose(np.asarray(rows), theirs(torch.from_numpy(x.copy())).numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_bucketing_buckets_follow_the_key():
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    rows, ctx, info = A.bucketing(3).apply(jnp.asarray(x), KEY,
                                           AggregationContext(weights=jnp.ones(7), params=jnp.ones(3)))
    bucket = np.asarray(info["bucket"])
    assert rows.shape == (3, 3) and sorted(np.bincount(bucket)) == [1, 3, 3]
    for b in range(3):
        np.testing.assert_allclose(rows[b], x[bucket == b].mean(0), rtol=1e-6)
    assert ctx.weights is None and ctx.client_ids is None and ctx.params is not None
    # A NaN row spoils its bucket only; the rule after bucketing screens it.
    x[2, 1] = np.nan
    rows, _, info = A.bucketing(3).apply(jnp.asarray(x), KEY)
    bad = np.asarray(info["bucket"])[2]
    assert np.all(np.isnan(rows[bad])) and np.all(np.isfinite(np.delete(np.asarray(rows), bad, 0)))
    # The mean after it screens the spoilt bucket: the mean of the other two.
    out, _, info = _run(A.compose(A.bucketing(3), aggregator=A.mean(weighted=False)), x)
    used = np.asarray(info["bucketing/bucket"])
    kept = [x[used == b].mean(0) for b in range(3) if b != used[2]]
    np.testing.assert_allclose(out, np.mean(kept, 0), rtol=1e-6)
    assert int(info["bucketing/num_nonfinite"]) == 1 and int(info["num_nonfinite"]) == 1
    # Another key, another bucketing.
    other = A.bucketing(3).apply(jnp.asarray(x), jax.random.PRNGKey(5))[2]["bucket"]
    assert not np.array_equal(np.asarray(other), bucket)


@pytest.mark.slow
def test_pre_aggregators_pass_nonfinite_rows_and_survive_huge_ones():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 20)).astype(np.float32)
    x[0] = np.nan
    x[1] = 3e38 * np.sign(rng.standard_normal(20))
    x[2, 3] = -np.inf
    for pre in (A.nnm(3), A.arc(3)):
        rows, _, info = jax.jit(pre.apply)(jnp.asarray(x), KEY)
        rows = np.asarray(rows)
        assert np.isnan(rows[0]).all() and np.isinf(rows[2, 3])  # passed on unchanged
        assert np.all(np.isfinite(rows[3:])), pre.name
        out, _, _ = _run(A.compose(pre, aggregator=A.krum(3)), x)
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 10, pre.name
    # ARC clips the huge row to the honest scale: with arc in front even the plain
    # mean of the finite rows stays bounded.
    rows = np.asarray(A.arc(3).apply(jnp.asarray(x[1:]), KEY)[0])
    assert np.linalg.norm(rows[0]) <= np.max(np.linalg.norm(x[3:], axis=1)) * (1 + 1e-6)


def _all_rule_builders():
    """(name, build(n) -> Aggregator, needs context) for every rule, as the tables build them."""
    out = {}
    for e in table_stats.TABLE:
        if e.name in A.RULES and e.name not in out:
            out[e.name] = (lambda e: lambda n: e.build(n, 1))(e)
    for c in table_model.TABLE:
        out.setdefault(c.name, (lambda c: lambda n: c.build(n, 4, 1))(c))
    return out


@pytest.mark.parametrize("pre", [A.nnm(1), A.bucketing(2), A.arc(2),
                                 "clip+nnm"], ids=["nnm", "bucketing", "arc", "clip+nnm"])
def test_pre_aggregators_compose_with_every_rule(pre):
    from fljax.transforms import clip_by_norm

    stages = (clip_by_norm(5.0), A.nnm(1)) if pre == "clip+nnm" else (pre,)
    n = 14
    m = 7 if pre is not None and getattr(pre, "name", "") == "bucketing" else n
    ctx = AggregationContext(weights=jnp.ones(n), params=jnp.zeros(4),
                             client_ids=jnp.arange(n, dtype=jnp.int32))
    builders = _all_rule_builders()
    assert set(builders) == set(A.RULES)
    for name, build in builders.items():
        rule = A.compose(*stages, aggregator=build(m))
        out, _, info = jax.eval_shape(rule.aggregate, jax.ShapeDtypeStruct((n, 4), jnp.float32),
                                      rule.init(4), KEY, ctx)
        assert out.shape == (4,), name
        assert any(k.startswith(stages[-1].name + "/") for k in info), name


@pytest.mark.slow
def test_composed_rules_run():
    x = np.random.default_rng(2).standard_normal((12, 30)).astype(np.float32)
    x[:2] = 1e6
    for rule in (A.compose(A.nnm(2), aggregator=A.krum(2)),
                 A.compose(A.bucketing(2), A.arc(2), aggregator=A.meamed(2)),
                 A.compose(A.arc(2), aggregator=A.crfl(5.0, 0.0, base=A.caf(2)))):
        out, _, _ = jax.jit(rule.aggregate)(jnp.asarray(x), rule.init(30), KEY,
                                            AggregationContext(params=jnp.zeros(30)))
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 10


# ------------------------------------------------------------------ rules against ByzFL


def test_meamed_monna_match_byzfl():
    bz, _ = _byzfl()
    import torch

    rng = np.random.default_rng(3)
    for n, f in [(7, 3), (8, 3), (12, 5), (10, 0)]:
        x = rng.standard_normal((n, 40)).astype(np.float32)
        t = torch.from_numpy(x)
        np.testing.assert_allclose(_run(A.meamed(f), x)[0], bz.Meamed(f)(t).numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_run(A.monna(f, pivot=n - 2), x)[0],
                                   bz.MoNNA(f, n - 2)(t).numpy(), rtol=1e-5, atol=1e-6)


def test_mda_smea_match_byzfl_when_the_best_subset_stands_out():
    bz, _ = _byzfl()
    import torch

    rng = np.random.default_rng(4)
    for n, f in [(7, 3), (9, 2), (6, 1)]:
        x = rng.standard_normal((n, 20)).astype(np.float32)
        x[:f] += 30.0 * rng.standard_normal((f, 20)).astype(np.float32)
        t = torch.from_numpy(x)
        np.testing.assert_allclose(_run(A.mda(f), x)[0], bz.MDA(f)(t).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_run(A.smea(f), x)[0], bz.SMEA(f)(t).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mda_and_smea_more_sizes():
    rng = np.random.default_rng(5)
    for n, f in [(8, 3), (9, 4), (10, 2)]:
        x = rng.standard_normal((n, 12))
        np.testing.assert_allclose(_run(A.mda(f), x)[0], ref.mda_ref(x, f), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(_run(A.smea(f), x)[0], ref.smea_ref(x, f), rtol=1e-4, atol=1e-5)
    # Symmetric ties (two subsets with equal diameter and spread): the key picks one.
    x = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    outs = {tuple(np.asarray(_run(A.mda(1), x, key=jax.random.PRNGKey(s))[0])) for s in range(8)}
    assert outs == {(0.0, 1.5), (0.0, 2.5)}


@pytest.mark.slow
def test_caf_more_sizes_and_outliers():
    rng = np.random.default_rng(6)
    fn = jax.jit(A.caf(3).aggregate)
    for seed in range(3):
        x = rng.standard_normal((10, 15))
        x[:3] += 8.0 * rng.standard_normal((3, 15))
        out = fn(jnp.asarray(x, jnp.float32), None, KEY)[0]
        np.testing.assert_allclose(out, ref.caf_ref(x, 3), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_dnc_with_coordinate_subsets():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10, 200))
    x[:2] += 3.0  # a shifted pair
    for key in (jax.random.PRNGKey(1), jax.random.PRNGKey(2)):
        out = _run(A.dnc(2, sub_dim=50, num_iters=3), x, key=key)[0]
        k_coords, k_tie = jax.random.split(key)
        coords = list(np.asarray(dnc_coordinates(k_coords, 200, 50, 3)))
        assert all(len(set(c)) == 50 for c in coords)
        rank = np.asarray(jax.random.permutation(k_tie, 10))
        np.testing.assert_allclose(out, ref.dnc_ref(x, 2, coords, rank), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out, x[2:].mean(0), rtol=1e-4, atol=1e-5)
    # filter_frac may be traced: one compile, two values.
    fn = jax.jit(lambda x, c: A.dnc(2, filter_frac=c).aggregate(x, None, KEY)[2]["selected"])
    assert int(jnp.sum(fn(jnp.asarray(x, jnp.float32), 0.0))) == 10
    assert int(jnp.sum(fn(jnp.asarray(x, jnp.float32), 1.0))) == 8


@pytest.mark.slow
def test_multi_metrics_on_updates_and_weights():
    rng = np.random.default_rng(10)
    x = (1.0 + 0.5 * rng.standard_normal((10, 8))).astype(np.float64)
    w = np.arange(1.0, 11.0)
    rank = np.asarray(jax.random.permutation(KEY, 10))
    out = _run(A.multi_metrics(p=0.5, on="updates"), x, AggregationContext(weights=jnp.asarray(w)))[0]
    want = ref.multi_metrics_ref(x, np.zeros(8), p=0.5, rank=rank, weights=w)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ rows near float32's largest


@pytest.mark.parametrize("entry", table_round2.STATS, ids=lambda e: e.name)
def test_bounded_with_rows_near_float32_max(entry):
    # The shared harness's builds and compiled programs (same shapes): no new compile.
    from tests.aggregators import conformance_test as harness

    for n in entry.ns:
        f = entry.f_max(n)
        x = harness._data(n, seed=6)
        x[:f] = 3e38 * np.sign(harness._data(f, seed=7))
        out, _ = harness._run(entry, n, f, x)
        assert np.all(np.isfinite(out)), entry.name
        assert np.max(np.abs(out)) < entry.huge_bound, (entry.name, n, f)


@pytest.mark.parametrize("name", ["multi_metrics", "crfl"])
def test_model_rows_bounded_near_float32_max(name):
    from tests.aggregators import model_table_test as harness

    case = next(c for c in table_model.TABLE if c.name == name)
    x, params = harness._data(2)
    x[:harness.F] = 3e38 * np.sign(np.random.default_rng(3).standard_normal((harness.F, harness.D)))
    out, _ = harness._call(case, x, params)
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 100, name


def test_vectorised_numpy_peers_match_the_loop_references():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((8, 6))
    np.testing.assert_allclose(ref.mda_fast_ref(x, 2), ref.mda_ref(x, 2), rtol=1e-9)
    np.testing.assert_allclose(ref.smea_fast_ref(x, 2), ref.smea_ref(x, 2), rtol=1e-9)
    np.testing.assert_allclose(ref.meamed_fast_ref(x, 3), ref.meamed_ref(x, 3), rtol=1e-9)
    y = rng.standard_normal((10, 7))
    y[:3] += 6.0
    np.testing.assert_allclose(ref.caf_fast_ref(y, 3), ref.caf_ref(y, 3), rtol=1e-7, atol=1e-9)
    p = rng.standard_normal(6)
    np.testing.assert_allclose(ref.multi_metrics_fast_ref(x, p, 0.5),
                               ref.multi_metrics_ref(x, p, 0.5), rtol=1e-9)


def test_value_arguments_may_be_traced():
    x = jax.ShapeDtypeStruct((9, 4), jnp.float32)
    ctx = AggregationContext(params=jnp.zeros(4))
    builds = [
        lambda v: A.crfl(v, v, clip_growth=v),
        lambda v: A.signguard(lower=v, upper=3.0 * v),
        lambda v: A.multi_metrics(p=v),
        lambda v: A.dnc(2, filter_frac=v),
    ]
    for build in builds:
        def run(v, build=build):
            rule = build(v)
            return rule.aggregate(jnp.zeros((9, 4)), rule.init(4), KEY, ctx)[0]
        assert jax.eval_shape(run, jax.ShapeDtypeStruct((), jnp.float32)).shape == (4,)
    del x
