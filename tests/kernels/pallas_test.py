"""The Pallas kernels against their jnp references.

Each test class runs compiled on a GPU (``INTERPRET = False``, skipped
elsewhere) and its ``...Interpret`` subclass runs in Pallas' interpret mode on
the CPU (skipped off the CPU). The CUDA lowering itself (down to the Triton
IR that XLA compiles) is checked on any machine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from kernels import pallas_gram, pallas_order_stats

_BACKEND = jax.default_backend()


def _data(n, d, seed, invalid=(1, 4)):
    """Normal values with exact ties, and NaN / inf rows marked invalid."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[rng.random((n, d)) < 0.1] = 0.5
    valid = np.ones(n, bool)
    for i, row in enumerate(r for r in invalid if r < n):
        valid[row] = False
        x[row, i % d] = np.nan if i % 2 == 0 else np.inf
    return jnp.asarray(x), jnp.asarray(valid)


class TestRangeMean:
    INTERPRET = False

    @pytest.fixture(autouse=True)
    def _platform(self):
        if self.INTERPRET != (_BACKEND == "cpu"):
            pytest.skip("interpret mode runs on the CPU, compiled kernels on a GPU")

    @pytest.mark.parametrize("n,d,rows,block", [(7, 100, None, None), (12, 70, None, 32),
                                                (40, 300, 16, 64),
                                                pytest.param(33, 50, 8, 16, marks=pytest.mark.slow)])
    def test_matches_reference(self, n, d, rows, block):
        """Odd and even counts, dims that are not a multiple of the block, NaN / inf
        rows, ties, one and several row chunks; the median, a trimmed range and a
        one-rank range. Catches a wrong bisection, tie count, mask or chunk loop."""
        x, valid = _data(n, d, seed=n + d)
        m = int(valid.sum())
        ranges = [((m - 1) // 2, m // 2), (m // 4, m - 1 - m // 4), (0, 0), (m - 1, m - 1)]
        kernel = jax.jit(lambda x, v, lo, hi: pallas_order_stats.range_mean(  # one compile
            x, v, lo, hi, with_signs=True, rows=rows, block=block, interpret=self.INTERPRET))
        for lo, hi in ranges:
            got, signs = kernel(x, valid, jnp.int32(lo), jnp.int32(hi))
            want, want_signs = pallas_order_stats.range_mean_reference(x, valid, lo, hi,
                                                                       with_signs=True)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{lo}..{hi}")
            np.testing.assert_array_equal(signs, want_signs)

    def test_no_valid_row_gives_zeros(self):
        x = jnp.full((5, 20), jnp.nan)
        out = pallas_order_stats.range_mean(x, jnp.zeros(5, bool), 0, 0, interpret=self.INTERPRET)
        np.testing.assert_array_equal(out, 0.0)

    def test_rank_weighted_sum_takes_the_rules_weights(self):
        """The adapter behind the rules' ``kernel=`` signature reads the rank range
        off the weights: the median's 1/2, 1/2 (or 1) and a trimmed mean's 1/k."""
        from kernels import order_stats

        x, valid = _data(12, 40, seed=5)
        m = int(valid.sum())
        rank = jnp.arange(12)
        kernel = jax.jit(lambda x, v, w: pallas_order_stats.rank_weighted_sum(
            x, v, w, with_signs=True, interpret=self.INTERPRET))
        for w in (0.5 * (rank == (m - 1) // 2) + 0.5 * (rank == m // 2),
                  jnp.where((rank >= 2) & (rank < m - 2), 1.0 / (m - 4), 0.0)):
            got, signs = kernel(x, valid, w.astype(jnp.float32))
            want, want_signs = order_stats.rank_weighted_sum_reference(x, valid, w, with_signs=True)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(signs, want_signs)

    @pytest.mark.slow
    @pytest.mark.parametrize("make", ["coordinate_median", "trimmed_mean", "invariant"])
    def test_injected_into_the_rules(self, make):
        """Behind the rules' ``kernel=`` signature it equals their jnp paths."""
        from fljax import aggregators as agg

        kernel = lambda *a, **k: pallas_order_stats.rank_weighted_sum(  # noqa: E731
            *a, **k, interpret=self.INTERPRET)
        build = {"coordinate_median": lambda k: agg.coordinate_median(kernel=k),
                 "trimmed_mean": lambda k: agg.trimmed_mean(3, kernel=k),
                 "invariant": lambda k: agg.invariant(tau=0.2, kernel=k)}[make]
        x, _ = _data(13, 90, seed=3)
        key = jax.random.PRNGKey(0)
        fast, plain = build(kernel), build(None)
        a, _, ia = jax.jit(fast.aggregate)(x, fast.init(90), key)
        b, _, ib = jax.jit(plain.aggregate)(x, plain.init(90), key)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        for name in ib:
            np.testing.assert_array_equal(ia[name], ib[name])


class TestRangeMeanInterpret(TestRangeMean):
    INTERPRET = True


class TestCentredGram:
    INTERPRET = False

    @pytest.fixture(autouse=True)
    def _platform(self):
        if self.INTERPRET != (_BACKEND == "cpu"):
            pytest.skip("interpret mode runs on the CPU, compiled kernels on a GPU")

    @pytest.mark.parametrize("n,d,bi,bk", [(7, 100, 16, 32), (40, 333, 16, 64),
                                           pytest.param(33, 64, 32, 16, marks=pytest.mark.slow)])
    def test_matches_reference_and_the_jnp_path(self, n, d, bi, bk):
        """Odd and even counts, several row blocks (the mirrored lower triangle),
        dims that are not a multiple of the chunk, NaN / inf rows, rows with a
        large common offset (the centring). Catches a wrong block index, mask,
        mirror or centring."""
        from fljax.aggregators import _ops

        x, valid = _data(n, d, seed=n * d)
        x = x + 100.0
        centre = jnp.mean(jnp.where(valid[:, None], x, 0.0), axis=0) * n / valid.sum()
        got = pallas_gram.centred_gram(x, centre, valid, bi=bi, bk=bk, interpret=self.INTERPRET)
        want = pallas_gram.centred_gram_reference(x, centre, valid)
        jnp_path = _ops.centred_gram_blocked(jnp.where(valid[:, None], x, 0.0), centre, valid)
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(got, jnp_path, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_array_equal(got, got.T)
        assert np.isfinite(np.asarray(got)).all()


class TestCentredGramInterpret(TestCentredGram):
    INTERPRET = True


def _cuda_text(fn, *shapes):
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    return export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=checks)(*shapes).mlir_module()


def test_kernels_lower_to_triton_for_cuda():
    """Both kernels lower for an NVIDIA GPU (Triton IR inside XLA's Triton custom
    call) on any machine: catches an operation the Triton lowering lacks before
    a GPU is ever lent. (It does not run them: that needs a GPU.)"""
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    text = _cuda_text(lambda x, v: pallas_order_stats.range_mean(x, v, 3, 5, with_signs=True,
                                                                  interpret=False),
                      f32(200, 1000), jax.ShapeDtypeStruct((200,), jnp.bool_))
    assert "__gpu$xla.gpu.triton" in text
    text = _cuda_text(lambda x, c, v: pallas_gram.centred_gram(x, c, v, interpret=False),
                      f32(50, 1000), f32(1000), jax.ShapeDtypeStruct((50,), jnp.bool_))
    assert "__gpu$xla.gpu.triton" in text
