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
    assert int(res.num_resets) == 0  # catches resets counted from 1, or the good steps counted


def test_nan_guard_keeps_the_best_iterate():
    # The loss is NaN beyond w = 2.5 while its minimum (w = 4) lies beyond it.
    loss = lambda p: jnp.where(p["w"] > 2.5, jnp.nan, (p["w"] - 4.0) ** 2)
    opt = make_optimizer("adam", 0.5, 50)
    res = jax.jit(lambda p: minimize(loss, p, opt, 50))({"w": jnp.float32(0.0)})
    assert np.isfinite(float(res.loss))
    assert 0.0 < float(res.params["w"]) <= 2.5
    # Every step whose loss is NaN is undone (the start's loss and gradients are finite).
    assert int(res.num_resets) == int(np.isnan(np.asarray(res.losses)).sum()) > 0


def test_box_projection_and_signed_decay():
    loss = lambda p: jnp.sum((p["x"] - 3.0) ** 2)
    opt = make_optimizer("adam", 0.1, 100, signed=True, decay=True)
    proj = lambda p: {"x": jnp.clip(p["x"], 0.0, 1.0)}
    res = minimize(loss, {"x": jnp.zeros(3)}, opt, 100, proj)
    np.testing.assert_allclose(res.params["x"], 1.0)


def test_signed_decay_steps_by_hand():
    """On ``f(x) = x`` Adam on the gradient's sign moves ``x`` by exactly
    ``-lr`` a step; with the decay the step is ``x0.1`` from 3/8 of the
    steps, ``x0.01`` from 5/8 and ``x0.001`` from 7/8 (16 steps: 6, 4, 4, 2
    of each). Catches: the bounds at ``num_steps / f`` or another fraction,
    a factor other than 0.1."""
    opt = make_optimizer("adam", 0.5, 16, signed=True, decay=True)
    res = minimize(lambda p: p["x"], {"x": jnp.float32(0.0)}, opt, 16)
    want = -0.5 * (6 + 4 * 0.1 + 4 * 0.01 + 2 * 0.001)
    assert float(res.params["x"]) == pytest.approx(want, rel=1e-5)


def test_make_optimizer_defaults():
    """``make_optimizer()`` is Adam at 0.1 for 1000 steps, not signed, no
    decay (the same 400 steps as the explicit call, past the first decay
    bound); L-BFGS keeps 20 pairs and allows 10 line-search evaluations
    (the same 25 steps on an ill-conditioned quadratic; 11 evaluations a
    step). Catches: any default changed."""
    c = jnp.logspace(0, 3, 40)
    loss = lambda p: jnp.sum(c * (p["w"] - 1.0) ** 2)  # noqa: E731
    init = {"w": jnp.zeros(40)}
    run = lambda opt, n: jax.jit(lambda p: minimize(loss, p, opt, n))(init).params["w"]  # noqa: E731
    explicit = make_optimizer("adam", 0.1, 1000, signed=False, decay=False)
    slope = lambda p: jnp.sum(c * p["w"])  # noqa: E731  (no minimum: every step counts)
    walk = lambda opt: jax.jit(lambda p: minimize(slope, p, opt, 400))(init).params["w"]  # noqa: E731
    np.testing.assert_array_equal(walk(make_optimizer()), walk(explicit))
    np.testing.assert_allclose(walk(explicit), -40.0, rtol=1e-4)
    # On a quadratic the gradient's size changes along the way: not signed.
    np.testing.assert_array_equal(run(make_optimizer(), 30), run(explicit, 30))
    adam = make_optimizer()
    assert adam.evals_per_step == 1 and not adam.needs_value_fn
    lbfgs = make_optimizer("lbfgs")
    assert lbfgs.evals_per_step == 11 and lbfgs.needs_value_fn
    explicit = make_optimizer("lbfgs", memory_size=20, linesearch_steps=10)
    np.testing.assert_array_equal(run(lbfgs, 25), run(explicit, 25))
