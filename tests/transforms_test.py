import jax
import jax.numpy as jnp
import numpy as np

from fljax import transforms


def test_clip_by_norm_of_a_huge_update():
    u = jnp.full((4,), 3e38, jnp.float32)  # norm 6e38 overflows float32
    out = np.asarray(transforms.clip_by_norm(1.0)(u, None), np.float64)
    np.testing.assert_allclose(out, [0.5] * 4, rtol=1e-6)


def test_clip_by_norm_reference_and_nonfinite():
    u = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(transforms.clip_by_norm(1.0)(u, None), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(transforms.clip_by_norm(10.0)(u, None), [3.0, 4.0])
    np.testing.assert_array_equal(transforms.clip_by_norm(1.0)(jnp.array([jnp.nan, 1.0]), None),
                                  [0.0, 0.0])


def test_noise_zero_is_identity_and_chain_and_rows():
    u = jax.random.normal(jax.random.PRNGKey(0), (3, 7))
    t = transforms.chain(transforms.gaussian_noise(0.0), transforms.clip_by_norm(1e9))
    np.testing.assert_allclose(transforms.apply_rows(t, u, jax.random.PRNGKey(1)), u, rtol=1e-6)
    noisy = transforms.apply_rows(transforms.gaussian_noise(1.0), jnp.zeros((2, 5000)),
                                  jax.random.PRNGKey(2))
    assert abs(float(noisy.std()) - 1.0) < 0.03
    assert not np.allclose(noisy[0], noisy[1])  # each row its own key


def test_unknown_transform():
    import pytest
    with pytest.raises(ValueError, match="unknown transform"):
        transforms.get_transform("blur")


def test_factories_reject_out_of_range_strengths_with_one_line():
    """A negative noise scale, a percent outside [0, 100], a non-positive clip...
    fail when the transform is built, naming it, the argument and the value.
    Arrays (a sweep's traced values) are not checked."""
    import pytest

    bad = [
        (lambda: transforms.gaussian_noise(-1.0), r"gaussian_noise: stddev=-1\.0 .*>= 0"),
        (lambda: transforms.laplace_noise(float("nan")), r"laplace_noise: scale=nan"),
        (lambda: transforms.row_noise(0.1, clip=0.0), r"row_noise: clip=0\.0 .*> 0"),
        (lambda: transforms.prune(101.0), r"prune: percent=101\.0 .*\[0, 100\]"),
        (lambda: transforms.quantize(1), r"quantize: bits=1 .*0 \(off\) or an int in \[2, 32\]"),
        (lambda: transforms.quantize(4.0), r"quantize: bits=4\.0"),
        (lambda: transforms.dp(-1.0, 0.5), r"dp: clip=-1\.0"),
        (lambda: transforms.dp(1.0, -0.5), r"dp: noise_multiplier=-0\.5"),
        (lambda: transforms.clip_by_norm("1"), r"clip_by_norm: max_norm='1'"),
    ]
    for build, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            build()
    transforms.gaussian_noise(jnp.asarray(-1.0))  # traced / array values pass through
    transforms.dp(None, 0.0)
