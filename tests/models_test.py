import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import models


def test_im2col_conv_equals_xla_conv():
    a = models.emnist_cnn(conv_impl="im2col")
    b = models.emnist_cnn(conv_impl="xla")
    p = a.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))
    np.testing.assert_allclose(a.apply(p, x), b.apply(p, x), atol=1e-4, rtol=1e-4)
    ga = jax.grad(lambda p: a.apply(p, x).sum())(p)
    gb = jax.grad(lambda p: b.apply(p, x).sum())(p)
    for u, v in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(u, v, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name,shape", [("logistic", (8, 8, 1)), ("mlp", (30,)),
                                        ("emnist_dense", (28, 28, 1)),
                                        ("emnist_cnn", (28, 28, 1)), ("lenet5", (8, 8, 1)),
                                        ("lenet5", (32, 32, 3))])
def test_models_shapes(name, shape):
    m = models.get_model(name, shape, 10)
    p = m.init(jax.random.PRNGKey(0))
    assert m.apply(p, jnp.zeros((2,) + shape)).shape == (2, 10)


def test_fedjax_sizes():
    count = lambda m: sum(x.size for x in jax.tree_util.tree_leaves(m.init(jax.random.PRNGKey(0))))
    assert count(models.emnist_dense()) == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert count(models.emnist_cnn()) == (9 * 32 + 32) + (9 * 32 * 64 + 64) + \
        (12 * 12 * 64 * 128 + 128) + (128 * 10 + 10)


def test_dropout_only_with_key():
    m = models.emnist_cnn()
    p = m.init(jax.random.PRNGKey(0))
    x = jnp.ones((2, 28, 28, 1))
    np.testing.assert_array_equal(m.apply(p, x), m.apply(p, x))
    assert not np.allclose(m.apply(p, x, jax.random.PRNGKey(1)), m.apply(p, x))


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.get_model("vgg", (8, 8, 1), 10)


@pytest.mark.parametrize("name,shape,width,last", [
    ("logistic", (8, 8, 1), 64, "dense_0"), ("mlp", (8, 8, 1), 64, "dense_1"),
    ("emnist_cnn", (28, 28, 1), 128, "dense_1"), ("lenet5", (8, 8, 1), 84, "dense_2")])
def test_features_are_what_the_last_layer_reads(name, shape, width, last):
    """``features`` returns the penultimate activations and the logits of one
    forward pass: the logits equal ``apply``'s (no dropout), and the last dense
    layer applied to the features gives them. Catches: features taken after
    the last layer or before an activation, dropout left on."""
    m = models.get_model(name, shape, 10)
    p = m.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3,) + shape)
    feats, logits = m.features(p, x)
    assert feats.shape == (3, width)
    np.testing.assert_allclose(logits, m.apply(p, x), atol=1e-6)
    np.testing.assert_allclose(feats @ p[last]["kernel"] + p[last]["bias"], logits,
                               atol=1e-5, rtol=1e-5)
