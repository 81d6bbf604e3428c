"""Client-side defences in fljax.transforms: identity at strength zero, semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import transforms
from fljax.models import mlp

SHAPES = transforms.tensor_shapes(mlp((8, 8, 1), 10, hidden=(16,)).init(jax.random.PRNGKey(0)))
D = sum(int(np.prod(s)) for s in SHAPES)
KEY = jax.random.PRNGKey(7)
U = jax.random.normal(jax.random.PRNGKey(1), (D,))


@pytest.mark.parametrize("t", [
    transforms.laplace_noise(0.0),
    transforms.gaussian_noise(0.0),
    transforms.row_noise(0.0, "gaussian", shapes=SHAPES),
    transforms.row_noise(0.0, "laplace", shapes=SHAPES),
    transforms.prune(0.0, shapes=SHAPES),
    transforms.prune(0.0),
    transforms.quantize(0),
    transforms.dp(None, 0.0),
])
def test_identity_at_strength_zero(t):
    np.testing.assert_array_equal(jax.jit(t)(U, KEY), U)


def test_prune_per_tensor():
    out = np.asarray(transforms.prune(50.0, shapes=SHAPES)(U, KEY))
    start = 0
    for s in SHAPES:
        n = int(np.prod(s))
        seg, orig = out[start:start + n], np.asarray(U[start:start + n])
        zeros = np.sum(seg == 0)
        assert abs(zeros - n // 2) <= 1, (s, zeros)
        kept = seg != 0
        assert np.all(np.abs(orig[kept]) >= np.abs(orig[~kept]).max())
        start += n
    # Without shapes the whole update is one tensor.
    assert abs(int(np.sum(np.asarray(transforms.prune(30.0)(U, KEY)) == 0)) - 0.3 * D) <= 1


def test_row_noise_scales_noise_by_the_row_norm_factor():
    shapes = [(4, 3)]
    t = jnp.array([[1.0, 0.0, 0.0]] * 4)  # column norms 2, 0, 0 -> nf = 2 / 0.2 = 10
    out = transforms.row_noise(1e-3, "gaussian", clip=0.2, shapes=shapes)(t.reshape(-1), KEY)
    noise = jax.random.normal(jax.random.split(KEY, 1)[0], (4, 3))
    np.testing.assert_allclose(out.reshape(4, 3), t + 10 * 1e-3 * noise, rtol=1e-5)


# Distribution checks draw this many coordinates; every tolerance below is
# 5 standard errors of the statistic for this count (derived, not tuned):
# sample mean sigma / sqrt(n); sample std sigma / sqrt(2n) for a Gaussian,
# 1.12 sigma / sqrt(n) for a Laplace (its kurtosis is 6); mean|x| / std by the
# delta method 0.21 (Gaussian) and 0.34 (Laplace) / sqrt(n), bounded by 0.6.
N_DRAWS = 200_000


def _z(stat, expected, standard_error):
    return abs(stat - expected) / standard_error


def test_quantize_levels_are_exact():
    """3 bits: every entry becomes round(t / step) * step with step = max|t| / 3.

    Catches: all zeros, the wrong number of levels (``2**bits - 1`` a side),
    a step from the mean instead of the max, truncation instead of rounding.
    """
    q = np.asarray(transforms.quantize(3, shapes=SHAPES)(U, KEY))
    start = 0
    for s in SHAPES:
        n = int(np.prod(s))
        t = np.asarray(U[start:start + n])
        step = np.float32(np.max(np.abs(t))) / np.float32(3.0)
        want = (np.clip(np.round(t / step), -3, 3) * step).astype(np.float32)
        np.testing.assert_array_equal(q[start:start + n], want)
        levels = np.round(q[start:start + n] / step)
        assert set(levels.tolist()) <= {-3, -2, -1, 0, 1, 2, 3}
        assert np.max(np.abs(q[start:start + n])) == pytest.approx(np.max(np.abs(t)), rel=1e-6)
        start += n
    half = transforms.quantize(16)(U, KEY)
    np.testing.assert_array_equal(half, np.asarray(U).astype(np.float16).astype(np.float32))


def test_stochastic_quantize_is_unbiased_between_the_two_nearest_levels():
    """t = 0.25 * step rounds up with probability 0.25 (binomial tolerance)."""
    t = jnp.concatenate([jnp.array([3.0]), jnp.full((N_DRAWS,), 0.25)])  # step = 1
    q = np.asarray(transforms.quantize(3, stochastic=True)(t, KEY))
    assert q[0] == 3.0 and set(np.unique(q[1:]).tolist()) <= {0.0, 1.0}
    up = np.mean(q[1:])
    assert _z(up, 0.25, np.sqrt(0.25 * 0.75 / N_DRAWS)) < 5, up


def test_dp_clips_then_adds_gaussian_noise_of_std_multiplier_times_clip():
    """dp(clip, z): the clipped update plus N(0, (z * clip)^2) per coordinate.

    Catches: noise x100 (the old test only checked that the output changed),
    noise not scaled by the clip, Laplace instead of Gaussian noise (its
    mean |x| / std is 0.707, a Gaussian's 0.798), clipping skipped.
    """
    out = transforms.dp(1.0, 0.0)(U * 100, KEY)
    assert float(jnp.linalg.norm(out)) == pytest.approx(1.0, rel=1e-5)
    u = jnp.zeros((N_DRAWS,)).at[0].set(1e3)  # norm 1e3: clipped to norm 2
    for clip, z in ((2.0, 0.5), (None, 0.3)):
        noisy = np.asarray(transforms.dp(clip, z)(u, KEY), np.float64)
        base = np.asarray(transforms.clip_by_norm(clip)(u, KEY) if clip else u, np.float64)
        noise = (noisy - base)[1:]
        std = z * (clip if clip else 1.0)
        assert _z(np.mean(noise), 0.0, std / np.sqrt(N_DRAWS)) < 5
        assert _z(np.std(noise), std, std / np.sqrt(2 * N_DRAWS)) < 5, (clip, np.std(noise))
        ratio = np.mean(np.abs(noise)) / np.std(noise)
        assert _z(ratio, np.sqrt(2 / np.pi), 0.6 / np.sqrt(N_DRAWS)) < 5, ratio
        np.testing.assert_allclose(noisy[0], base[0], atol=6 * std)


def test_laplace_noise_has_the_laplace_moments():
    """Laplace(0, b): mean 0, std sqrt(2) b, mean |x| = b (mean |x| / std = 0.707).

    Catches: Gaussian noise of any scale (ratio 0.798), a wrong scale (10x),
    and noise only checked at scale 0 (the identity).
    """
    b = 0.05
    noise = np.asarray(transforms.laplace_noise(b)(jnp.zeros((N_DRAWS,)), KEY), np.float64)
    assert _z(np.mean(noise), 0.0, np.sqrt(2) * b / np.sqrt(N_DRAWS)) < 5
    # Var(|X|) = b^2; the sample std of a Laplace has relative error ~1.12 / sqrt(n).
    assert _z(np.mean(np.abs(noise)), b, b / np.sqrt(N_DRAWS)) < 5
    assert _z(np.std(noise), np.sqrt(2) * b, 1.12 * np.sqrt(2) * b / np.sqrt(N_DRAWS)) < 5
    ratio = np.mean(np.abs(noise)) / np.std(noise)
    assert _z(ratio, 1 / np.sqrt(2), 0.6 / np.sqrt(N_DRAWS)) < 5, ratio


def test_registry_and_shapes_injection():
    for name in ("laplace_noise", "row_noise", "prune", "quantize", "dp"):
        assert name in transforms.TRANSFORMS
    t = transforms.get_transform("prune", shapes=SHAPES, percent=50.0)
    np.testing.assert_array_equal(t(U, KEY), transforms.prune(50.0, SHAPES)(U, KEY))
    # Transforms without a shapes argument ignore it.
    transforms.get_transform("gaussian_noise", shapes=SHAPES, stddev=0.0)
    with pytest.raises(ValueError, match="shapes cover"):
        transforms.prune(10.0, shapes=[(3,)])(U, KEY)
