"""The optimisation loop: convergence, best-iterate NaN guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax.attacks.leakage.optimize import make_optimizer, minimize


@pytest.mark.parametrize("name", ["adam", "lbfgs"])
def test_minimize_quadratic(name):
    target = jnp.arange(4.0)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)
    opt = make_optimizer(name, 0.1, 300)
    res = jax.jit(lambda p: minimize(loss, p, opt, 300))({"w": jnp.zeros(4)})
    np.testing.assert_allclose(res.params["w"], target, atol=1e-2)
    assert res.losses.shape == (300,)


def test_nan_guard_keeps_the_best_iterate():
    # The loss is NaN beyond w = 2.5 while its minimum (w = 4) lies beyond it.
    loss = lambda p: jnp.where(p["w"] > 2.5, jnp.nan, (p["w"] - 4.0) ** 2)
    opt = make_optimizer("adam", 0.5, 50)
    res = jax.jit(lambda p: minimize(loss, p, opt, 50))({"w": jnp.float32(0.0)})
    assert np.isfinite(float(res.loss))
    assert 0.0 < float(res.params["w"]) <= 2.5
    assert int(res.num_resets) > 0


def test_box_projection_and_signed_decay():
    loss = lambda p: jnp.sum((p["x"] - 3.0) ** 2)
    opt = make_optimizer("adam", 0.1, 100, signed=True, decay=True)
    proj = lambda p: {"x": jnp.clip(p["x"], 0.0, 1.0)}
    res = minimize(loss, {"x": jnp.zeros(3)}, opt, 100, proj)
    np.testing.assert_allclose(res.params["x"], 1.0)
