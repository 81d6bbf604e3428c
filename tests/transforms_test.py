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
