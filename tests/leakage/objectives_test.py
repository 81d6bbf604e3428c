"""Matching objectives: DLM+ learning-rate invariance, scale / cosine properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax.attacks.leakage import objectives, observe
from fljax.models import mlp


def _setup():
    model = mlp((8, 8, 1), 10, hidden=(16,), activation="sigmoid")
    params = observe.uniform_init(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    x = jax.random.uniform(jax.random.PRNGKey(2), (1, 8, 8, 1))
    y = jnp.array([3])
    return model, params, x, y


def test_dlm_plus_loss_is_identical_across_learning_rates_for_one_step():
    model, params, x, y = _setup()
    dummy_x = jax.random.normal(jax.random.PRNGKey(3), (1, 8, 8, 1))
    dummy = observe.gradient(model, params, dummy_x, jax.nn.softmax(
        jax.random.normal(jax.random.PRNGKey(4), (1, 10))))
    loss_at = jax.jit(lambda lr: objectives.mean_norm_l2(
        dummy, observe.observe(model, params, x, y, kind="delta", lr=lr, local_steps=1)))
    losses = [float(loss_at(lr)) for lr in (1e-3, 0.01, 0.1, 1.0, 7.5)]
    # dW = lr * g exactly, and both sides are divided by their mean layer norm.
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
    # The unnormalised L2 is not invariant.
    l2s = [float(objectives.l2(dummy, observe.observe(model, params, x, y, kind="delta",
                                                       lr=lr))) for lr in (0.01, 1.0)]
    assert abs(l2s[0] - l2s[1]) > 1e-3


def test_dlm_plus_gradient_wrt_dummy_is_identical_across_learning_rates():
    model, params, x, y = _setup()
    target = jax.nn.one_hot(y, 10)

    def loss(dx, dw):
        return objectives.mean_norm_l2(observe.gradient(model, params, dx, target), dw)

    dummy_x = jax.random.normal(jax.random.PRNGKey(3), (1, 8, 8, 1))
    grad_at = jax.jit(lambda lr: jax.grad(loss)(dummy_x, observe.observe(
        model, params, x, y, lr=lr)))
    grads = [grad_at(lr) for lr in (0.01, 0.5)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_objectives_are_zero_at_the_truth():
    model, params, x, y = _setup()
    g = observe.observe(model, params, x, y, kind="gradient")
    dw = observe.observe(model, params, x, y, kind="delta", lr=0.05)
    # observe's defaults: a weight difference after one step of 0.1 (catches another default).
    want = jax.tree_util.tree_map(lambda a: 0.1 * a, g)
    for got, w in zip(jax.tree_util.tree_leaves(observe.observe(model, params, x, y)),
                      jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    assert float(objectives.l2(g, g)) == 0.0
    assert float(objectives.scaled_l2(g, dw, 1 / 0.05)) == pytest.approx(0.0, abs=1e-10)
    assert float(objectives.mean_norm_l2(g, dw)) == pytest.approx(0.0, abs=1e-10)
    assert float(objectives.cosine(g, dw)) == pytest.approx(0.0, abs=1e-6)


def test_total_variation_hand_values():
    x = jnp.zeros((1, 2, 3, 1)).at[0, :, 2, 0].set(1.0)  # right column bright
    # |dx|: per row [0, 1] -> mean over 2x2 = 0.5; |dy| all 0.
    assert float(objectives.total_variation(x)) == pytest.approx(0.5)


def test_total_variation_against_numpy():
    """Both directions, random values, two images and channels: ``mean |x[:, :,
    j+1] - x[:, :, j]| + mean |x[:, i+1] - x[:, i]|``. Catches: a sum for a
    difference, neighbours two apart or the first column only, ``dx - dy``."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 2)).astype(np.float32)
    want = np.abs(np.diff(x, axis=2)).mean() + np.abs(np.diff(x, axis=1)).mean()
    assert float(objectives.total_variation(jnp.asarray(x))) == pytest.approx(want, rel=1e-6)


def test_objectives_by_name_and_hand_values():
    """The registry maps each attack's name to its function; on two-leaf trees
    the four objectives equal their formulas (``scaled_l2`` with ``k = 3``;
    the others ignore ``k``). Catches: a registry name changed, a formula's
    sign or normaliser."""
    assert objectives.OBJECTIVES == {"l2": objectives.l2, "scaled_l2": objectives.scaled_l2,
                                     "mean_norm_l2": objectives.mean_norm_l2,
                                     "cosine": objectives.cosine}
    rng = np.random.default_rng(1)
    g = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    o = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    gf = np.concatenate([g["a"].ravel(), g["b"]])
    of = np.concatenate([o["a"].ravel(), o["b"]])
    ng = np.mean([np.linalg.norm(g["a"]), np.linalg.norm(g["b"])])
    no = np.mean([np.linalg.norm(o["a"]), np.linalg.norm(o["b"])])
    want = {"l2": np.sum((gf - of) ** 2), "scaled_l2": np.sum((gf - 3.0 * of) ** 2),
            "mean_norm_l2": np.sum((gf / ng - of / no) ** 2),
            "cosine": 1 - gf @ of / (np.linalg.norm(gf) * np.linalg.norm(of))}
    gj, oj = jax.tree_util.tree_map(jnp.float32, g), jax.tree_util.tree_map(jnp.float32, o)
    for name, fn in objectives.OBJECTIVES.items():
        assert float(fn(gj, oj, 3.0)) == pytest.approx(want[name], rel=1e-5), name
