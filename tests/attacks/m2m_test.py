"""Multi-label backdoors: ``badnets`` with several attackers and M2M's trigger search.

Each test's docstring names the bug it is there to catch. The unit tests call
the attack's pure functions on digits-sized inputs (8x8x1) with a small MLP;
the simulator tests (slow: an M2M round compiles in tens of seconds on two
cores) run real rounds.
"""

import functools
import importlib
import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import attacks, config, models, plan as plan_lib, simulate
from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import AttackerInit, ClientView, RoundView
from tests.simulate_test import assert_trees_equal, run_rounds, small_cfg

m2m_lib = importlib.import_module("fljax.attacks.m2m")  # the package's ``m2m`` is the factory

SHAPE = (8, 8, 1)
CORNERS = [(0, 0), (-1, 0), (-1, -1), (0, -1)]
# Small search constants for tests (the loop lengths are static; the code is the paper's).
SMALL = {"outer_steps": 3, "discriminator_epochs": 4, "samples_per_class": 5,
         "discriminator_batch": 16, "trigger_batch": 16}


def mlp():
    return models.mlp(SHAPE, 10, hidden=(16,))


def digits(n=60, seed=0):
    """``n`` digit images of the real data set (x in [0, 1]) with their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d.target), n, replace=False)
    x = (d.images[idx] / 16.0).astype(np.float32)[..., None]
    return jnp.asarray(x), jnp.asarray(d.target[idx].astype(np.int32))


@functools.lru_cache(maxsize=None)
def trained(steps=150, seed=0):
    """An MLP trained on 600 digits (a fixed global model with some accuracy)."""
    model = mlp()
    x, y = digits(600, seed)
    params = model.init(jax.random.PRNGKey(seed))

    @jax.jit
    def step(p, _):
        g = jax.grad(lambda p: m2m_lib._ce(model.apply(p, x), y).mean())(p)
        return jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, p, g), None

    params, _ = jax.lax.scan(step, params, None, length=steps)
    return model, params


def round_view(params, data, malicious, client_ids=None):
    """A begin_round view of K clients, client k holding ``data[k]``."""
    xs, ys, vs = data
    k = xs.shape[0]
    ids = jnp.arange(k, dtype=jnp.int32) if client_ids is None else client_ids

    def examples(cid):
        return xs[cid], ys[cid], vs[cid]

    return RoundView(jnp.int32(0), params, ids, jnp.asarray(malicious), examples=examples)


def begin(atk, state, view, key):
    """``atk.begin_round`` jitted (the view's ``examples`` is a function: closed over)."""
    return jax.jit(lambda s, k: atk.begin_round(s, view, k))(state, key)


def client_data(k=4, m=24, seed=1):
    """``k`` clients of ``m`` slots (the last 3 padding), each holding every class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(d.target == c)) for c in range(10)]
    idx = np.asarray([by_class[i % 10][i // 10] for i in range(k * m)])
    x = (d.images[idx] / 16.0).astype(np.float32)[..., None]
    valid = jnp.asarray(np.arange(m) < m - 3)[None].repeat(k, 0)
    return (jnp.asarray(x).reshape((k, m) + SHAPE),
            jnp.asarray(d.target[idx].astype(np.int32)).reshape(k, m), valid)


def build(model=None, **kw):
    args = {"num_attackers": 2, "targets": [1, 7], "size": 2, "location": CORNERS[:2],
            **SMALL, **kw}
    return attacks.m2m(10, SHAPE, model=model or mlp(), **args)


# ----------------------------------------------------------------------------
# Triggers: masks, bounds, groups


def _view(cid, state):
    return ClientView(jnp.int32(cid), jnp.asarray(True), jnp.int32(0), None, state)


def _batches(seed=0):
    x, y = digits(30, seed)
    return x.reshape((3, 10) + SHAPE), y.reshape(3, 10), jnp.ones((3, 10), bool)


@pytest.mark.parametrize("kind", ["badnets", "m2m"])
def test_each_trigger_touches_only_its_mask_and_stays_in_bounds(kind):
    """Four attackers at four corners: attacker c % 4's poisoned batch differs
    from the clean one only inside its own 2x2 mask on the first
    round(f * B) examples, every poisoned pixel lies in the trigger's bounds,
    the labels become its own target. For M2M the trigger comes from a real
    search on a trained model with bounds narrower than the image (so the
    clip matters) and the search never moves a pixel outside the mask.

    Catches: a trigger written over the whole image or another attacker's
    corner, a search step leaking outside the mask (a dense sign step), the
    clip to [low, high] missing, every attacker using group 0's target.
    """
    targets = [0, 1, 2, 3]
    if kind == "badnets":
        atk = attacks.badnets(10, SHAPE, num_attackers=4, targets=targets, size=2,
                              location=CORNERS, value=1.0, poison_fraction=0.3)
        state, low, high = (), 1.0, 1.0
    else:
        model, params = trained()
        low, high = 0.2, 0.7
        atk = attacks.m2m(10, SHAPE, model=model, num_attackers=4, targets=targets, size=2,
                          location=CORNERS, low=low, high=high, trigger_lr=0.1,
                          poison_fraction=0.3, **SMALL)
        state = atk.init(AttackerInit(params, 0, 8, SHAPE, 10, jax.random.PRNGKey(0)))
        state = begin(atk, state, round_view(params, client_data(), [True] * 4),
                      jax.random.PRNGKey(3))
        np.testing.assert_array_equal(np.asarray(state.searches), [1, 1, 1, 1])
        trig = np.asarray(state.trigger)
        for g in range(4):
            inside = bd.box_mask("t", SHAPE, CORNERS[g], 2, 2)
            np.testing.assert_array_equal(trig[g][~inside], 0.5)  # the initial value
            assert np.all((trig[g][inside] >= low) & (trig[g][inside] <= high))
            assert np.any(trig[g][inside] != 0.5)  # the search moved it
    x, y, m = _batches()
    slots = np.arange(10) < 3
    for cid in range(8):
        g = cid % 4
        px, py, pm = atk.poison(x, y, m, jax.random.PRNGKey(0), _view(cid, state))
        inside = bd.box_mask("t", SHAPE, CORNERS[g], 2, 2)
        allowed = slots[None, :, None, None, None] & inside[None, None]
        changed = np.asarray(px != x)
        assert not np.any(changed & ~allowed), (kind, cid)
        vals = np.asarray(px)[np.broadcast_to(allowed, changed.shape)]
        assert np.all((vals >= low - 1e-6) & (vals <= high + 1e-6))
        np.testing.assert_array_equal(np.asarray(py), np.where(slots[None], targets[g], y))
        np.testing.assert_array_equal(np.asarray(pm), np.asarray(m))


def test_badnets_default_puts_every_attacker_on_the_same_patch():
    """Without ``location`` the attackers share the standard patch (the
    bottom-right corner) and differ only in their targets; the metrics are one
    per attacker and their mean. Catches: distinct places by default (not the
    cancelling setting of the paper), a missing per-attacker metric."""
    atk = attacks.badnets(10, SHAPE, num_attackers=3, targets=[4, 5, 6], size=2)
    x, y, m = _batches()
    changed = [np.asarray(atk.poison(x, y, m, None, _view(c, ()))[0] != x) for c in range(3)]
    for c in changed[1:]:
        np.testing.assert_array_equal(c, changed[0])
    assert changed[0][0, 0, -1, -1, 0] and not changed[0][0, 0, 0, 0, 0]
    lit = lambda p, xb: jnp.where(xb[..., 7, 7, 0] == 1.0, 5, 0).astype(jnp.int32)  # noqa: E731
    test = plan_lib.TestSet(jnp.zeros((1, 4) + SHAPE), jnp.asarray([[0, 1, 2, 3]]),
                            jnp.ones((1, 4), bool))
    out = atk.metrics(None, (), test, lit)
    assert set(out) == {"backdoor_accuracy", "backdoor_accuracy_0", "backdoor_accuracy_1",
                        "backdoor_accuracy_2"}
    np.testing.assert_allclose([float(out[f"backdoor_accuracy_{g}"]) for g in range(3)],
                               [0, 1, 0])  # every input answers 5: attacker 1's target
    assert float(out["backdoor_accuracy"]) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------
# The search: references and its objective


def _np_ce(logits, y):
    z = logits - logits.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


def test_selection_is_the_lowest_loss_examples_of_each_class():
    """The discriminator's examples: per non-target class the (at most)
    ``samples_per_class`` valid examples of lowest loss under the model, every
    valid target-class example, no padding. Against a NumPy loop over classes.
    Catches: ranks taken over all classes, the target capped too, padding slots
    selected, ties dropping both examples."""
    model, params = trained(steps=30)
    x, y = digits(80, 3)
    valid = jnp.asarray(np.arange(80) < 75)
    search = m2m_lib.trigger_search(model, samples_per_class=3)
    got = np.asarray(search.select(params, x, y, valid, 4))
    loss = _np_ce(np.asarray(model.apply(params, x), np.float64), np.asarray(y))
    want = np.zeros(80, bool)
    for c in range(10):
        idx = [i for i in range(75) if int(y[i]) == c]
        if c == 4:
            want[idx] = True
        else:
            want[sorted(idx, key=lambda i: (loss[i], i))[:3]] = True
    np.testing.assert_array_equal(got, want)


def _np_objective(params, head, x, y, valid, t, m, target):
    """M2M's trigger objective written out in NumPy for the 1-hidden-layer MLP."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
    hd = [np.asarray(a, np.float64) for a in head]
    x, t, m = (np.asarray(a, np.float64) for a in (x, t, m))
    xt = np.where(m > 0, t, x)  # blend_alpha = 1: the patch replaces the pixels

    def net(z):
        h = np.maximum(z.reshape(len(z), -1) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
        return h, h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]

    h, logits = net(xt)
    _, clean = net(x)
    disc = np.maximum(h @ hd[0] + hd[1], 0) @ hd[2] + hd[3]
    n = len(x)
    cos = (logits * clean).sum(1) / (np.linalg.norm(logits, axis=1) * np.linalg.norm(clean, axis=1))
    per = _np_ce(disc, np.zeros(n, int)) + _np_ce(logits, np.full(n, target)) + cos
    w = np.asarray(valid) & (np.asarray(y) != target)
    return (per * w).sum() / w.sum()


def _discriminator_inputs(model, params, search, x, y, t, mask, target):
    """The discriminator's training set written out: features of the
    non-target examples stamped with ``t`` (label 1) and of the clean target
    examples (label 0). Returns ``(h float[M, F], is_bd bool[M])``."""
    is_bd = y != target
    xd = jnp.where(is_bd[:, None, None, None], search.stamp(x, t, mask), x)
    return model.features(params, xd)[0], is_bd


def _head_logits(head, h):
    """The discriminator head written out: Linear, ReLU, Linear."""
    return jax.nn.relu(h @ head.w1 + head.b1) @ head.w2 + head.b2


def test_constants_are_the_reproductions_and_the_factory_agrees():
    """The search's defaults are the constants the module docstring cites from
    the Mirage reproduction, and ``m2m()``'s defaults for the same fields are
    the same numbers. Catches: a default changed in one place (``outer_steps
    = 51``, ``trigger_lr = 1.001``, ``low = 1``)."""
    import inspect

    want = {"outer_steps": 50, "trigger_lr": 0.001, "low": 0.0, "high": 1.0,
            "blend_alpha": 1.0, "samples_per_class": 50, "discriminator_epochs": 30,
            "discriminator_batch": 64, "discriminator_lr": 0.01, "discriminator_momentum": 0.9,
            "discriminator_weight_decay": 5e-4, "hidden": 10, "trigger_batch": 64}
    search = inspect.signature(m2m_lib.trigger_search).parameters
    factory = inspect.signature(attacks.m2m).parameters
    for name, value in want.items():
        assert search[name].default == value, name
        if name in factory:
            assert factory[name].default == value, name
    assert factory["poison_fraction"].default == 0.125
    assert (factory["num_attackers"].default, factory["size"].default,
            factory["init_value"].default) == (1, 5, 0.5)


def test_default_places_are_inset_corners_then_the_centre():
    """Five attackers of 3x3 patches on 12x12 images: one pixel in from the
    top-left, bottom-left, bottom-right and top-right corners, then the
    centre; a sixth has no default place. Integer settings must be >= 1 (1
    builds), each error naming its field; ``low = high`` and a model without
    features fail. Catches: any default place moved, ``num_attackers >= 5``
    refused, ``v <= 1`` / ``v < 2``, a field's name, ``low <= high``, the
    features check's ``and``."""
    got = m2m_lib.masks((12, 12, 1), 5, 3)
    for g, (r, c) in enumerate([(1, 1), (8, 1), (8, 8), (1, 8), (4, 4)]):
        want = np.zeros((12, 12, 1), bool)
        want[r:r + 3, c:c + 3] = True
        np.testing.assert_array_equal(got[g], want, err_msg=f"attacker {g}")
    with pytest.raises(ValueError, match="more than the 5 default trigger places"):
        m2m_lib.default_locations((12, 12, 1), 6, 3)
    model = trained()[0]
    ones = dict(outer_steps=1, samples_per_class=1, discriminator_epochs=1,
                discriminator_batch=1, hidden=1, trigger_batch=1)
    attacks.m2m(10, SHAPE, model=model, size=2, **ones)
    for field in ones:
        with pytest.raises(ValueError, match=rf"m2m: {field}=0 must be an integer >= 1"):
            attacks.m2m(10, SHAPE, model=model, size=2, **{**ones, field: 0})
    for bad in (2.0, True):  # not integers, though >= 1
        with pytest.raises(ValueError, match=r"m2m: outer_steps=.* must be an integer >= 1"):
            attacks.m2m(10, SHAPE, model=model, size=2, **{**ones, "outer_steps": bad})
    # An empty trigger range and a model without features fail when built.
    with pytest.raises(ValueError, match=r"m2m: low=1.0 must be below high=1.0"):
        attacks.m2m(10, SHAPE, model=model, size=2, low=1.0, high=1.0, **ones)
    with pytest.raises(ValueError, match=r"m2m: needs the model's features"):
        attacks.m2m(10, SHAPE, model=model._replace(features=None), size=2, **ones)


def test_blend_and_the_batch_order():
    """``blend``'s default replaces the masked pixels (alpha 1); ``_batches``
    puts the ``first`` examples first (shuffled by the key) and masks the rest
    off. Catches: another default alpha, the rest sorted first
    (``uniform - 2``)."""
    x, t = jnp.zeros((2, 3)), jnp.full((3,), 4.0)
    m = jnp.array([True, False, True])
    np.testing.assert_array_equal(np.asarray(m2m_lib.blend(x, t, m)), [[4, 0, 4], [4, 0, 4]])
    first = jnp.array([False, True, True, False, True, False, False])
    idx, ok = m2m_lib._batches(jax.random.PRNGKey(0), jnp.ones(7, bool), first, 3)
    idx, ok = np.asarray(idx).ravel(), np.asarray(ok).ravel()
    assert sorted(idx[:3].tolist()) == [1, 2, 4] and ok[:3].all() and not ok[3:].any()


def test_discriminator_head_starts_as_torch_linear_and_learns_its_labels():
    """With no epoch the head is torch.nn.Linear's initialisation (uniform in
    ``±1/sqrt(fan_in)``, both signs drawn); after a few epochs it tells the
    triggered non-target examples (label 1) from the clean target ones
    (label 0) on its own training set. Catches: other init scales or a
    one-sided range, the labels swapped (``y == target``)."""
    model, params = trained()
    x, y = digits(60, 5)
    valid = jnp.asarray(np.ones(60, bool))
    mask = jnp.asarray(bd.box_mask("t", SHAPE, (-1, -1), 3, 3))
    t = jnp.ones(SHAPE)
    kw = dict(samples_per_class=5, discriminator_batch=16, trigger_batch=32, hidden=10)
    bare = m2m_lib.trigger_search(model, discriminator_epochs=0, **kw)
    head = bare.train_head(params, x, y, valid, t, mask, 3, jax.random.PRNGKey(0))
    width = head.w1.shape[0]
    for w, s in ((head.w1, 1 / np.sqrt(width)), (head.b1, 1 / np.sqrt(width)),
                 (head.w2, 1 / np.sqrt(10)), (head.b2, 1 / np.sqrt(10))):
        w = np.asarray(w)
        assert np.all(np.abs(w) <= s) and (w.size < 10 or w.min() < 0 < w.max()), (w.shape, s)
    assert np.abs(np.asarray(head.w1)).max() > 0.9 / np.sqrt(width)
    assert np.abs(np.asarray(head.w2)).max() > 0.6 / np.sqrt(10)
    search = m2m_lib.trigger_search(model, discriminator_epochs=20, discriminator_lr=0.05, **kw)
    keep = search.select(params, x, y, valid, 3)
    head = search.train_head(params, x, y, keep, t, mask, 3, jax.random.PRNGKey(0))
    h, is_bd = _discriminator_inputs(model, params, search, x, y, t, mask, 3)
    pred, is_bd = np.asarray(jnp.argmax(_head_logits(head, h), 1)), np.asarray(is_bd)
    k = np.asarray(keep)
    assert np.mean(pred[k] == is_bd[k]) > 0.8


def test_one_search_step_and_two_discriminator_steps_by_hand():
    """With one trigger batch holding every example, one outer step of the
    search is one signed step on the objective's gradient under that step's
    head, inside the mask, clipped to ``[low, high]``; a batch without the
    target class does not step. Two full-batch discriminator epochs are two
    steps of torch's SGD (``d = g + wd p``, ``buf = mom buf + d``, ``p -= lr
    buf``) from the head's initialisation.

    Catches: the step ascending or divided by the sign, the ``acts`` guard,
    the weight decay, momentum or learning-rate sign in the head's SGD. (The
    search steps on ``objective`` itself, whose terms and weights
    ``test_objective_equals_the_numpy_reference`` checks.)"""
    model, params = trained()
    x, y = digits(60, 5)
    valid = jnp.asarray(np.arange(60) < 57)
    mask = jnp.asarray(bd.box_mask("t", SHAPE, (-1, -1), 3, 3))
    t0 = jnp.full(SHAPE, 0.5)
    kw = dict(samples_per_class=5, discriminator_batch=64, trigger_batch=64, trigger_lr=0.05,
              discriminator_lr=0.05, discriminator_momentum=0.9, discriminator_weight_decay=0.01)
    search = m2m_lib.trigger_search(model, outer_steps=1, discriminator_epochs=2, **kw)
    key = jax.random.PRNGKey(4)
    t1, _ = search.search(params, x, y, valid, t0, mask, 3, key)
    keep = search.select(params, x, y, valid, 3)
    k_head = jax.random.split(jax.random.split(key, 1)[0])[0]
    head = search.train_head(params, x, y, keep, t0, mask, 3, k_head)
    g = jax.grad(lambda t: search.objective(params, head, x, y, valid, t, mask, 3)[0])(t0)
    want = np.clip(0.5 - 0.05 * np.sign(np.asarray(g)) * np.asarray(mask), 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(t1), want, atol=1e-6)
    assert np.any(np.asarray(t1) != 0.5)
    no_target = valid & (y != 3)
    t_same, _ = search.search(params, x, y, no_target, t0, mask, 3, key)
    np.testing.assert_array_equal(np.asarray(t_same), np.asarray(t0))
    # The head: two SGD steps by hand from the untrained head (same init key).
    bare = m2m_lib.trigger_search(model, outer_steps=1, discriminator_epochs=0, **kw)
    p = bare.train_head(params, x, y, keep, t0, mask, 3, k_head)
    h, is_bd = _discriminator_inputs(model, params, search, x, y, t0, mask, 3)

    def loss(hd):
        logits = _head_logits(hd, h)
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), is_bd.astype(int)[:, None], 1)[:, 0]
        return jnp.sum(ce * keep) / jnp.sum(keep)

    buf = jax.tree_util.tree_map(jnp.zeros_like, p)
    for _ in range(2):
        d = jax.tree_util.tree_map(lambda gi, pi: gi + 0.01 * pi, jax.grad(loss)(p), p)
        buf = jax.tree_util.tree_map(lambda b, di: 0.9 * b + di, buf, d)
        p = jax.tree_util.tree_map(lambda pi, b: pi - 0.05 * b, p, buf)
    for got, want in zip(head, p):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_backdoor_accuracy_is_per_attacker_with_its_own_trigger():
    """``metrics`` reports ``backdoor_accuracy_<g>``: among the test inputs not
    of attacker g's target, the share the model puts in that target after
    stamping g's own trigger (by hand here), and their mean as
    ``backdoor_accuracy``. Catches: the metric's names, another attacker's
    trigger or mask, the mean missing or replaced."""
    from fljax.attacks.attacker import TestSet

    model, params = trained()
    atk = attacks.m2m(10, SHAPE, model=model, num_attackers=2, targets=[1, 7], size=3,
                      location=[[0, 0], [-1, -1]], **SMALL)
    state = atk.init(AttackerInit(params, 0, 8, SHAPE, 10, jax.random.PRNGKey(0)))
    state = state._replace(trigger=state.trigger.at[1].set(1.0))  # two different triggers
    x, y = digits(40, 9)
    test = TestSet(x.reshape((2, 20) + SHAPE), y.reshape(2, 20), jnp.ones((2, 20), bool))
    def predict(p, xb):  # any leading axes
        flat = xb.reshape((-1,) + SHAPE)
        return jnp.argmax(model.apply(p, flat), -1).reshape(xb.shape[:-3])
    out = atk.metrics(params, state, test, predict)
    masks = m2m_lib.masks(SHAPE, 2, 3, [[0, 0], [-1, -1]])
    rates = []
    for g, target in enumerate([1, 7]):
        xs = m2m_lib.blend(x, state.trigger[g], masks[g])
        pred = np.asarray(jnp.argmax(model.apply(params, xs), -1))
        keep = np.asarray(y) != target
        rates.append(np.mean(pred[keep] == target))
        np.testing.assert_allclose(float(out[f"backdoor_accuracy_{g}"]), rates[-1], rtol=1e-6)
    np.testing.assert_allclose(float(out["backdoor_accuracy"]), np.mean(rates), rtol=1e-6)


def test_objective_equals_the_numpy_reference():
    """The objective's value (its three terms over the non-target examples)
    equals the NumPy reference, and its gradient is zero off the mask: the
    default run's share of the slow test below (a short discriminator, no
    search).

    Catches: the cosine's product or norms mutated (``a / b``, ``* (na *
    nb)``, ``na / nb``), the CE of another column, the masked mean's
    divisor, the objective's gradient leaking outside the mask."""
    model, params = trained()
    x, y = digits(60, 5)
    valid = jnp.asarray(np.arange(60) < 57)
    mask = jnp.asarray(bd.box_mask("t", SHAPE, (-1, -1), 3, 3))
    t0 = jnp.full(SHAPE, 0.5)
    search = m2m_lib.trigger_search(model, outer_steps=1, samples_per_class=5,
                                    discriminator_epochs=2, discriminator_batch=32,
                                    trigger_batch=32)
    keep = search.select(params, x, y, valid, 3)
    head = search.train_head(params, x, y, keep, t0, mask, 3, jax.random.PRNGKey(0))
    value, _ = search.objective(params, head, x, y, valid, t0, mask, 3)
    np.testing.assert_allclose(float(value), _np_objective(params, head, x, y, valid, t0, mask, 3),
                               rtol=1e-5)
    g = jax.grad(lambda t: search.objective(params, head, x, y, valid, t, mask, 3)[0])(t0)
    assert np.all(np.asarray(g)[~np.asarray(mask)] == 0) and np.any(np.asarray(g) != 0)


@pytest.mark.slow
def test_objective_matches_a_numpy_reference_and_search_lowers_it():
    """On a fixed trained model: the objective (in-distribution CE to the
    discriminator's 'clean' class + CE to the target + cosine to the clean
    output, over the non-target examples) equals a NumPy reference; one
    signed step with a fixed head lowers it; the whole search lowers the
    discriminator-free part (target CE + similarity) and the full objective
    under its last discriminator head, and the triggered inputs' target
    probability rises.

    Catches: a term with the wrong sign (ascending instead of descending), the
    cosine against the wrong output, the target CE on target-class examples,
    the signed step not restricted to the mask, a search that does nothing.
    """
    model, params = trained()
    x, y = digits(120, 5)
    valid = jnp.asarray(np.arange(120) < 115)
    target = 3
    mask = jnp.asarray(bd.box_mask("t", SHAPE, (-1, -1), 3, 3))
    t0 = jnp.full(SHAPE, 0.5)
    search = m2m_lib.trigger_search(model, outer_steps=8, trigger_lr=0.02, samples_per_class=10,
                                    discriminator_epochs=10, discriminator_batch=32,
                                    trigger_batch=32)
    keep = search.select(params, x, y, valid, target)
    head = search.train_head(params, x, y, keep, t0, mask, target, jax.random.PRNGKey(0))
    obj = jax.jit(search.objective)
    l0, parts0 = obj(params, head, x, y, valid, t0, mask, target)
    np.testing.assert_allclose(float(l0), _np_objective(params, head, x, y, valid, t0, mask,
                                                        target), rtol=1e-5)
    g = jax.grad(lambda t: obj(params, head, x, y, valid, t, mask, target)[0])(t0)
    assert np.all(np.asarray(g)[~np.asarray(mask)] == 0)
    l1, _ = obj(params, head, x, y, valid, jnp.clip(t0 - 0.01 * jnp.sign(g), 0, 1), mask, target)
    assert float(l1) < float(l0)
    t, _ = jax.jit(search.search)(params, x, y, valid, t0, mask, target, jax.random.PRNGKey(1))
    head_t = search.train_head(params, x, y, keep, t, mask, target, jax.random.PRNGKey(2))
    lt, parts_t = obj(params, head_t, x, y, valid, t, mask, target)
    l0_t, parts0_t = obj(params, head_t, x, y, valid, t0, mask, target)
    free = lambda p: float(p["target"] + p["similarity"])  # noqa: E731
    assert free(parts_t) < free(parts0) - 0.05
    assert float(lt) < float(l0_t)
    nt = np.asarray(valid & (y != target))
    prob = lambda tt: np.asarray(jax.nn.softmax(model.apply(  # noqa: E731
        params, search.stamp(x, tt, mask))))[nt, target].mean()
    assert prob(t) > prob(t0)


def test_only_attackers_with_an_acting_client_search():
    """Six sampled clients of three attackers (client ``c`` is attacker ``c %
    3``); attacker 1's two clients do not act this round: attackers 0 and 2
    search once (``searches``), attacker 1 keeps its trigger. One short
    search (one outer step, one discriminator epoch); the slow
    ``test_attackers_search_at_once_as_each_would_alone`` checks the values.

    Catches: an attacker's rows taken as every acting row (``malicious |
    (group == g)``) or as the other attackers' (``group != g``)."""
    model, params = trained()
    tiny = dict(SMALL, outer_steps=1, discriminator_epochs=1)
    atk = attacks.m2m(10, SHAPE, model=model, num_attackers=3, targets=[1, 7, 4], size=2,
                      location=CORNERS[:3], trigger_lr=0.05, **tiny)
    state = atk.init(AttackerInit(params, 0, 8, SHAPE, 10, jax.random.PRNGKey(0)))
    ids = jnp.asarray([5, 0, 3, 2, 4, 1], jnp.int32)  # attackers 2, 0, 0, 2, 1, 1
    acting = [True, False, True, True, False, False]
    new = begin(atk, state, round_view(params, client_data(k=6), acting, ids),
                jax.random.PRNGKey(9))
    np.testing.assert_array_equal(np.asarray(new.searches), [1, 0, 1])
    np.testing.assert_array_equal(np.asarray(new.trigger[1]), np.asarray(state.trigger[1]))
    assert np.any(np.asarray(new.trigger[0]) != np.asarray(state.trigger[0]))


@pytest.mark.slow
def test_attackers_search_at_once_as_each_would_alone():
    """begin_round runs every attacker's search in one vmapped program: each
    attacker's new trigger equals its search run alone (a host loop over
    attackers, on the data of its first sampled acting client, with its key);
    an attacker with no sampled client keeps its trigger; a round with no
    acting attacker changes nothing.

    Catches: attackers sharing one trigger, data or target, the wrong client's
    data, a search run for an absent attacker, vmapped results out of order.
    """
    model, params = trained()
    targets = [1, 7, 4]
    atk = attacks.m2m(10, SHAPE, model=model, num_attackers=3, targets=targets, size=2,
                      location=CORNERS[:3], trigger_lr=0.05, **SMALL)
    state = atk.init(AttackerInit(params, 0, 8, SHAPE, 10, jax.random.PRNGKey(0)))
    data = client_data(k=6)
    ids = jnp.asarray([5, 0, 3, 2, 4, 1], jnp.int32)  # groups 2, 0, 0, 2, 1, 1
    acting = [True, False, True, True, False, False]  # group 1 has no acting client
    key = jax.random.PRNGKey(9)
    new = begin(atk, state, round_view(params, data, acting, ids), key)
    search = m2m_lib.trigger_search(model, trigger_lr=0.05, **SMALL)
    alone = jax.jit(search.search)
    keys = jax.random.split(key, 3)
    masks = [bd.box_mask("t", SHAPE, c, 2, 2) for c in CORNERS[:3]]
    first = {0: 2, 2: 0}  # row of each group's first acting client
    for g in range(3):
        if g in first:
            row = first[g]
            cid = int(ids[row])
            want, _ = alone(params, data[0][cid], data[1][cid], data[2][cid],
                                    state.trigger[g], jnp.asarray(masks[g]), targets[g], keys[g])
            np.testing.assert_allclose(np.asarray(new.trigger[g]), np.asarray(want), atol=1e-6)
        else:
            np.testing.assert_array_equal(np.asarray(new.trigger[g]),
                                          np.asarray(state.trigger[g]))
    np.testing.assert_array_equal(np.asarray(new.searches), [1, 0, 1])
    idle = begin(atk, new, round_view(params, data, [False] * 6, ids), key)
    assert_trees_equal(idle, new)


# ----------------------------------------------------------------------------
# Bad input: one line, before any round

M2M = "'name': 'm2m', 'kwargs': {'num_attackers': 2, 'targets': [1, 2], 'size': 2"
BADNETS = "'name': 'badnets', 'kwargs': {'num_attackers': 2, 'targets': [1, 2], 'size': 2"


@pytest.mark.parametrize("attack,malicious,needle", [
    ("{'name': 'badnets', 'kwargs': {'num_attackers': 2, 'targets': [3, 3]}}", 2,
     "attack.kwargs: badnets: targets=[3, 3] gives two attackers the same target 3"),
    ("{'name': 'm2m', 'kwargs': {'num_attackers': 3, 'targets': [0, 5, 5]}}", 3,
     "attack.kwargs: m2m: targets=[0, 5, 5] gives two attackers the same target 5"),
    ("{'name': 'm2m', 'kwargs': {'num_attackers': 2, 'targets': [1, 10]}}", 2,
     "attack.kwargs: m2m: targets=10 is not a class in [0, 10)"),
    ("{'name': 'badnets', 'kwargs': {'num_attackers': 2, 'targets': [-1, 2]}}", 2,
     "attack.kwargs: badnets: targets=-1 is not a class in [0, 10)"),
    ("{'name': 'm2m', 'kwargs': {'num_attackers': 2, 'targets': [1]}}", 2,
     "attack.kwargs: m2m: targets=[1] has 1 entries but num_attackers=2"),
    ("{" + M2M + "}}", 1, "attack.num_malicious = 1 is fewer than the attack's 2 attacker groups"),
    ("{" + BADNETS + "}}", 1,
     "attack.num_malicious = 1 is fewer than the attack's 2 attacker groups"),
    ("{" + M2M + ", 'location': [[0, 0], [7, 7]]}}", 2,
     "attack.kwargs: m2m: location=(7, 7) with size 2x2 puts the trigger outside the 8x8 image"),
    ("{" + BADNETS + ", 'location': [0, 7]}}", 2,
     "attack.kwargs: badnets: location=(0, 7) with size 2x2 puts the trigger outside"),
    ("{" + M2M + ", 'location': [[0, 0]]}}", 2, "location has 1 pairs but num_attackers=2"),
    ("{" + M2M + ", 'low': 0.8, 'high': 0.2}}", 2, "m2m: low=0.8 must be below high=0.2"),
    ("{" + M2M + ", 'outer_steps': 0}}", 2, "m2m: outer_steps=0 must be an integer >= 1"),
    ("{" + M2M + ", 'trigger_lr': -1.0}}", 2, "m2m: trigger_lr=-1.0 must be a finite number > 0"),
    ("{" + M2M + ", 'blend_alpha': 1.5}}", 2, "m2m: blend_alpha=1.5 must be in (0, 1]"),
])
def test_bad_multi_label_input_is_one_line_before_any_round(attack, malicious, needle):
    """Catches: two attackers given one target, a target outside the classes,
    more attacker groups than malicious clients, a mask outside the image or
    bad search constants accepted, or failing inside a round with a trace."""
    cfg = small_cfg(f"attack={attack}", f"attack.num_malicious={malicious}")
    with pytest.raises(config.ConfigError, match=re.escape(needle)) as err:
        plan_lib.prepare(cfg)
    assert "\n" not in str(err.value)


def test_no_attacker_is_allowed_below_the_group_count():
    """num_malicious = 0 (the grid's no-attack baseline) is not 'fewer malicious
    clients than groups'. Catches: the check refusing the baseline."""
    plan_lib.prepare(small_cfg("attack={" + M2M + "}}", "attack.num_malicious=0"))


# ----------------------------------------------------------------------------
# Inside the simulator

PIXEL1 = ("attack.name='pixel_backdoor'",
          "attack.kwargs={'target': 3, 'size': 2, 'location': [-1, -1], 'poison_fraction': 0.5}")
BADNETS1 = ("attack.name='badnets'",
            "attack.kwargs={'num_attackers': 1, 'targets': [3], 'size': 2, 'location': [-1, -1], "
            "'poison_fraction': 0.5}")


def test_multi_label_with_one_attacker_is_the_single_label_backdoor():
    """badnets with one attacker (MBA(1)) and pixel_backdoor with that target
    and patch (SBA) give the same model after 2 rounds with 10 of 40 clients
    malicious, and the same backdoor accuracy, reported as
    ``backdoor_accuracy`` alone. Catches: the group machinery changing a
    single attacker's poison, its metric or its key use."""
    out = []
    for attack in (PIXEL1, BADNETS1):
        state, _, p = run_rounds(small_cfg(*attack, "attack.num_malicious=10"), 2)
        comp = simulate.compiled(p.spec)
        out.append((state, {k: float(v) for k, v in comp.evaluate(p.hparams, state,
                                                                  p.data).items()}))
    assert_trees_equal(out[0][0].params, out[1][0].params)
    assert out[0][1] == out[1][1]
    assert "backdoor_accuracy_0" not in out[1][1]


M2M_SIM = ("attack.name='m2m'",
           "attack.kwargs={'num_attackers': 2, 'targets': [1, 7], 'size': 2, "
           "'location': [[0, 0], [-1, -1]], 'outer_steps': 2, 'discriminator_epochs': 2, "
           "'samples_per_class': 5}", "attack.num_malicious=20", "clients_per_round=8")


@pytest.mark.slow
def test_m2m_state_survives_a_resume_and_values_do_not_retrace(tmp_path, monkeypatch):
    """A 4-round M2M run checkpointed every 2 rounds and interrupted at the
    evaluation of round 3 resumes to exactly the uninterrupted run's triggers,
    search counts, model and metrics (per attacker and mean); and two configs
    differing only in M2M's values (learning rates, bounds, blend, initial
    trigger, poison fraction) and the malicious mask share one compiled step.

    Catches: the trigger state left out of the checkpoint or reset on resume
    (the search would restart from 0.5), a value baked in as static (a new
    spec / a retrace). (One M2M program: ~30-40 s to compile on 2 cores.)
    """
    from tests.scale_test import _interrupt_at

    cfg = small_cfg(*M2M_SIM, "rounds=4", "eval_every=1", "execution.checkpoint_every=2")
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    assert np.all(np.asarray(full.state.attack_state.searches) > 0)
    restore = _interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None)
    restore()
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert_trees_equal(full.state.attack_state, resumed.state.attack_state)
    assert_trees_equal(full.state.params, resumed.state.params)
    keys = ("main_accuracy", "backdoor_accuracy", "backdoor_accuracy_0", "backdoor_accuracy_1")
    assert [[h.get(k) for k in keys] for h in full.history] == \
        [[h.get(k) for k in keys] for h in resumed.history]
    assert all(h["backdoor_accuracy_1"] is not None for h in full.history)

    a = small_cfg(*M2M_SIM)
    b = small_cfg(*M2M_SIM, "attack.num_malicious=3", "attack.kwargs.trigger_lr=0.01",
                  "attack.kwargs.discriminator_lr=0.1", "attack.kwargs.low=0.1",
                  "attack.kwargs.high=0.9", "attack.kwargs.blend_alpha=0.5",
                  "attack.kwargs.init_value=0.3", "attack.kwargs.poison_fraction=0.4")
    pa, pb = plan_lib.prepare(a), plan_lib.prepare(b)
    assert pa.spec == pb.spec
    comp = simulate.compiled(pa.spec)
    trig = []
    for p in (pa, pb):
        k_init, k_rounds = simulate.run_keys(0)
        state = comp.init(p.hparams, p.data, k_init)
        state = comp.step(p.hparams, state, p.data, k_rounds, comp.round.new_buffer())[0]
        trig.append(np.asarray(state.attack_state.trigger))
    assert comp.step._cache_size() == 1
    assert not np.allclose(trig[0], trig[1])


@pytest.mark.slow
def test_m2m_grid_runs_shrunk(tmp_path):
    """configs/m2m_digits.py at a shrunken size: every attack setting of the
    grid under the mean and M2M under every defence, two rounds (attacking from
    round 0), one seed, the search cut to one outer step: every cell finishes
    with a finite main accuracy and backdoor accuracies in [0, 1], one per
    attacker and their mean.

    Catches: a setting or defence of the grid that builds but fails inside a
    round or under the sweep's vmap over cells (the search vmapped over
    attackers inside the vmap over cells); a metric missing from results.csv.
    (9 compiled programs: minutes on 2 cores.)
    """
    import csv

    from fljax import sweep

    path = "configs/m2m_digits.py"
    spec = importlib.util.spec_from_file_location("m2m_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def shrink(a):
        kw = dict(a["kwargs"])
        if a["name"] == "m2m":
            kw.update(outer_steps=1, discriminator_epochs=1)
        return {**a, "kwargs": kw, "schedule": {"start": 0}}

    base = config.resolve(simulate.DEFAULTS, mod.get_config(), ["rounds=2", "eval_every=1"])
    grids = [{"attack": [shrink(a) for a in mod.ATTACKS], "aggregator": mod.RULES[:1],
              "seed": [0]},
             {"attack": [shrink(mod.M2M)], "aggregator": mod.RULES[1:], "seed": [0]}]
    rows = []
    for i, grid in enumerate(grids):
        sweep.run(simulate.DEFAULTS, base, grid, str(tmp_path / str(i)), progress=False,
                  log=None)
        with open(tmp_path / str(i) / "results.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    assert len(rows) == len(mod.ATTACKS) + len(mod.RULES) - 1
    for row in rows:
        assert 0.0 < float(row["main_accuracy"]) <= 1.0, row
        assert 0.0 <= float(row["backdoor_accuracy"]) <= 1.0, row
        if '"num_attackers": 4' in row["attack"]:
            vals = [float(row[f"backdoor_accuracy_{g}"]) for g in range(4)]
            assert all(0.0 <= v <= 1.0 for v in vals)
            assert float(row["backdoor_accuracy"]) == pytest.approx(np.mean(vals), abs=1e-6)
