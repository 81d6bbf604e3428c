"""Runs the generic conformance checks over ``table_model.TABLE``.

A stand-in until the shared harness (``conformance_test.py``) runs these
entries too; it checks the same properties the harness will.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax.aggregators import AggregationContext, on_pytree
from tests.aggregators import hostile
from tests.aggregators.table_model import TABLE

N, D, F = 7, 5, 2
KEY = jax.random.PRNGKey(0)
IDS = [c.name for c in TABLE]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = 1.0 + 0.5 * rng.standard_normal((N, D))  # honest rows share a direction
    params = rng.standard_normal(D)
    return x, params


@functools.lru_cache(maxsize=None)
def _jitted(name):
    """One build and one compiled function per rule, shared by the tests (fast)."""
    agg = next(c for c in TABLE if c.name == name).build(N, D, F)
    return agg, jax.jit(agg.aggregate)


def _call(case, x, params):
    agg, fn = _jitted(case.name)
    ctx = AggregationContext(params=jnp.asarray(params, jnp.float32))
    out, _, info = fn(jnp.asarray(x, jnp.float32), agg.init(D), KEY, ctx)
    return np.asarray(out), info


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_matches_reference(case):
    for seed in range(3):
        x, params = _data(seed)
        out, _ = _call(case, x, params)
        np.testing.assert_allclose(out, case.reference(x, params, F), rtol=case.rtol,
                                   atol=case.atol)


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_order_invariance(case):
    x, params = _data(1)
    perm = np.random.default_rng(5).permutation(N)
    a, _ = _call(case, x, params)
    b, _ = _call(case, x[perm], params)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", [c for c in TABLE if c.fixed_point], ids=lambda c: c.name)
def test_fixed_point(case):
    v = np.array([0.5, -1.0, 2.0, 0.0, 1.5])
    out, _ = _call(case, np.tile(v, (N, 1)), _data()[1])
    np.testing.assert_allclose(out, v, rtol=1e-5, atol=1e-6)


def _sum_error(magnitude):
    """What float32 may lose summing rows of ``magnitude``: n * eps * magnitude per entry."""
    return N * np.finfo(np.float32).eps * magnitude


def _assert_exact_where_representable(out, want, magnitude, case, where):
    """``out`` equals the float64 ``want`` wherever float32 can hold it (inf elsewhere)."""
    fits = np.abs(want) <= hostile.F32_MAX
    assert np.all(np.isfinite(out[fits])), where
    np.testing.assert_allclose(out[fits], want[fits], rtol=max(case.rtol, 1e-5),
                               atol=case.atol + _sum_error(magnitude), err_msg=str(where))


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_huge_finite_rows(case):
    """F finite rows of every magnitude from 1e3 to float32's largest, random signs or equal.

    No row counts as non-finite; bounded rules stay of the honest rows' order;
    the unbounded ones stay finite, and robust_lr / FoolsGold equal their
    float64 reference wherever it is representable.

    Catches: sums before the division (robust_lr, ERR / LFR's means and
    FoolsGold's normalised sum gave inf at 3e38), ERR / LFR ranking unscorable
    models as harmless (they kept the attackers and rejected honest rows).
    """
    for kind in hostile.KINDS:
        for magnitude in hostile.HUGE:
            x, params = _data(2)
            x = hostile.set_rows(x, np.arange(F), magnitude, kind, seed=3)
            out, info = _call(case, x, params)
            where = (case.name, kind, magnitude)
            assert int(info["num_nonfinite"]) == 0, where
            if case.exact_when_huge:
                want = case.reference(x.astype(np.float64), params, F)
                _assert_exact_where_representable(out, want, magnitude, case, where)
                continue
            assert np.all(np.isfinite(out)), where
            if case.bounded:
                assert np.max(np.abs(out)) < 100, (where, out)


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_tiny_rows_are_ordinary_data(case):
    """F rows of magnitude 1e-30 down to the smallest subnormal match the reference.

    The reference gets the subnormals flushed to zero, as XLA:CPU reads them.
    """
    tiny = np.finfo(np.float32).tiny
    for kind in hostile.KINDS:
        for magnitude in hostile.TINY:
            x, params = _data(5)
            x = hostile.set_rows(x, np.arange(F), magnitude, kind)
            out, _ = _call(case, x, params)
            flushed = np.where(np.abs(x) < tiny, 0.0, x.astype(np.float64))
            np.testing.assert_allclose(out, case.reference(flushed, params, F), rtol=case.rtol,
                                       atol=case.atol, err_msg=f"{case.name} {kind} {magnitude}")


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_mixed_scale_rows(case):
    """F rows mixing ±3.4e38, ±1e30, subnormals, 0 and 1 entry by entry (one also NaN/inf)."""
    for seed in range(3):
        x, params = _data(6 + seed)
        x = hostile.mixed_rows(x, [1, 4], seed=seed)
        out, info = _call(case, x, params)
        finite = np.isfinite(x).all(1)
        where = (case.name, seed)
        assert int(info["num_nonfinite"]) == int(np.sum(~finite)), where
        if case.exact_when_huge:
            want = case.reference(x[finite].astype(np.float64), params, F)
            _assert_exact_where_representable(out, want, hostile.F32_MAX, case, where)
            continue
        assert np.all(np.isfinite(out)), where
        if case.bounded:
            assert np.max(np.abs(out)) < 100, (where, out)


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_nonfinite_rows_screened(case):
    """Two non-finite rows: the result is the reference's on the five finite rows.

    Catches: dropping the finite-row mask from ERR / LFR's weights
    (``jnp.where(usable, w, 0.0)`` -> ``w`` in ``_rejection.py``: the zeroed
    rows then count in the means and shift the output by ~17-29 %), and
    FoolsGold letting screened rows' empty histories change the others'
    weights.
    """
    x, params = _data(3)
    x[1, 0], x[4, 3] = np.nan, -np.inf
    out, info = _call(case, x, params)
    assert np.all(np.isfinite(out))
    assert int(info["num_nonfinite"]) == 2
    keep = [0, 2, 3, 5, 6]
    want = case.reference(x[keep], params, case.remaining_f(F, 2))
    np.testing.assert_allclose(out, want, rtol=case.rtol, atol=case.atol)


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_one_trace_per_build(case):
    agg, fn = _jitted(case.name)
    state = agg.init(D)
    for seed in range(3):  # new data, keys and state: no retrace
        x, params = _data(seed)
        out, state, _ = fn(jnp.asarray(x, jnp.float32), state, jax.random.PRNGKey(seed),
                           AggregationContext(params=jnp.asarray(params, jnp.float32)))
    assert out.shape == (D,)
    assert fn._cache_size() == 1


# The adapter is generic: two representative rules by default (context, state), all with -m slow.
_PYTREE_FAST = ("fltrust", "foolsgold")


@pytest.mark.parametrize("case", [
    c if c.name in _PYTREE_FAST else pytest.param(c, marks=pytest.mark.slow) for c in TABLE
], ids=IDS)
def test_on_pytree(case):
    x, params = _data(4)
    tree = {"a": jnp.asarray(x[:, :2], jnp.float32), "b": jnp.asarray(x[:, 2:], jnp.float32)}
    agg = on_pytree(case.build(N, D, F))
    template = jax.tree_util.tree_map(lambda l: l[0], tree)
    out, _, _ = jax.jit(agg.aggregate)(tree, agg.init(template), KEY,
                                       AggregationContext(params=jnp.asarray(params, jnp.float32)))
    flat, _ = _call(case, x, params)
    np.testing.assert_allclose(np.concatenate([out["a"], out["b"]]), flat, rtol=1e-5, atol=1e-6)


def test_table_covers_model_rules():
    mine = {"fltrust", "flame", "foolsgold", "err", "lfr", "robust_lr", "norm_clipping",
            "weak_dp", "centered_clipping"}
    assert mine <= set(IDS) and set(IDS) <= set(A.RULES)
