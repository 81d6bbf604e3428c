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


def test_boundary_values_and_defaults_of_the_factories():
    """The documented ranges are inclusive where they say so, and the defaults
    are the documented ones: ``prune(100)`` zeroes all but the largest
    magnitude, ``quantize(2)`` and ``quantize(32)`` are valid and ``33`` is
    not, ``dp(0.0)`` is rejected, ``quantize()`` is off, ``dp(clip)`` adds no
    noise, ``row_noise`` defaults to Gaussian noise with the paper's clip 0.2,
    and ``True`` is not a number.

    ``row_noise`` on a 2-D tensor takes the largest column (output unit)
    norm, not the whole norm.

    Catches: ``percent <= 100`` tightened to ``< 100``; ``|u| < threshold``
    loosened to ``<=`` (prune(100) would zero everything); the bits range
    moved (``bits >= 32``, ``bits > 33``) and ``2 ** (bits - 1)`` as
    ``2 * (bits - 1)``; ``> 0`` / ``>= 0`` loosened in ``dp``'s and
    ``clip_by_norm``'s clip, ``and`` as ``or`` in ``laplace_noise``'s and
    ``row_noise``'s scale checks; other defaults (bits 1, noise_multiplier
    1, clip 1.2); a 2-D tensor's factor from its whole norm (``ndim > 2``,
    ``ndim >= 3``).
    """
    import pytest

    u = jnp.array([1.0, -4.0, 2.0, 3.0])
    np.testing.assert_array_equal(transforms.prune(100.0)(u, None), [0.0, -4.0, 0.0, 0.0])
    transforms.quantize(2)
    np.testing.assert_array_equal(transforms.quantize(32)(u, None), u)
    for build in (lambda: transforms.quantize(33), lambda: transforms.dp(0.0, 0.5),
                  lambda: transforms.clip_by_norm(0.0), lambda: transforms.laplace_noise(-1.0),
                  lambda: transforms.row_noise(-1.0), lambda: transforms.clip_by_norm(True)):
        with pytest.raises(ValueError):
            build()
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(transforms.quantize()(u, key), u)
    np.testing.assert_array_equal(transforms.dp(10.0)(u, key), u)
    t = jnp.array([[0.4, 0.0], [0.0, 0.2]])  # column norms 0.4, 0.2 (whole norm 0.45)
    out = transforms.row_noise(1e-2, shapes=[(2, 2)])(t.reshape(-1), key)
    noise = jax.random.normal(jax.random.split(key, 1)[0], (2, 2))
    np.testing.assert_allclose(out.reshape(2, 2), t + 2.0 * 1e-2 * noise, rtol=1e-6)  # nf 2


def test_row_noise_and_per_tensor_layouts():
    """``row_noise`` on a conv kernel ``[h, w, in, out]`` takes each output
    unit's norm over ``h, w, in``; a floor of 1 on the factor (a tensor whose
    rows are all shorter than ``clip`` gets the plain noise); a flat update of
    exactly two tensors, and a scalar (shape ``()``) tensor, are split and put
    back in order.

    Catches: the row axis taken as ``shape[+1]`` (the kernel's width); the
    floor of the factor raised to 2; two tensors returned as the first only
    (``len(parts) > 2``); a scalar tensor counted as 2 entries.
    """
    key = jax.random.PRNGKey(5)
    kernel = jnp.zeros((3, 2, 1, 4)).at[..., 1::2].set(1.0)  # units 1 and 3: norm sqrt(6) each
    out = transforms.row_noise(1e-3, clip=0.2, shapes=[kernel.shape])(kernel.reshape(-1), key)
    noise = jax.random.normal(jax.random.split(key, 1)[0], kernel.shape)
    nf = np.sqrt(6.0) / 0.2
    np.testing.assert_allclose(out.reshape(kernel.shape), kernel + nf * 1e-3 * noise,
                               rtol=1e-5, atol=1e-7)
    small = jnp.full((4,), 0.01)  # norm 0.02 < clip: nf = 1
    out = transforms.row_noise(1e-3, clip=0.2, shapes=[(4,)])(small, key)
    noise = jax.random.normal(jax.random.split(key, 1)[0], (4,))
    np.testing.assert_allclose(out, small + 1e-3 * noise, rtol=1e-6)
    u = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    q = transforms.quantize(16, shapes=[(2, 2), ()])(u, key)
    np.testing.assert_array_equal(q, u)
    p = transforms.prune(50.0, shapes=[(2,), (3,)])(u, key)
    np.testing.assert_array_equal(p, [0.0, 2.0, 0.0, 4.0, 5.0])


def test_config_names_of_the_transforms():
    """The names a config uses (``client_transforms`` / ``server_transforms``).

    Catches: a transform registered under another name.
    """
    assert set(transforms.TRANSFORMS) == {
        "identity", "clip_by_norm", "gaussian_noise", "laplace_noise", "row_noise", "prune",
        "quantize", "dp"}
    u = jnp.array([3.0, 4.0])
    np.testing.assert_array_equal(transforms.get_transform("identity")(u, None), u)
    np.testing.assert_allclose(transforms.get_transform("clip_by_norm", max_norm=1.0)(u, None),
                               [0.6, 0.8], rtol=1e-6)
