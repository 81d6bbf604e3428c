"""Local training of one client (``fljax.client``), directly on a linear model.

The round's own tests (``simulate_test.py``) check local training against an
independent reference; these cover what no built-in attack reaches. Each
test's docstring names the deliberate bug (mutation) it is there to catch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fljax.attacks.attacker import LocalTraining
from fljax.client import cross_entropy, make_client_update

D, C, S, B = 5, 3, 3, 4


def _apply(params, x, key=None):
    del key
    return x @ params["w"] + params["b"]


def _setup():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32),
              "b": jnp.zeros((C,), jnp.float32)}
    x = jnp.asarray(rng.normal(size=(S, B, D)), jnp.float32)
    y = jnp.asarray(rng.integers(0, C, (S, B)), jnp.int32)
    mask = jnp.ones((S, B), bool)
    return params, x, y, mask


def test_a_loss_hook_replaces_the_loss():
    """An attacker's ``loss`` hook is what the client minimises: twice the
    cross-entropy under SGD(lr) equals the plain loss under SGD(2 lr), and the
    hook receives the client's view.

    Catches: the hook ignored (``hooks.loss is not None`` negated or the
    plain ``loss_fn`` used), the hook called with the wrong arguments.
    """
    params, x, y, mask = _setup()
    seen = []

    def loss(p, logits, labels, m, view):
        seen.append(view)
        return 2.0 * cross_entropy(logits, labels, m)

    hooked = make_client_update(_apply, optax.sgd(0.1), hooks=LocalTraining(loss=loss))
    plain = make_client_update(_apply, optax.sgd(0.2))
    key = jax.random.PRNGKey(0)
    a = hooked(params, x, y, mask, key, "the view")
    b = plain(params, x, y, mask, key)
    for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(a.params["w"]), np.asarray(params["w"]))
    assert seen and all(v == "the view" for v in seen)
    np.testing.assert_allclose(float(a.loss), 2.0 * float(b.loss), rtol=1e-5)


def test_the_loss_is_the_mean_over_steps_with_real_examples():
    """The reported loss (``train_loss`` in every round's info) is the mean of
    the per-step losses over the steps that had real examples: one real step
    of three gives that step's loss; two of three their mean.

    Catches: dividing by the number of steps or by ``max(., 2)``, multiplying
    instead of dividing, masked steps' zero losses counted (or divided by
    their zero activity).
    """
    params, x, y, mask = _setup()
    update = make_client_update(_apply, optax.sgd(0.1))
    key = jax.random.PRNGKey(0)
    one = mask.at[1:].set(False)
    out = update(params, x, y, one, key)
    want = cross_entropy(_apply(params, x[0]), y[0], mask[0])
    np.testing.assert_allclose(float(out.loss), float(want), rtol=1e-6)
    two = mask.at[2].set(False)
    out = update(params, x, y, two, key)
    first = update(params, x[:1], y[:1], mask[:1], key)
    second = cross_entropy(_apply(first.params, x[1]), y[1], mask[1])
    np.testing.assert_allclose(float(out.loss), (float(first.loss) + float(second)) / 2,
                               rtol=1e-5)
    assert float(out.num_examples) == 2 * B


def test_fully_padded_steps_leave_params_and_momentum_unchanged_by_default():
    """With momentum, a fully padded step that still stepped would move the
    parameters (a zero gradient plus the velocity): the default
    (``full_batches=False``) must skip it, so real steps followed by padded
    ones equal the real steps alone.

    Catches: ``full_batches`` defaulting to True (callers other than the
    round, e.g. the memory estimate or a user's attack, pass padded masks).
    """
    params, x, y, mask = _setup()
    update = make_client_update(_apply, optax.sgd(0.1, momentum=0.9))
    key = jax.random.PRNGKey(0)
    padded = update(params, x, y, mask.at[1:].set(False), key)
    alone = update(params, x[:1], y[:1], mask[:1], key)
    for u, v in zip(jax.tree_util.tree_leaves(padded.params),
                    jax.tree_util.tree_leaves(alone.params)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_each_step_gets_its_own_key():
    """A model that uses its key (dropout) sees a key per step, derived from
    the client's key: the same key gives the same update, another key
    another one.

    Catches: no keys passed to the model (``keys = None``), keys not derived
    from the client's key.
    """
    params, x, y, mask = _setup()

    def noisy(p, x, key=None):
        return _apply(p, x) + jax.random.normal(key, (x.shape[0], C))

    update = jax.jit(make_client_update(noisy, optax.sgd(0.1)))
    a = update(params, x, y, mask, jax.random.PRNGKey(0)).params["w"]
    b = update(params, x, y, mask, jax.random.PRNGKey(0)).params["w"]
    c = update(params, x, y, mask, jax.random.PRNGKey(1)).params["w"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
