"""One conformance table for every aggregation rule.

``table_stats.TABLE`` (order-statistic and distance-based rules) runs here;
``table_model.TABLE`` (model-aware rules, which need a context) runs the same
checks in ``model_table_test.py``; the meta-test covers both. Every row gets:
agreement with its NumPy reference, client-order invariance, fixed point,
bounded output under finite rows of any magnitude up to float32's largest,
tiny (subnormal) and mixed-scale rows, screening of non-finite rows, one trace
per build, output shape under ``jit``, and the pytree adapter.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators
from fljax.aggregators import on_pytree
from tests.aggregators import hostile, table_model, table_stats

# The statistics rules run here; the model-aware rules (which need a context
# and callables) run the same list of checks in model_table_test.py over
# table_model.TABLE. The meta-test below covers both.
TABLE = list(table_stats.TABLE)
BY_NAME = {e.name: e for e in TABLE}
D = 300  # > one column tile (256), so the blocked path and its tail both run
KEY = jax.random.PRNGKey(0)


def _data(n, d=D, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


_COMPILED = {}


def _run(entry, n, f, x):
    """Runs the rule built for (n, f) under jit; builds are cached so that the
    checks share compiled programs (compilation dominates this file's time)."""
    if (entry.name, n, f) not in _COMPILED:
        rule = entry.build(n, f)
        _COMPILED[entry.name, n, f] = (rule, jax.jit(rule.aggregate))
    rule, fn = _COMPILED[entry.name, n, f]
    ctx = entry.make_context(n, x.shape[1], np.random.default_rng(1)) if entry.make_context else None
    out, _, info = fn(jnp.asarray(x), rule.init(x.shape[1]), KEY, ctx)
    return np.asarray(out), info


def _cases(entry):
    for n in entry.ns:
        for f in sorted({0, entry.f_max(n)}):
            yield n, f


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_matches_reference(entry):
    for n, f in _cases(entry):
        x = _data(n, seed=n + 10 * f)
        out, _ = _run(entry, n, f, x)
        want = entry.reference(x.astype(np.float64), n, f)
        np.testing.assert_allclose(out, want, rtol=entry.rtol, atol=entry.atol,
                                   err_msg=f"{entry.name} n={n} f={f}")


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_client_order_invariance(entry):
    n = entry.ns[-1]
    f = entry.f_max(n)
    x = _data(n, seed=3)
    perm = np.random.default_rng(4).permutation(n)
    b, _ = _run(entry, n, f, x[perm])
    if entry.order_invariant:
        a, _ = _run(entry, n, f, x)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=entry.name)
    else:  # order matters only through the documented tie rule: follow the reference
        want = entry.reference(x[perm].astype(np.float64), n, f)
        np.testing.assert_allclose(b, want, rtol=entry.rtol, atol=entry.atol, err_msg=entry.name)


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_fixed_point(entry):
    n = entry.ns[0]
    f = entry.f_max(n)
    v = _data(1, seed=5)[0] + 0.5  # mostly same-signed coordinates for sign-based rules
    v = np.where(np.abs(v) < 0.1, 0.5, v).astype(np.float32)
    out, _ = _run(entry, n, f, np.tile(v, (n, 1)))
    np.testing.assert_allclose(out, v, rtol=1e-5, atol=1e-6, err_msg=entry.name)


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_bounded_with_huge_rows(entry):
    """f finite rows of every magnitude from 1e3 to float32's largest, random signs or equal.

    The output is finite, at most ``huge_bound`` (the honest rows are N(0, 1);
    ``inf`` for the mean, which follows them by design) and no row is counted
    as non-finite. Up to 1e12 (no square overflows) it also equals the
    float64 reference.

    Catches: a mean or Weiszfeld sum that adds rows before dividing (inf at
    3e38, robust_lr did), RFA's mean-only start (geometric_median kept ~1.5-20 %
    of every magnitude up to 1e18), squared norms that overflow into NaN.
    """
    if not entry.robust:
        pytest.skip("not a robust rule")
    for n in entry.ns:
        f = entry.f_max(n)
        for kind in hostile.KINDS:
            for magnitude in hostile.HUGE:
                x = hostile.set_rows(_data(n, seed=6), np.arange(f), magnitude, kind)
                out, info = _run(entry, n, f, x)
                where = (entry.name, n, f, kind, magnitude)
                assert np.all(np.isfinite(out)), where
                assert np.max(np.abs(out)) < entry.huge_bound, (where, np.max(np.abs(out)))
                assert int(info["num_nonfinite"]) == 0, where
                if magnitude <= 1e12:
                    want = entry.reference(x.astype(np.float64), n, f)
                    np.testing.assert_allclose(out, want, rtol=entry.rtol, atol=entry.atol,
                                               err_msg=str(where))


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_tiny_rows_are_ordinary_data(entry):
    """f rows of magnitude 1e-30 down to float32's smallest subnormal match the reference.

    XLA:CPU flushes subnormals (below 1.18e-38) to zero, so the reference gets
    them flushed too; everything else is ordinary data. Catches a rule that
    treats a (near-)zero row as invalid or divides by its norm unguarded.
    """
    tiny = np.finfo(np.float32).tiny
    for n in entry.ns:
        f = entry.f_max(n)
        for kind in hostile.KINDS:
            for magnitude in hostile.TINY:
                x = hostile.set_rows(_data(n, seed=12), np.arange(f), magnitude, kind)
                out, info = _run(entry, n, f, x)
                flushed = np.where(np.abs(x) < tiny, 0.0, x.astype(np.float64))
                want = entry.reference(flushed, n, f)
                np.testing.assert_allclose(out, want, rtol=entry.rtol, atol=entry.atol,
                                           err_msg=f"{entry.name} n={n} f={f} {kind} {magnitude}")


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_mixed_scale_rows(entry):
    """f rows mixing ±3.4e38, ±1e30, subnormals, 0 and 1 entry by entry, some with a NaN/inf.

    Finite and bounded output, and ``num_nonfinite`` counts exactly the rows
    holding a NaN or an infinity.
    """
    if not entry.robust:
        pytest.skip("not a robust rule")
    for n in entry.ns:
        f = entry.f_max(n)
        for seed in range(3):
            rows = np.random.default_rng(seed).choice(n, size=f, replace=False)
            x = hostile.mixed_rows(_data(n, seed=13 + seed), rows, seed=seed)
            out, info = _run(entry, n, f, x)
            where = (entry.name, n, f, seed)
            assert np.all(np.isfinite(out)), where
            assert np.max(np.abs(out)) < entry.huge_bound, (where, np.max(np.abs(out)))
            assert int(info["num_nonfinite"]) == int(np.sum(~np.isfinite(x).all(1))), where


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_nonfinite_rows_are_screened(entry):
    """f rows with NaN / ±inf: finite output equal to the reference on the other rows.

    Catches: a rule that stops reporting ``num_nonfinite`` (the old
    ``if "num_nonfinite" in info`` guard skipped the count silently), and the
    mean's unscreened ``w @ updates``.
    """
    if not entry.robust:
        pytest.skip("not robust: one NaN row poisons it (documented)")
    for n in entry.ns:
        f = entry.f_max(n)
        x = _data(n, seed=8)
        bad = np.random.default_rng(9).choice(n, size=f, replace=False)
        fills = [np.nan, np.inf, -np.inf]
        for i, row in enumerate(bad):
            x[row, i % D] = fills[i % 3]
            if i % 2:
                x[row] = fills[i % 3]
        out, info = _run(entry, n, f, x)
        assert np.all(np.isfinite(out)), (entry.name, n, f)
        # Every robust rule reports it (a rule that stops reporting fails here).
        assert int(info["num_nonfinite"]) == f, entry.name
        if entry.remaining is None:
            want = entry.reference(x.astype(np.float64), n, f)
        else:
            keep = np.setdiff1d(np.arange(n), bad)
            n2, f2 = entry.remaining(n, f, f)
            want = entry.reference(x[keep].astype(np.float64), n2, f2)
        np.testing.assert_allclose(out, want, rtol=entry.rtol, atol=entry.atol,
                                   err_msg=f"{entry.name} n={n} f={f}")


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_one_trace_per_build_and_shape(entry):
    n = entry.ns[0]
    f = entry.f_max(n)
    rule = entry.build(n, f)
    ctx = entry.make_context(n, D, np.random.default_rng(1)) if entry.make_context else None
    # chex counts traces per code object: rows that share a factory (a rule and
    # its +jnp row) would add up without a reset.
    chex.clear_trace_counter()
    counted = jax.jit(chex.assert_max_traces(rule.aggregate, n=1))
    state = rule.init(D)
    for seed in range(3):
        out, state, info = counted(jnp.asarray(_data(n, seed=seed)), state,
                                   jax.random.PRNGKey(seed), ctx)
        assert out.shape == (D,) and out.dtype == jnp.float32, entry.name
        for value in jax.tree_util.tree_leaves(info):
            assert isinstance(value, jax.Array), entry.name


def _dot_precisions(jaxpr) -> list:
    """The ``precision`` of every ``dot_general`` in a jaxpr and the jaxprs it
    holds (``memory.sub_jaxprs``)."""
    from fljax import memory

    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in memory.sub_jaxprs(eqn):
            found += _dot_precisions(sub)
    return found


def _every_rule():
    """A ``pytest.param(rule, n, context)`` for every row of both tables (the
    statistics table holds the second round's rules too)."""
    from fljax.aggregators import AggregationContext

    for entry in TABLE:
        n = entry.ns[-1]
        f = entry.f_max(n)
        ctx = entry.make_context(n, D, np.random.default_rng(1)) if entry.make_context else None
        yield pytest.param(entry.build(n, f), n, ctx, id=entry.name)
    for case in table_model.TABLE:
        yield pytest.param(case.build(12, D, 2), 12,
                           AggregationContext(params=jnp.zeros(D, jnp.float32)), id=case.name)


@pytest.mark.parametrize("rule,n,ctx", list(_every_rule()))
def test_every_matrix_product_is_at_highest_precision(rule, n, ctx):
    """Every matrix product a rule traces runs at ``Precision.HIGHEST``, read
    from its jaxpr (no compilation). XLA:CPU multiplies float32 the same at any
    precision, so no value on this machine can tell; a GPU's default for
    float32 is TF32 (10-bit mantissas), which would change Krum's distances,
    a weighted mean, an eigenvalue. Catches: ``_HIGHEST = None`` in
    ``_linalg`` / ``_spectral`` / ``_ops`` / a rule. (ERR / LFR's validation
    function is the table's own, written at HIGHEST too.)"""
    jaxpr = jax.make_jaxpr(rule.aggregate)(jnp.asarray(_data(n)), rule.init(D), KEY, ctx)
    precisions = _dot_precisions(jaxpr.jaxpr)
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert [p for p in precisions if p != highest] == [], precisions


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_on_pytree_matches_flat(entry):
    n = entry.ns[0]
    f = entry.f_max(n)
    x = _data(n, d=3 * 4 + 5, seed=11)
    tree = {"a": jnp.asarray(x[:, :12].reshape(n, 3, 4)), "b": jnp.asarray(x[:, 12:])}
    flat, _ = _run(entry, n, f, x)
    rule = on_pytree(entry.build(n, f))
    template = jax.tree_util.tree_map(lambda t: t[0], tree)
    ctx = entry.make_context(n, 17, np.random.default_rng(1)) if entry.make_context else None
    out, _, _ = jax.jit(rule.aggregate)(tree, rule.init(template), KEY, ctx)
    np.testing.assert_allclose(out["a"].reshape(-1), flat[:12], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["b"], flat[12:], rtol=1e-6, atol=1e-7)


def test_every_rule_is_in_the_table():
    covered = set(BY_NAME) | {c.name for c in table_model.TABLE}
    missing = [name for name in aggregators.RULES if name not in covered]
    assert not missing, f"rules without a conformance entry: {missing}"


def test_the_protocols_optional_fields_are_absent_by_default():
    """A rule built with ``init`` and ``aggregate`` only has no streaming form,
    no column split, no memory declaration and no leave-one-out form, and an
    empty ``AggregationContext`` has no field: the simulator and the wrappers
    test ``is None`` (and ``columns``) to choose a path. Catches a default
    that is not None (``""``) or ``columns=True``."""
    from fljax.aggregators.base import AggregationContext, Aggregator

    rule = Aggregator(lambda d: None, lambda u, s, k, c=None: (u[0], s, {}))
    assert (rule.stream, rule.columns, rule.memory, rule.leave_one_out) == (None, False, None, None)
    assert all(v is None for v in AggregationContext())


def test_on_pytree_of_one_client():
    """One stacked client (a round that samples one): the adapter returns its
    tree. (The template taken from client 1, ``x[1]``, is not a bug JAX lets
    through here: it clamps the index of a length-1 axis to 0.)"""
    tree = {"w": jnp.arange(6.0).reshape(1, 2, 3), "b": jnp.array([[7.0]])}
    rule = on_pytree(aggregators.mean(weighted=False))
    out, _, _ = rule.aggregate(tree, rule.init({"w": tree["w"][0], "b": tree["b"][0]}),
                               jax.random.PRNGKey(0))
    chex.assert_trees_all_equal(out, {"w": tree["w"][0], "b": tree["b"][0]})
