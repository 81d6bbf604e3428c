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


def test_quantize_levels():
    q = np.asarray(transforms.quantize(3, shapes=SHAPES)(U, KEY))
    start = 0
    for s in SHAPES:
        n = int(np.prod(s))
        assert len(np.unique(q[start:start + n])) <= 7  # 2^(3-1) - 1 = 3 levels a side
        start += n
    half = transforms.quantize(16)(U, KEY)
    np.testing.assert_allclose(half, U, rtol=1e-3)


def test_dp_clips_then_adds_noise():
    out = transforms.dp(1.0, 0.0)(U * 100, KEY)
    assert float(jnp.linalg.norm(out)) == pytest.approx(1.0, rel=1e-5)
    noisy = transforms.dp(1.0, 0.5)(U, KEY)
    assert not np.allclose(noisy, transforms.clip_by_norm(1.0)(U, KEY))


def test_registry_and_shapes_injection():
    for name in ("laplace_noise", "row_noise", "prune", "quantize", "dp"):
        assert name in transforms.TRANSFORMS
    t = transforms.get_transform("prune", shapes=SHAPES, percent=50.0)
    np.testing.assert_array_equal(t(U, KEY), transforms.prune(50.0, SHAPES)(U, KEY))
    # Transforms without a shapes argument ignore it.
    transforms.get_transform("gaussian_noise", shapes=SHAPES, stddev=0.0)
    with pytest.raises(ValueError, match="shapes cover"):
        transforms.prune(10.0, shapes=[(3,)])(U, KEY)
