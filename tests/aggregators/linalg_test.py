"""Row norms, clip weights and client-axis sums shared by the clipping rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax.aggregators import _linalg, _ops, _spectral


def _norms64(x, centre=None):
    y = np.asarray(x, np.float64)
    if centre is not None:
        y = y - np.asarray(centre, np.float64)
    return np.sqrt(np.sum(y * y, axis=1))


@pytest.mark.parametrize("magnitude", [1.0, 1e25, 1e-25])
@pytest.mark.parametrize("centred", [False, True])
def test_row_norms_any_scale(magnitude, centred):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 50)).astype(np.float32)
    x[2] *= magnitude  # one row at an extreme scale (overflow / underflow of Σx²)
    x[4] = np.nan  # invalid rows may hold anything
    valid = np.isfinite(x).all(axis=1)
    centre = rng.normal(size=50).astype(np.float32) * 0.1 if centred else None
    scale, base = _linalg.row_norms(jnp.asarray(x), jnp.asarray(valid),
                                    None if centre is None else jnp.asarray(centre))
    got = np.asarray(scale, np.float64) * np.asarray(base, np.float64)
    want = _norms64(np.where(valid[:, None], x, 0), centre)
    np.testing.assert_allclose(got[valid], want[valid], rtol=1e-5)
    assert np.asarray(base)[4] == 0
    assert np.all(np.isfinite(np.asarray(scale))) and np.all(np.isfinite(np.asarray(base)))


def test_clip_weights_overflowing_and_zero_rows():
    x = np.zeros((3, 4), np.float32)
    x[0] = [3.0, 4.0, 0.0, 0.0]  # norm 5
    x[1] = 3e38  # true norm 6e38: beyond float32, still clipped to a finite row
    valid = np.ones(3, bool)
    scale, base = _linalg.row_norms(jnp.asarray(x), jnp.asarray(valid))
    w = np.asarray(_linalg.clip_weights(scale, base, 1.0))
    s = np.asarray(scale, np.float64)
    np.testing.assert_allclose(w[0] / s[0], 0.2, rtol=1e-6)
    np.testing.assert_allclose(w[1] / s[1] * 3e38 * 2.0, 1.0, rtol=1e-5)  # ‖w x / s‖ = 1
    total = np.asarray(_linalg.weighted_row_sum(jnp.asarray(x), jnp.asarray(w), jnp.asarray(valid),
                                                scale=scale))
    np.testing.assert_allclose(total, [0.6 + 0.5, 0.8 + 0.5, 0.5, 0.5], rtol=1e-5)
    assert w[2] == np.asarray(scale)[2] == 1.0  # a zero row is left alone


def test_clip_weights_of_short_rows_and_a_bound_below_one():
    """``min(1, bound / ‖x‖)`` for rows shorter than 1 and a bound of 0.1; a
    zero row keeps its weight ``scale`` (1) however small the bound. Catches:
    a norm below 1 replaced by 1 (``base > 1``), a zero row clipped to the
    bound (``base >= 0``)."""
    norms = np.array([0.5, 0.05, 0.0, 5.0], np.float32)
    x = np.zeros((4, 3), np.float32)
    x[:, 0] = norms
    scale, base = _linalg.row_norms(jnp.asarray(x), jnp.ones(4, bool))
    w = np.asarray(_linalg.clip_weights(scale, base, 0.1)) / np.asarray(scale)
    np.testing.assert_allclose(w, [0.2, 1.0, 1.0, 0.02], rtol=1e-6)


@pytest.mark.parametrize("d", [7, 4096, 4096 * 3 + 5])
def test_weighted_row_sum_matches_numpy(d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(5, d)).astype(np.float32)
    x[1, 0] = np.inf
    x[3, d // 2] = np.nan
    valid = np.isfinite(x).all(axis=1)
    w = rng.uniform(size=5).astype(np.float32)
    centre = rng.normal(size=d).astype(np.float32)
    got = np.asarray(_linalg.weighted_row_sum(jnp.asarray(x), jnp.asarray(w), jnp.asarray(valid),
                                              jnp.asarray(centre)))
    xs = np.where(valid[:, None], x.astype(np.float64) - centre, 0.0)
    want = (w[:, None] * xs).sum(axis=0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unit_rows_of_huge_and_tiny_rows():
    x = np.array([[3e38, 3e38, 0.0], [1e-30, 0.0, -1e-30], [0.0, 0.0, 0.0], [1.0, 2.0, 2.0]],
                 np.float32)
    unit, norm = _linalg.unit_rows(jnp.asarray(x))
    r = np.sqrt(0.5)
    np.testing.assert_allclose(np.asarray(unit),
                               [[r, r, 0], [r, 0, -r], [0, 0, 0], [1 / 3, 2 / 3, 2 / 3]], rtol=1e-6)
    assert np.isinf(np.asarray(norm)[0]) and np.asarray(norm)[3] == pytest.approx(3.0)


def test_column_sum_of_an_expression():
    x = jax.random.normal(jax.random.PRNGKey(0), (9, 10_000))
    got = _ops.column_sum(jnp.sign, x)
    np.testing.assert_array_equal(np.asarray(got), np.sign(np.asarray(x)).sum(axis=0))


@pytest.mark.parametrize("nonfinite", [False, True])
def test_weighted_row_sum_matvec_and_tiled_paths_agree(nonfinite):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5000)).astype(np.float32)
    if nonfinite:
        x[2, 7] = np.nan  # takes the tiled path
    valid = np.isfinite(x).all(axis=1)
    w = rng.uniform(size=6).astype(np.float32)
    got = np.asarray(_linalg.weighted_row_sum(jnp.asarray(x), jnp.asarray(w), jnp.asarray(valid)))
    want = (w[:, None] * np.where(valid[:, None], x.astype(np.float64), 0.0)).sum(axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_top_eigen_matches_eigh_on_a_batch_of_slightly_asymmetric_matrices():
    """``top_eigen`` (repeated squaring) against float64 ``eigh`` on a batch of
    PSD matrices with a clear gap, each given with a small asymmetry (as a Gram
    matrix computed in two orders would have): the eigenpair is that of the
    symmetric part. A zero matrix gives ``(0, e_0)``.

    Catches: the symmetrisation dropped or made a no-op (``swapaxes(m, -2, -2)``,
    or ``swapaxes(m, 1, -2)``, a no-op on a batch)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 6, 4))
    m = np.einsum("bik,bjk->bij", a, a) + np.diag([3.0, 0, 0, 0, 0, 0])
    skew = 0.2 * rng.normal(size=m.shape)
    given = m + (skew - np.swapaxes(skew, 1, 2))  # symmetric part m
    lam, v = _spectral.top_eigen(jnp.asarray(given, jnp.float32))
    w, u = np.linalg.eigh(m)
    np.testing.assert_allclose(np.asarray(lam), w[:, -1], rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.einsum("bk,bk->b", np.asarray(v), u[:, :, -1])), 1.0,
                               atol=1e-5)
    lam0, v0 = _spectral.top_eigen(jnp.zeros((4, 4)))
    assert float(lam0) == 0.0 and np.asarray(v0).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_cosine_distance_against_numpy_with_a_zero_row_and_a_common_part():
    """``1 - cos`` against float64 NumPy for rows sharing a large common part
    (models near the global model), opposite rows (distance 2) and a zero row
    (distance 1 from every other row, 0 to itself). Catches the distances
    scaled (``1.5 * d2``) or a zero row taken for a nonzero one (``unit != 1``)."""
    rng = np.random.default_rng(0)
    common = rng.normal(size=16)
    x = np.stack([common + 0.3 * rng.normal(size=16) for _ in range(4)]
                 + [rng.normal(size=16), -np.ones(16), np.ones(16), np.zeros(16)])
    unit, _ = _linalg.unit_rows(jnp.asarray(x, jnp.float32))
    got = np.asarray(_linalg.cosine_distance(unit), np.float64)
    norms = np.linalg.norm(x, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    want = 1.0 - (x / safe[:, None]) @ (x / safe[:, None]).T
    want[-1, :] = want[:, -1] = 1.0
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got[5, 6] == pytest.approx(2.0, abs=1e-6)
