"""``attacker_triggers`` / ``stamp_trigger``: each attacker's trigger out of a run.

Each test's docstring names the bug it is there to catch. Digits-sized inputs
(8x8x1); M2M's state comes from one real (small) search of ``begin_round``,
as in ``m2m_test``, without compiling a simulator round.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import attacks
from fljax.attacks.attacker import AttackerInit, ClientView
from fljax.round import SimState
from fljax.simulate import RunResult
from tests.attacks.m2m_test import (CORNERS, SHAPE, SMALL, begin, client_data, digits,
                                    round_view, trained)

M2M_KW = {"num_attackers": 2, "targets": [1, 7], "size": 2, "location": [[0, 0], [-1, -1]],
          "trigger_lr": 0.1, **SMALL}
BADNETS_KW = {"num_attackers": 3, "targets": [4, 0, 2], "size": 2, "location": CORNERS[:3],
              "value": 0.8}


def _cfg(name, kwargs, **attack):
    return {"attack": {"name": name, "kwargs": kwargs, "combine": [], **attack}}


def _m2m(**kw):
    return attacks.m2m(10, SHAPE, model=trained()[0], **{**M2M_KW, **kw})


@functools.lru_cache(maxsize=None)
def _searched():
    """M2M's state before and after one round in which both attackers searched
    (on a trained MLP; one compiled search for the whole module)."""
    model, params = trained()
    atk = _m2m()
    s0 = atk.init(AttackerInit(params, 0, 8, SHAPE, 10, jax.random.PRNGKey(0)))
    s1 = begin(atk, s0, round_view(params, client_data(), [True] * 4), jax.random.PRNGKey(3))
    return s0, s1


def test_m2m_trigger_is_the_one_in_the_state_after_a_search():
    """After a round in which both attackers re-optimised their triggers, the
    trigger returned for attacker g is row g of the state's (which differs from
    the initial 0.5 inside its mask), whether given the attacker state, the
    SimState or the RunResult; masks and targets are the config's.

    Catches: returning the initial trigger (init_value) instead of the learned
    one, rows of the state swapped between attackers, the mask or target of
    another attacker, a RunResult / SimState not unwrapped.
    """
    s0, s1 = _searched()
    cfg = _cfg("m2m", M2M_KW)
    trig = attacks.attacker_triggers(cfg, s1, SHAPE, 10)
    assert trig.attack == "m2m" and trig.targets == (1, 7)
    np.testing.assert_array_equal(trig.value, np.asarray(s1.trigger))
    for g, loc in enumerate(M2M_KW["location"]):
        inside = attacks.backdoor.box_mask("t", SHAPE, loc, 2, 2)
        np.testing.assert_array_equal(trig.mask[g], inside)
        assert not np.allclose(trig.value[g][inside], np.asarray(s0.trigger)[g][inside])
    sim = SimState(None, None, None, s1, jnp.int32(1))
    for wrapped in (sim, RunResult([], sim, {})):
        np.testing.assert_array_equal(attacks.attacker_triggers(cfg, wrapped, SHAPE, 10).value,
                                      trig.value)


def test_badnets_trigger_is_the_fixed_patch():
    """badnets' triggers are the config's patches: attacker g's 2x2 square at
    its corner with the patch value, its own target; the state is not needed.

    Catches: the factory defaults of the wrong attack (m2m's places, size or
    value), the config's location or value ignored, targets out of order.
    """
    trig = attacks.attacker_triggers(_cfg("badnets", BADNETS_KW), None, SHAPE, 10)
    assert trig.attack == "badnets" and trig.targets == (4, 0, 2) and trig.blend_alpha == 1.0
    boxes = [(slice(0, 2), slice(0, 2)), (slice(6, 8), slice(0, 2)), (slice(6, 8), slice(6, 8))]
    for g, (r, c) in enumerate(boxes):
        expect = np.zeros(SHAPE, bool)
        expect[r, c] = True
        np.testing.assert_array_equal(trig.mask[g], expect)
        np.testing.assert_array_equal(trig.value[g][expect], np.float32(0.8))
    default = attacks.attacker_triggers(_cfg("badnets", {"num_attackers": 2}), None, SHAPE, 10)
    assert default.targets == (0, 1)  # the factory's defaults: 3x3 at the bottom-right corner
    assert default.mask[0].sum() == 9 and default.mask[0][-1, -1, 0] and default.mask[1][-1, -1, 0]


@pytest.mark.parametrize("kind", ["badnets", "m2m", "m2m_blend"])
def test_stamped_images_are_the_trigger_inside_the_mask_and_the_image_outside(kind):
    """stamp_trigger(x, trig, g) equals the trigger inside g's mask (blended,
    x + alpha (t - x), for M2M with alpha < 1) and x outside it, on a batch
    with leading axes; and it is exactly what the attack itself stamps on a
    fully poisoned batch of one of g's clients.

    Catches: stamping another attacker's trigger or mask, the whole image
    written, badnets' value or M2M's blend ignored, a stamping rule that
    differs from the attack's own (what the notebook shows would not be what
    the model was trained and measured with).
    """
    x, y = digits(12, seed=2)
    xb, yb, mb = x.reshape((2, 6) + SHAPE), y.reshape(2, 6), jnp.ones((2, 6), bool)
    if kind == "badnets":
        kw = {**BADNETS_KW, "poison_fraction": 1.0}
        atk, state = attacks.badnets(10, SHAPE, **kw), ()
        trig, alpha = attacks.attacker_triggers(_cfg("badnets", kw), None, SHAPE, 10), 1.0
    else:
        alpha = 0.5 if kind == "m2m_blend" else 1.0
        kw = {**M2M_KW, "blend_alpha": alpha, "poison_fraction": 1.0}
        atk, state = _m2m(blend_alpha=alpha, poison_fraction=1.0), _searched()[1]
        trig = attacks.attacker_triggers(_cfg("m2m", kw), state, SHAPE, 10)
    for g in range(len(trig.targets)):
        out = np.asarray(attacks.stamp_trigger(xb, trig, g))
        m = np.broadcast_to(trig.mask[g], out.shape)
        t = np.broadcast_to(trig.value[g], out.shape)
        np.testing.assert_allclose(out[m], (np.asarray(xb) + alpha * (t - np.asarray(xb)))[m],
                                   rtol=0, atol=1e-6)
        if alpha == 1.0:
            np.testing.assert_allclose(out[m], t[m], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out[~m], np.asarray(xb)[~m])
        view = ClientView(jnp.int32(g), jnp.asarray(True), jnp.int32(0), None, state)
        px, _, _ = atk.poison(xb, yb, mb, jax.random.PRNGKey(0), view)
        np.testing.assert_array_equal(out, np.asarray(px))


def test_wrong_attack_or_missing_state_is_a_clear_error():
    """Another attack, m2m without a state or with something else than its
    state (badnets' empty state, a sweep's stacked cells), an attacker out of
    range or images of another shape: one ValueError saying what to pass.

    Catches: an AttributeError / IndexError deep inside instead, m2m silently
    falling back to its initial trigger, a stacked sweep state read as one
    run's.
    """
    _, s1 = _searched()
    with pytest.raises(ValueError, match="pixel_backdoor.*badnets, m2m"):
        attacks.attacker_triggers(_cfg("pixel_backdoor", {}), s1, SHAPE, 10)
    with pytest.raises(ValueError, match="'none'"):
        attacks.attacker_triggers({"attack": {"name": "none"}}, None, SHAPE, 10)
    with pytest.raises(ValueError, match="learned.*RunResult"):
        attacks.attacker_triggers(_cfg("m2m", M2M_KW), None, SHAPE, 10)
    with pytest.raises(ValueError, match="tuple, not an m2m attacker state"):
        attacks.attacker_triggers(_cfg("m2m", M2M_KW), (), SHAPE, 10)
    stacked = s1._replace(trigger=jnp.stack([s1.trigger] * 3))
    with pytest.raises(ValueError, match="stacks cells"):
        attacks.attacker_triggers(_cfg("m2m", M2M_KW), stacked, SHAPE, 10)
    trig = attacks.attacker_triggers(_cfg("m2m", M2M_KW), s1, SHAPE, 10)
    with pytest.raises(ValueError, match=r"g=2 is not an attacker \(0..1\)"):
        attacks.stamp_trigger(jnp.zeros((3,) + SHAPE), trig, 2)
    with pytest.raises(ValueError, match="do not end in"):
        attacks.stamp_trigger(jnp.zeros((3, 28, 28, 1)), trig, 0)
    with pytest.raises(ValueError, match="do not end in"):  # only the width and channels match
        attacks.stamp_trigger(jnp.zeros((3, 5) + SHAPE[1:]), trig, 0)
    for bad in (True, 1.0):  # not an attacker index, though 0 <= g < G
        with pytest.raises(ValueError, match="is not an attacker"):
            attacks.stamp_trigger(jnp.zeros((3,) + SHAPE), trig, bad)


def test_shapes_and_classes_come_from_the_config_data():
    """Without input_shape / num_classes the config's data set gives them.

    Catches: a helper that only works when the caller knows the data's shape.
    """
    cfg = {**_cfg("badnets", {"num_attackers": 2, "size": 2}),
           "data": {"name": "digits", "num_clients": 4, "partition": "iid", "seed": 0,
                    "partition_kwargs": {}, "dataset_kwargs": {}}}
    trig = attacks.attacker_triggers(cfg)
    assert trig.mask.shape == (2,) + SHAPE
    # Either one given: the other still comes from the data (``or``, not ``and``).
    assert attacks.attacker_triggers(cfg, input_shape=SHAPE).mask.shape == (2,) + SHAPE
    assert attacks.attacker_triggers(cfg, num_classes=10).targets == (0, 1)


def test_a_combined_attacks_state_gives_m2ms_part():
    """With ``attack.combine``, the attacker state is a tuple whose first part
    is M2M's: its triggers are read from there, the same as alone. Catches:
    the tuple not unpacked (``isinstance(state, M2MState)`` negated), the
    other part taken (``state[1]``)."""
    _, s1 = _searched()
    alone = attacks.attacker_triggers(_cfg("m2m", M2M_KW), s1, SHAPE, 10)
    cfg = _cfg("m2m", M2M_KW, combine=[{"name": "sign_flip", "kwargs": {}}])
    both = attacks.attacker_triggers(cfg, (s1, ()), SHAPE, 10)
    np.testing.assert_array_equal(both.value, alone.value)
    np.testing.assert_array_equal(both.mask, alone.mask)


def test_badnets_defaults_and_field_errors():
    """One attacker by default (targeting class 0); a bad fraction or a
    non-finite patch value names its field. Catches: another default
    ``num_attackers``, the error naming another field."""
    atk = attacks.badnets(10, SHAPE)
    assert atk.groups == 1
    with pytest.raises(ValueError, match=r"badnets: poison_fraction=0.0 must be in \(0, 1\]"):
        attacks.badnets(10, SHAPE, poison_fraction=0.0)
    with pytest.raises(ValueError, match=r"badnets: value=inf must be finite"):
        attacks.badnets(10, SHAPE, value=float("inf"))
