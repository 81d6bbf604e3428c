"""The CPU order-statistics kernel against its jnp reference and NumPy."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import order_stats

_OK, _WHY = order_stats.available()
needs_kernel = pytest.mark.skipif(not _OK, reason=f"kernel unavailable: {_WHY}")


def _apply_network(pairs, x):
    x = x.copy()
    for a, b in pairs:
        lo, hi = np.minimum(x[a], x[b]), np.maximum(x[a], x[b])
        x[a], x[b] = lo, hi
    return x


def _zero_one_inputs(m, padded):
    """Every 0-1 input of m rows as columns, padded with rows of 2 (the +inf rows)."""
    cols = np.arange(2 ** m)
    x = ((cols[None, :] >> np.arange(m)[:, None]) & 1).astype(np.int8)  # [m, 2^m]
    return np.concatenate([x, np.full((padded - m, 2 ** m), 2, np.int8)])


def _check_classes(pairs, padded, m, weights, x):
    """Every rank class (rows of equal weight) holds the multiset a full sort puts there."""
    got = _apply_network(pairs, x)[:m]
    want = np.sort(x[:m], axis=0)
    for w in np.unique(weights):
        rows = weights == w
        np.testing.assert_array_equal(np.sort(got[rows], axis=0), np.sort(want[rows], axis=0),
                                      err_msg=f"m={m} weight={w}")


def _weight_patterns(m):
    """Median, every trim of a trimmed mean, and ties among arbitrary weights."""
    rank = np.arange(m)
    yield 0.5 * (rank == (m - 1) // 2) + 0.5 * (rank == m // 2)
    for t in range((m + 1) // 2):
        yield ((rank >= t) & (rank < m - t)) / max(m - 2 * t, 1)
    yield np.random.default_rng(m).integers(0, 3, m).astype(np.float32)


@needs_kernel
@pytest.mark.parametrize("m", range(1, 15))
def test_network_sorts_every_zero_one_input(m):
    """0-1 principle (Knuth 5.3.4): a comparator network that sorts all 2^m zero-one
    inputs sorts every input. Catches a wrong comparator, a missing step or a
    wrong register order in the network the kernel runs."""
    pairs, padded = order_stats.network(m, prune=False)
    assert padded >= max(m, 8) and padded & (padded - 1) == 0  # a power of two
    assert (pairs[:, 0] < pairs[:, 1]).all() and (pairs < padded).all()
    x = _zero_one_inputs(m, padded)
    np.testing.assert_array_equal(_apply_network(pairs, x)[:m], np.sort(x[:m], axis=0))


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 5, 8, 9, 12, 14, 17])
def test_pruned_network_keeps_every_weighted_rank_class(m):
    """0-1 principle for the pruned networks: for every 0-1 input, each class of
    equally weighted ranks (the median's middle pair, a trimmed mean's kept
    middle, ties among arbitrary weights) holds what a full sort puts there.
    (The class property is a conjunction of comparisons between outputs, so it
    holds for all inputs iff it holds for 0-1 inputs.) Catches a pruner that
    drops a comparator the weighted sum depends on."""
    for weights in _weight_patterns(m):
        weights = weights.astype(np.float32)
        pairs, padded = order_stats.network(m, weights)
        _check_classes(pairs, padded, m, weights, _zero_one_inputs(m, padded))


@needs_kernel
@pytest.mark.parametrize("m", [33, 65, 130, 200, 257])
def test_pruned_networks_on_random_zero_one_and_real_inputs(m):
    """The same property for sizes with register steps of every kind (too many rows
    for all 2^m inputs): random 0-1 columns with every count of ones, and floats."""
    rng = np.random.default_rng(m)
    ones = rng.integers(0, m + 1, 600)
    x01 = (rng.random((m, 600)).argsort(axis=0) < ones[None, :]).astype(np.float32)
    for weights in list(_weight_patterns(m))[:3] + [np.arange(m)]:
        weights = np.asarray(weights, np.float32)
        pairs, padded = order_stats.network(m, weights)
        pad = np.full((padded - m, 600), np.inf, np.float32)
        _check_classes(pairs, padded, m, weights, np.concatenate([x01, pad]))
        xr = np.concatenate([rng.standard_normal((m, 600)).astype(np.float32), pad])
        _check_classes(pairs, padded, m, weights, xr)


@needs_kernel
def test_pruning_prunes():
    """Pruning must remove work where the weights allow it (a no-op pruner fails):
    the median and trimmed mean drop steps; equal weights need no network at all."""
    full, _ = order_stats.network(200, prune=False)
    rank = np.arange(200)
    median, _ = order_stats.network(200, (0.5 * (rank == 99) + 0.5 * (rank == 100)).astype(np.float32))
    trimmed, _ = order_stats.network(200, (((rank >= 40) & (rank < 160)) / 120).astype(np.float32))
    assert len(median) < 0.95 * len(full) and len(trimmed) < 0.95 * len(full)
    assert len(order_stats.network(200, np.ones(200, np.float32))[0]) == 0


def _inputs(n, d, seed, invalid_frac=0.25):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[rng.random((n, d)) < 0.05] = 0.0  # zeros and ties
    x[:, :3] = 1.5  # whole columns of ties
    valid = rng.random(n) >= invalid_frac
    bad = np.flatnonzero(~valid)
    for i, r in enumerate(bad):
        x[r, rng.integers(d)] = (np.nan, np.inf, -np.inf)[i % 3]
    w = rng.standard_normal(n).astype(np.float32)
    w[rng.random(n) < 0.3] = 0.0
    return x, valid, w


def _numpy(x, valid, w):
    s = np.sort(x[valid].astype(np.float64), axis=0)
    m = len(s)
    out = (w[:m, None].astype(np.float64) * s).sum(0) if m else np.zeros(x.shape[1])
    return out, np.sign(x[valid]).sum(0)


@needs_kernel
@pytest.mark.parametrize("n,d,threads", [(1, 1, 0), (2, 3, 0), (7, 130, 1), (33, 1100, 3),
                                         (200, 700, 2), (300, 1037, 2), (1100, 300, 0)])
def test_matches_reference_and_numpy(n, d, threads):
    x, valid, w = _inputs(n, d, seed=n + d)
    got, signs = order_stats.rank_weighted_sum(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(w),
                                               with_signs=True, num_threads=threads)
    ref, ref_signs = order_stats.rank_weighted_sum_reference(
        jnp.asarray(x), jnp.asarray(valid), jnp.asarray(w), with_signs=True)
    want, want_signs = _numpy(x, valid, w)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1, np.sqrt(n)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1, np.sqrt(n)))
    np.testing.assert_array_equal(signs, ref_signs)
    np.testing.assert_array_equal(signs, want_signs)


@needs_kernel
def test_one_hot_weights_pick_each_rank_exactly():
    x, valid, _ = _inputs(9, 200, seed=3, invalid_frac=0.0)
    s = np.sort(x, axis=0)
    for r in range(9):
        w = np.zeros(9, np.float32)
        w[r] = 1.0
        got = order_stats.rank_weighted_sum(jnp.asarray(x), jnp.ones(9, bool), jnp.asarray(w))
        np.testing.assert_array_equal(got, s[r])


@needs_kernel
def test_no_valid_row_gives_zeros_and_huge_values_stay_finite():
    x = np.full((4, 70), np.nan, np.float32)
    out = order_stats.rank_weighted_sum(jnp.asarray(x), jnp.zeros(4, bool), jnp.ones(4))
    np.testing.assert_array_equal(out, 0.0)
    x = np.full((5, 70), 3e38, np.float32)
    x[0] = -3e38
    w = np.full(5, 0.2, np.float32)
    out = np.asarray(order_stats.rank_weighted_sum(jnp.asarray(x), jnp.ones(5, bool), jnp.asarray(w)))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.2 * 3e38 * 3, rtol=1e-6)


@needs_kernel
def test_jit_and_vmap():
    x, valid, w = _inputs(6, 90, seed=5)
    f = jax.jit(order_stats.rank_weighted_sum)
    want = order_stats.rank_weighted_sum_reference(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(w))
    np.testing.assert_allclose(f(jnp.asarray(x), jnp.asarray(valid), jnp.asarray(w)), want,
                               rtol=1e-5, atol=1e-5)
    xs = jnp.stack([jnp.asarray(x), -jnp.asarray(x)])
    got = jax.vmap(order_stats.rank_weighted_sum, in_axes=(0, None, None))(
        xs, jnp.asarray(valid), jnp.asarray(w))
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)
    neg = order_stats.rank_weighted_sum_reference(-jnp.asarray(x), jnp.asarray(valid), jnp.asarray(w))
    np.testing.assert_allclose(got[1], neg, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="float32"):
        order_stats.rank_weighted_sum(jnp.zeros((3, 4), jnp.int32), jnp.ones(3, bool), jnp.ones(3))
    with pytest.raises(TypeError, match=r"shape \(3,\)"):
        order_stats.rank_weighted_sum(jnp.zeros((3, 4)), jnp.ones(2, bool), jnp.ones(3))


def test_missing_compiler_is_a_clear_error():
    with pytest.raises(order_stats.KernelUnavailable, match="C\\+\\+17 compiler"):
        order_stats._build(None)


def test_first_build_says_one_line_and_a_cached_one_nothing(tmp_path, monkeypatch, capsys):
    """Compiling on first use must not surprise: one line while it compiles (even if
    the -march=native attempt fails and a second one runs), none once cached."""
    monkeypatch.setenv("FLJAX_KERNEL_CACHE", str(tmp_path))
    calls = []

    def fake_compile(cxx, flags, out):  # first attempt fails, second "compiles"
        calls.append(flags)
        if len(calls) == 1:
            return "unknown flag -march=native"
        out.write_bytes(b"")
        return None

    monkeypatch.setattr(order_stats, "_compile", fake_compile)
    path = order_stats._build("c++")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "compiling" in err and str(tmp_path) in err, err
    assert order_stats._build("c++") == path and len(calls) == 2
    assert capsys.readouterr().err == ""


@needs_kernel
@pytest.mark.parametrize("n,beta", [(9, 3), (12, 1), (12, 5), (9, 100)])
def test_closest_to_median_mean_matches_reference_and_bulyans_jnp_step(n, beta):
    """Bulyan's coordinate step (odd and even counts, NaN rows, ties at the
    boundary distance, beta above the count) against its jnp definition and
    fljax's jnp path. Catches a wrong b-th distance (the min-max identity over
    the sorted window), a wrong tie share, or a window the pruned network
    leaves unsorted."""
    from fljax.aggregators.bulyan import closest_to_median_mean as jnp_step

    rng = np.random.default_rng(n + beta)
    x = rng.integers(-3, 4, (n, 301)).astype(np.float32) * 0.5  # many exact ties
    x[:, :100] = rng.standard_normal((n, 100)).astype(np.float32)
    valid = np.ones(n, bool)
    valid[[1, 4]] = False
    x[1, 5], x[4] = np.nan, np.inf
    args = (jnp.asarray(x), jnp.asarray(valid))
    got = order_stats.closest_to_median_mean(*args, beta)
    np.testing.assert_allclose(got, order_stats.closest_to_median_mean_reference(*args, beta),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, jnp_step(*args, beta), rtol=1e-6, atol=1e-6)


@needs_kernel
def test_closest_to_median_mean_without_valid_rows_and_bad_beta():
    out = order_stats.closest_to_median_mean(jnp.full((3, 40), jnp.nan), jnp.zeros(3, bool), 2)
    np.testing.assert_array_equal(out, 0.0)
    with pytest.raises(ValueError, match="beta"):
        order_stats.closest_to_median_mean(jnp.zeros((3, 4)), jnp.ones(3, bool), 0)


@needs_kernel
@pytest.mark.parametrize("make", ["coordinate_median", "trimmed_mean", "invariant",
                                  pytest.param("bulyan", marks=pytest.mark.slow)])
def test_aggregators_with_kernel_match_jnp_path(make):
    """The kernels injected by hand (as a config or a Pallas kernel would be)."""
    from fljax import aggregators as agg

    build = {"coordinate_median": lambda k: agg.coordinate_median(kernel=k),
             "trimmed_mean": lambda k: agg.trimmed_mean(5, kernel=k),
             "invariant": lambda k: agg.invariant(tau=0.2, kernel=k),
             "bulyan": lambda k: agg.bulyan(4, kernel=k and order_stats.closest_to_median_mean)}[make]
    x, _, _ = _inputs(23, 600, seed=11)
    key = jax.random.PRNGKey(0)
    fast, plain = build(order_stats.rank_weighted_sum), build(None)
    a, _, ia = jax.jit(fast.aggregate)(jnp.asarray(x), fast.init(600), key)
    b, _, ib = jax.jit(plain.aggregate)(jnp.asarray(x), plain.init(600), key)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert set(ia) == set(ib)
    for name in ia:
        np.testing.assert_allclose(ia[name], ib[name])
    if make == "coordinate_median":
        np.testing.assert_array_equal(a, b)  # 0.5 a + 0.5 b on both paths


@needs_kernel
def test_other_platforms_lower_to_the_reference():
    # The FFI target exists for the CPU only; a GPU lowering must not name it.
    from jax import export

    f = jax.jit(lambda x, v, w: order_stats.rank_weighted_sum(x, v, w))
    args = (jax.ShapeDtypeStruct((5, 7), jnp.float32), jax.ShapeDtypeStruct((5,), jnp.bool_),
            jax.ShapeDtypeStruct((5,), jnp.float32))
    text = export.export(f, platforms=["cuda"])(*args).mlir_module()
    assert order_stats.TARGET not in text and "sort" in text
    g = jax.jit(lambda x, v: order_stats.closest_to_median_mean(x, v, 2))
    text = export.export(g, platforms=["cuda"])(*args[:2]).mlir_module()
    assert order_stats.TARGET_CLOSEST not in text and "sort" in text
