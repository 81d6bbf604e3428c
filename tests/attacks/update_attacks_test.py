"""Update- and data-level poisoning attacks: benign rows untouched, malicious
rows changed as their definitions say, no retrace when the mask changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import attacks

U = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
MASK = jnp.array([True, False, True, False, False, True])


@pytest.mark.parametrize("name,kwargs", [("sign_flip", {"scale": 3.0}),
                                         ("gaussian", {"stddev": 2.0})])
def test_benign_rows_bit_identical(name, kwargs):
    out = attacks.UPDATE_ATTACKS[name](**kwargs)(U, MASK, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(MASK)],
                                  np.asarray(U)[~np.asarray(MASK)])
    assert not np.any(np.isclose(np.asarray(out)[np.asarray(MASK)],
                                 np.asarray(U)[np.asarray(MASK)]))


def test_sign_flip_reference():
    out = attacks.sign_flip(3.0)(U, MASK, None)
    ref = np.where(np.asarray(MASK)[:, None], -3.0 * np.asarray(U), np.asarray(U))
    np.testing.assert_allclose(out, ref)


def test_gaussian_statistics():
    big = jnp.zeros((4, 20000))
    out = attacks.gaussian(2.0, mean=1.0)(big, jnp.array([True, False, False, False]),
                                        jax.random.PRNGKey(3))
    assert abs(float(out[0].mean()) - 1.0) < 0.05 and abs(float(out[0].std()) - 2.0) < 0.05


def test_gaussian_rows_are_the_keys_draw_and_defaults():
    """A malicious row is exactly ``mean + stddev * normal(key)``; the
    defaults are ``N(0, 1)``; ``stddev = 0`` is allowed (a constant row),
    negative is not. Catches: the draw subtracted, other defaults, ``> 0``
    or ``>= 1`` in the check."""
    mask = jnp.array([True, False, True])
    u = jnp.ones((3, 4))
    draw = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (3, 4)))
    out = np.asarray(attacks.gaussian(0.5, mean=2.0)(u, mask, jax.random.PRNGKey(5)))
    np.testing.assert_allclose(out[[0, 2]], 2.0 + 0.5 * draw[[0, 2]], rtol=1e-6)
    out = np.asarray(attacks.gaussian()(u, mask, jax.random.PRNGKey(5)))
    np.testing.assert_allclose(out[[0, 2]], draw[[0, 2]], rtol=1e-6)
    out = np.asarray(attacks.gaussian(0.0, mean=3.0)(u, mask, jax.random.PRNGKey(5)))
    np.testing.assert_array_equal(out[[0, 2]], 3.0)
    with pytest.raises(ValueError, match="gaussian: stddev=-1.0 must be >= 0"):
        attacks.gaussian(-1.0)


def test_mask_is_traced_no_retrace():
    traces = []

    @jax.jit
    def f(u, m, k):
        traces.append(1)
        return attacks.sign_flip()(u, m, k)

    f(U, MASK, jax.random.PRNGKey(0))
    f(U, ~MASK, jax.random.PRNGKey(0))
    assert len(traces) == 1


def test_label_flip():
    y = jnp.arange(10)
    _, all_flip = attacks.label_flip(10)(None, y, None)
    np.testing.assert_array_equal(all_flip, 9 - np.arange(10))
    _, one = attacks.label_flip(10, source=1, target=7)(None, y, None)
    np.testing.assert_array_equal(one, [0, 7, 2, 3, 4, 5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="source and target"):
        attacks.label_flip(10, source=1)
    with pytest.raises(ValueError, match="not a class"):
        attacks.label_flip(10, source=1, target=12)
    # The class range's edges: 0 and num_classes - 1 are classes, num_classes is not.
    _, edge = attacks.label_flip(10, source=0, target=9)(None, y, None)
    np.testing.assert_array_equal(edge, [9, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match=r"label_flip: target = 10 is not a class in \[0, 10\)"):
        attacks.label_flip(10, source=0, target=10)
    with pytest.raises(ValueError, match=r"label_flip: source = -1 is not a class"):
        attacks.label_flip(10, source=-1, target=3)


def test_the_attacker_protocols_optional_fields_are_absent_by_default():
    """An ``Attacker()`` does nothing (no hook, stateless init, one group) and
    is what combining no attacker gives; a ``RoundView`` built before
    training has no new parameters, aggregate or examples; an empty
    ``AttackContext`` has no field. The round tests ``is None`` to skip a
    hook, attacks to fall back (the default rule, ``server_lr`` 1), and the
    config check needs one malicious client per group. Catches a default
    that is not None (``""``), two groups by default, ``NONE = None``."""
    from fljax.attacks import attacker as atk
    from fljax.attacks.base import AttackContext

    empty = atk.Attacker()
    assert empty.init(None) == () and empty.groups == 1
    assert all(getattr(empty, f) is None for f in atk.Attacker._fields if f not in ("init", "groups"))
    assert atk.combine() == empty
    view = atk.RoundView(jnp.int32(0), None, jnp.arange(2), jnp.zeros(2, bool))
    assert (view.new_params, view.aggregate, view.examples) == (None, None, None)
    assert all(v is None for v in AttackContext())


def test_combine_keys_hooks_crafts_and_metrics_of_its_parts():
    """``combine`` by its docstring, on parts that record what they get: each
    part's ``begin_round`` its own key (``split(key, 2)``) and state; the one
    loss hook gets its part's state (two losses fail); a part without
    training hooks leaves none; crafts chain with a context built when none is
    given; metrics merge. Catches the keys dropped (``keys = None``), the
    loss hook picked wrongly (``is None``, ``> 2``, ``>= 1``, ``fns[1]``),
    ``train = ""``, a context not built (``is None``), metrics not merged."""
    from fljax.attacks import attacker as atk
    from fljax.attacks.base import AttackContext

    def part(tag, **hooks):
        return atk.Attacker(init=lambda spec: tag, **hooks)

    a = part("a", begin_round=lambda s, v, k: (s, k),
             train=atk.LocalTraining(loss=lambda p, lg, y, m, v: (v.state, p)),
             craft=lambda u, m, k, c: (u + 1.0, {"a": c.state}),
             metrics=lambda p, s, t, f: {"ma": s})
    b = part("b", craft=lambda u, m, k, c: (u * 2.0, {"b": c.state}),
             metrics=lambda p, s, t, f: {"mb": s})
    both = atk.combine(a, b)
    state = both.init(atk.AttackerInit(None, 1, 1, (1,), 2, jax.random.PRNGKey(0)))
    assert state == ("a", "b")
    key = jax.random.PRNGKey(7)
    began = both.begin_round(state, None, key)
    assert began[0][0] == "a" and began[1] == "b"
    np.testing.assert_array_equal(began[0][1], jax.random.split(key, 2)[0])
    view = atk.ClientView(jnp.int32(0), jnp.asarray(True), jnp.int32(0), None, state)
    assert both.train.loss("params", None, None, None, view) == ("a", "params")
    assert both.train.grads is None and both.train.project is None
    out, info = both.craft(jnp.zeros((2, 1)), jnp.ones(2, bool), key, None)
    np.testing.assert_array_equal(out, 2.0)  # (0 + 1) * 2: the crafts chain in order
    assert info == {"a": None, "b": None}
    _, info = both.craft(jnp.zeros((2, 1)), jnp.ones(2, bool), key, AttackContext(state=state))
    assert info == {"a": "a", "b": "b"}
    assert both.metrics(None, state, None, None) == {"ma": "a", "mb": "b"}
    assert atk.combine(b, b).train is None
    two = atk.combine(a, a)
    with pytest.raises(ValueError, match="two attack parts both replace the local loss"):
        two.train.loss(None, None, None, None, view._replace(state=("a", "a")))
