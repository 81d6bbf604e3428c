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


@pytest.mark.parametrize("case", [c for c in TABLE if c.bounded], ids=lambda c: c.name)
def test_bounded_with_huge_rows(case):
    x, params = _data(2)
    x[:F] = 1e6 * np.sign(np.random.default_rng(3).standard_normal((F, D)))
    out, _ = _call(case, x, params)
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) < 100


@pytest.mark.parametrize("case", TABLE, ids=IDS)
def test_nonfinite_rows_screened(case):
    x, params = _data(3)
    x[1, 0], x[4, 3] = np.nan, -np.inf
    out, info = _call(case, x, params)
    assert np.all(np.isfinite(out))
    assert int(info["num_nonfinite"]) == 2


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
