"""The rules' ``leave_one_out`` forms against ``n`` calls of ``aggregate``, and
ERR / LFR with and without them (the wrapper takes the shared form when a base
rule has one, else it vmaps the rule over the ``n`` subsets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax.aggregators import AggregationContext
from fljax.attacks import alie, fang_krum, fang_trimmed_mean

N, D, F = 30, 40, 6


def _rows_without(n):
    return jnp.asarray([[j for j in range(n) if j != i] for i in range(n)], jnp.int32)


def _one_by_one(rule, x, keys):
    """Row i: ``rule.aggregate`` of every row but i, with key ``keys[i]``."""
    state = rule.init(x.shape[1])
    return jax.vmap(lambda rows, k: rule.aggregate(x[rows], state, k)[0])(_rows_without(len(x)), keys)


def _problems():
    rng = np.random.default_rng(0)
    honest = rng.normal(0.1, 1.0, size=(N, D)).astype(np.float32)
    mal = jnp.arange(N) < F
    key = jax.random.PRNGKey(1)
    x = jnp.asarray(honest)
    yield "gaussian", x
    yield "fang_trimmed_mean", fang_trimmed_mean()(x, mal, key)
    yield "fang_krum", fang_krum(F)(x, mal, key)
    yield "alie (identical rows)", alie()(x, mal, key)
    yield "ties (integers)", jnp.asarray(rng.integers(-2, 3, size=(N, D)).astype(np.float32))
    bad = np.array(honest)
    bad[3, 5], bad[7] = np.nan, np.inf
    bad[11, 0] = 3e38
    yield "nan, inf and huge rows", jnp.asarray(bad)
    few = np.full_like(honest, np.nan)
    few[:5] = honest[:5]  # 5 finite rows: the trim shrinks to (m - 1) // 2
    yield "mostly non-finite", jnp.asarray(few)


PROBLEMS = list(_problems())


@pytest.mark.parametrize("kernel", ["auto", None])
@pytest.mark.parametrize("name,x", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_trimmed_mean_leave_one_out_equals_n_calls(name, x, kernel):
    rule = A.trimmed_mean(F, kernel=kernel)
    keys = jax.random.split(jax.random.PRNGKey(2), N)
    fast = jax.jit(lambda u: rule.leave_one_out(u, rule.init(D), keys))(x)
    slow = _one_by_one(rule, x, keys)
    assert fast.shape == (N, D)
    assert bool(jnp.all(jnp.isfinite(fast)))
    scale = float(jnp.max(jnp.abs(jnp.where(jnp.isfinite(x), x, 0.0)).clip(max=10.0)))
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("name,x", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_krum_leave_one_out_equals_n_calls(name, x):
    rule = A.krum(F if name != "mostly non-finite" else 1)
    keys = jax.random.split(jax.random.PRNGKey(3), N)
    fast = jax.jit(lambda u: rule.leave_one_out(u, rule.init(D), keys))(x)
    slow = _one_by_one(rule, x, keys)
    # Krum returns one of its rows: the same row, bit for bit, except between
    # Fang's crafted copies (1e-5 / d apart: below the float32 resolution of
    # either path's Gram matrix, so the pick among them is arbitrary in both).
    fast, slow, xs = np.asarray(fast), np.asarray(slow), np.asarray(x)
    same = np.all(fast == slow, axis=1)
    if name != "fang_krum":
        assert same.all(), np.flatnonzero(~same)
    for i in np.flatnonzero(~same):
        a = np.flatnonzero(np.all(xs == fast[i], axis=1))
        b = np.flatnonzero(np.all(xs == slow[i], axis=1))
        assert a.size and b.size and a[0] < F and b[0] < F, (i, a, b)
        assert np.max(np.abs(fast[i] - slow[i])) <= 1e-5
    assert same.mean() > 0.5


def test_leave_one_out_bounds_are_those_of_the_smaller_set():
    """The bounds, and the message's numbers, are those of the ``n - 1`` rows.

    Catches (message): ``n={n - 1}`` and ``2 * num_trim`` misreported."""
    x = jnp.zeros((2 * F + 1, D))
    with pytest.raises(ValueError, match=rf"trimmed_mean: .*num_trim={F}, n={2 * F} "
                                         rf"\(2 \* {F} = {2 * F} >= {2 * F}\)"):
        A.trimmed_mean(F).leave_one_out(x, None, jax.random.split(jax.random.PRNGKey(0), len(x)))
    x = jnp.zeros((2 * F + 3, D))
    with pytest.raises(ValueError, match="krum"):
        A.krum(F).leave_one_out(x, None, jax.random.split(jax.random.PRNGKey(0), len(x)))
    # One more row is allowed (Krum on n - 1 = 2F + 3 rows).
    x = jnp.zeros((2 * F + 4, D))
    out = jax.eval_shape(A.krum(F).leave_one_out, x, None,
                         jax.random.split(jax.random.PRNGKey(0), len(x)))
    assert out.shape == (2 * F + 4, D)


def test_krum_leave_one_out_with_one_finite_row():
    """One finite row among NaN rows: leaving out any other row gives that
    row; leaving it out leaves no finite row, which gives zeros (as the rule).

    Catches: the all-screened subset's zero replaced (``where(valid[index],
    ..., 1.0)``); also (in the bounds test above) Krum's bound for the
    smaller set tightened (``n - 2``).
    """
    x = np.full((6, 4), np.nan, np.float32)
    x[2] = [1.0, -2.0, 3.0, 0.5]
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    out = np.asarray(jax.jit(lambda u: A.krum(1).leave_one_out(u, None, keys))(jnp.asarray(x)))
    want = np.tile(x[2], (6, 1))
    want[2] = 0.0
    np.testing.assert_array_equal(out, want)


def _eval_fn():
    """Softmax regression with 9 inputs and 4 classes (36 weights + 4 biases = D)."""
    rng = np.random.default_rng(4)
    xv = jnp.asarray(rng.normal(size=(50, 9)).astype(np.float32))
    yv = jnp.asarray(rng.integers(0, 4, size=50))

    def eval_fn(p):
        logits = xv @ p[:36].reshape(9, 4) + p[36:]
        err = jnp.mean(jnp.argmax(logits, 1) != yv)
        loss = jnp.mean(jax.nn.logsumexp(logits, 1) - jnp.take_along_axis(logits, yv[:, None], 1)[:, 0])
        return err, loss

    return eval_fn


def _err_lfr_cases():
    """Every (problem, base, wrapper); the default run keeps one problem per
    (base, wrapper) pair plus the hostile rows, the rest run with ``-m slow``
    (each case compiles ERR / LFR twice: ~5 s)."""
    cases = []
    for i, (name, x) in enumerate(PROBLEMS[:4] + PROBLEMS[5:6]):
        for base in ("trimmed_mean", "krum"):
            for wname, wrapper in (("err", A.err), ("lfr", A.lfr)):
                quick = (i == 0 and base == "trimmed_mean") or (i == 1 and base == "krum") \
                    or "nan" in name
                cases.append(pytest.param(wrapper, base, name, x, id=f"{name}-{base}-{wname}",
                                          marks=() if quick else pytest.mark.slow))
    return cases


@pytest.mark.parametrize("wrapper,base,name,x", _err_lfr_cases())
def test_err_lfr_with_the_shared_form_equal_the_vmapped_form(wrapper, base, name, x):
    rule = A.trimmed_mean(F) if base == "trimmed_mean" else A.krum(F)
    assert rule.leave_one_out is not None
    plain = rule._replace(leave_one_out=None)
    ctx = AggregationContext(params=jnp.zeros((D,), jnp.float32))
    key = jax.random.PRNGKey(5)
    outs = []
    for r in (rule, plain):
        agg = wrapper(_eval_fn(), F, base=r)
        outs.append(jax.jit(lambda u: agg.aggregate(u, agg.init(D), key, ctx))(x))
    (fast, _, fi), (slow, _, si) = outs
    fa, sa = np.asarray(fi["accepted"]), np.asarray(si["accepted"])
    fimp, simp = np.asarray(fi["impact"]), np.asarray(si["impact"])
    if name == "fang_krum" and base == "krum":
        # Which of Fang's crafted copies (1e-5 / d apart) Krum picks is float
        # noise in either path, so the impacts agree to that noise, and rows
        # whose impacts tie at the rejection threshold (within it) may swap.
        np.testing.assert_allclose(fimp, simp, rtol=0, atol=1e-5)
        threshold = np.sort(simp)[N - F - 1]
        swapped = fa != sa
        assert np.all(np.abs(simp[swapped] - threshold) <= 1e-5), (simp[swapped], threshold)
        return
    np.testing.assert_array_equal(fa, sa)
    np.testing.assert_allclose(fimp, simp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-5, atol=1e-6)


def test_trimmed_mean_leave_one_out_with_few_finite_rows():
    """With 4, 3, 2, 1 and 0 finite rows of 7 (``num_trim=2``: the trim of the
    smaller set shrinks to ``(m' - 1) // 2``, down to none) the shared form
    equals 7 calls of ``aggregate``, ties included; the smallest ``n`` that
    the bound allows (``2 * num_trim < n - 1``) is accepted.

    Catches: the kept count's floor ``max(m' - 2t', 1)`` raised (3 finite
    rows: one kept value), the zero for a row with no other finite row given
    also with one other (``m' > 1``), the bound tightened (``n - 2``).
    """
    n, d = 7, 5
    rule = A.trimmed_mean(2)
    keys = jax.random.split(jax.random.PRNGKey(2), n)
    fast = jax.jit(lambda u: rule.leave_one_out(u, None, keys))
    slow = jax.jit(lambda u: _one_by_one(rule, u, keys))
    x = np.round(np.random.default_rng(7).standard_normal((n, d)), 1).astype(np.float32)
    x[:, 0] = 0.5  # a column of ties
    for finite in (4, 3, 2, 1, 0):
        y = x.copy()
        y[finite:] = np.nan
        np.testing.assert_allclose(np.asarray(fast(jnp.asarray(y))), np.asarray(slow(jnp.asarray(y))),
                                   rtol=1e-6, atol=1e-7, err_msg=f"finite={finite}")
    out = jax.eval_shape(A.trimmed_mean(2).leave_one_out, jnp.zeros((6, d)), None, keys[:6])
    assert out.shape == (6, d)
