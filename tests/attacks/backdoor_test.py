"""Backdoor attacks and the attacker strategies that carry them.

Each test's docstring names the bug it is there to catch. The unit tests
call the attack's functions directly; the simulator tests run real rounds
on digits (8x8 images, 40 clients, 4 per round).
"""

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fljax import attacks, config, models, plan as plan_lib, simulate
from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import AttackerInit, ClientView, RoundView
from fljax.attacks.attacker import TestSet as Batches
from fljax.attacks.base import AttackContext
from fljax.attacks.neurotoxin import top_fraction_mask
from fljax.attacks.pgd import project_to_ball
from fljax.client import make_client_update
from tests.simulate_test import assert_trees_close, run_rounds, small_cfg

SHAPE = (8, 8, 1)


def view(cid, malicious=True, state=(), global_params=None):
    return ClientView(jnp.int32(cid), jnp.asarray(malicious), jnp.int32(0), global_params, state)


def batches(key=0, steps=3, batch=10):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    x = jax.random.uniform(k1, (steps, batch) + SHAPE) * 0.5  # no pixel equals 1.0
    y = jax.random.randint(k2, (steps, batch), 0, 10)
    return x, y, jnp.ones((steps, batch), bool)


# ----------------------------------------------------------------------------
# Triggers


@pytest.mark.parametrize("pattern,location,size", [
    ("square", (0, 0), 3), ("checkerboard", (-1, -1), 4), ("cross", (2, 3), 3)])
def test_trigger_touches_only_its_pixels_and_the_poisoned_examples(pattern, location, size):
    """The poisoned batch differs from the clean one exactly on the trigger's
    pixels of the first round(f * B) examples of every batch, whose labels
    become the target; nothing else moves.

    Catches: a trigger written over the whole image or the wrong corner
    (negative locations), every example poisoned instead of the fraction,
    labels changed on clean examples, the mask changed.
    """
    atk = attacks.pixel_backdoor(10, SHAPE, target=4, pattern=pattern, size=size,
                                 location=location, value=1.0, poison_fraction=0.3)
    x, y, m = batches()
    px, py, pm = atk.poison(x, y, m, jax.random.PRNGKey(0), view(3))
    trig = bd.box_mask("t", SHAPE, location, size, size, pattern)
    assert trig.sum() > 0
    if location == (-1, -1):
        assert trig[-1, -1, 0] and not trig[0, 0, 0]
    slots = np.arange(10) < 3  # round(0.3 * 10)
    changed = np.asarray(px != x)
    want = slots[None, :, None, None, None] & trig[None, None]
    np.testing.assert_array_equal(changed, np.broadcast_to(want, changed.shape))
    np.testing.assert_array_equal(np.asarray(px)[np.broadcast_to(want, changed.shape)], 1.0)
    np.testing.assert_array_equal(np.asarray(py), np.where(slots[None, :], 4, np.asarray(y)))
    np.testing.assert_array_equal(np.asarray(pm), np.asarray(m))


def test_trigger_patterns_and_boxes_that_must_fit():
    """The three patterns, pixel for pixel on a 5x5 box (the cross: the
    middle row and column; the checkerboard: row + column even); a box that
    runs past the bottom or right edge fails; a fraction that rounds to no
    example still poisons one.

    Catches: ``% 3`` in the checkerboard; ``!=``, ``&``, ``/`` or ``// 3`` in
    the cross; ``top - height`` or ``left - width`` in the fit check (the box
    cut off at the edge); at least two examples poisoned (``clip(..., 2, B)``)."""
    grid = lambda pattern: bd.box_mask("a", (7, 7), (1, 1), 5, 5, pattern)[1:6, 1:6]  # noqa
    np.testing.assert_array_equal(grid("square"), np.ones((5, 5), bool))
    ii, jj = np.indices((5, 5))
    np.testing.assert_array_equal(grid("checkerboard"), (ii + jj) % 2 == 0)
    np.testing.assert_array_equal(grid("cross"), (ii == 2) | (jj == 2))
    assert bd.box_mask("a", (7, 7), (1, 1), 5, 5, "cross").sum() == 9  # nothing outside the box
    for location in ((6, 0), (0, 6)):
        with pytest.raises(ValueError, match="puts the trigger outside the 7x7 image"):
            bd.box_mask("a", (7, 7), location, 2, 2)
    slots = bd.poisoned_slots((2, 10), 0.01)
    np.testing.assert_array_equal(np.asarray(slots), np.arange(10)[None].repeat(2, 0) < 1)


def test_targets_boxes_and_metrics_of_several_attackers():
    """The multi-label helpers M2M and BadNets build on, against their
    docstrings: ``num_attackers`` is an integer >= 1; no targets give attacker
    ``g`` class ``g`` (up to one attacker per class); one integer is one
    attacker's target; a list needs one distinct class per attacker; one
    ``(row, col)`` pair places every box, a list places one each; the metrics
    are named ``backdoor_accuracy`` for one attacker, ``_<g>`` for several.

    Catches: any boolean of these checks inverted or turned (``or`` for
    ``and``, ``<= 1``, ``< 2``, ``>=`` for ``>``, ``!=`` for ``==``, ``is not
    None``), a single target not wrapped, the field's name left out of a
    message, the wrong box, target or suffix of a metric."""
    check = bd.check_targets
    for bad in (True, 2.5, 0):
        with pytest.raises(ValueError, match=rf"^a: num_attackers={bad!r} must be an integer >= 1$"):
            check("a", bad, None, 10)
    assert check("a", 1, None, 10) == [0] and check("a", 10, None, 10) == list(range(10))
    with pytest.raises(ValueError, match="num_attackers=11 is more than the 10 classes"):
        check("a", 11, None, 10)
    assert check("a", 1, 7, 10) == [7] and check("a", 2, (3, 4), 10) == [3, 4]
    for bad, match in (([1], "has 1 entries but num_attackers=2"),
                       ([3, 3], "gives two attackers the same target 3"),
                       ([1, 12], r"^a: targets=12 is not a class in \[0, 10\)$")):
        with pytest.raises(ValueError, match=match):
            check("a", 2, bad, 10)
    shape = (6, 6, 1)
    same = bd.group_masks("a", shape, 2, (0, 0), 2)
    assert same.shape == (2, *shape) and same[0].sum() == 4
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], bd.box_mask("a", shape, (0, 0), 2, 2))
    apart = bd.group_masks("a", shape, 2, [(0, 0), (-1, -1)], 2, "checkerboard")
    np.testing.assert_array_equal(apart[1], bd.box_mask("a", shape, (-1, -1), 2, 2,
                                                         "checkerboard"))
    for bad, match in (([(0, 0)] * 3, "location has 3 pairs but num_attackers=2"),
                       ((True, 0), "must be a \\(row, col\\) pair or a list"),
                       ((0, 0, 0), "must be a \\(row, col\\) pair or a list"),
                       ([(0, 0), (1,)], "must be a \\(row, col\\) pair or a list")):
        with pytest.raises(ValueError, match=match):
            bd.group_masks("a", shape, 2, bad, 2)
    masks = np.stack([same[0], apart[1]])
    ((name, mask, target),) = bd.group_evals(masks[:1], [5])
    assert name == "" and target == 5
    np.testing.assert_array_equal(mask, masks[0])
    two = bd.group_evals(masks, [5, 2])
    assert [(n, t) for n, _, t in two] == [("_0", 5), ("_1", 2)]
    np.testing.assert_array_equal(two[1][1], masks[1])


def test_classes_sizes_and_grey_images_are_checked():
    """A class is an integer in range (not a bool, not a float); a trigger's
    size is an integer >= 1 (not a bool); a ``[H, W]`` image has one channel
    and its mask keeps the ``[H, W]`` shape. Catches: ``or`` for ``and`` in
    either check (``True`` or ``3.0`` taken as a class, ``True`` as a size),
    the channel of a grey image (``shape - (1,)``, ``+ (2,)``), the field left
    out of the size message."""
    for bad in (True, 3.0, -1, 10):
        with pytest.raises(ValueError, match=rf"^a: target={bad!r} is not a class in \[0, 10\)$"):
            bd.check_class("a", "target", bad, 10)
    assert bd.check_class("a", "target", np.int64(9), 10) == 9
    for height, width in ((True, 2), (2, 0)):
        bad = height if height is True else width
        with pytest.raises(ValueError, match=rf"^a: size={bad!r} must be an integer >= 1$"):
            bd.box_mask("a", (6, 6, 1), (0, 0), height, width)
    assert bd.image_shape("a", (6, 5)) == (6, 5, 1)
    grey = bd.box_mask("a", (6, 5), (-1, 0), 2, 3)
    want = np.zeros((6, 5), bool)
    want[4:, :3] = True
    np.testing.assert_array_equal(grey, want)


def test_groups_are_dealt_round_robin():
    """Two attacker groups with their own corner and target: client c uses
    group c % 2. Catches: every attacker using group 0 (the M2M setting would
    silently collapse to one target)."""
    atk = attacks.pixel_backdoor(10, SHAPE, target=[1, 2], location=[(0, 0), (-1, -1)],
                                 size=2, poison_fraction=1.0)
    x, y, m = batches()
    for cid in range(4):
        px, py, _ = atk.poison(x, y, m, jax.random.PRNGKey(0), view(cid))
        g = cid % 2
        corner = (0, 0) if g == 0 else (7, 7)
        assert np.all(np.asarray(px)[:, :, corner[0], corner[1], 0] == 1.0)
        other = (7, 7) if g == 0 else (0, 0)
        np.testing.assert_array_equal(np.asarray(px)[:, :, other[0], other[1]],
                                      np.asarray(x)[:, :, other[0], other[1]])
        np.testing.assert_array_equal(np.asarray(py), [1, 2][g])


def _dba_bars(shape, num_parts, size, gap, location):
    """DBA's bars from the docstring: bar ``k`` is ``1 x size`` at row
    ``r0 + (k // 2) (gap + 1)``, column ``c0 + (k % 2) (size + gap)``; a negative
    location places the whole trigger's last row / column there."""
    h, w = shape[:2]
    rows = (num_parts + 1) // 2
    height, width = rows + (rows - 1) * gap, (size if num_parts == 1 else 2 * size + gap)
    r0 = location[0] if location[0] >= 0 else h + location[0] - height + 1
    c0 = location[1] if location[1] >= 0 else w + location[1] - width + 1
    bars = np.zeros((num_parts,) + tuple(shape), bool)
    for k in range(num_parts):
        r, c = r0 + (k // 2) * (gap + 1), c0 + (k % 2) * (size + gap)
        bars[k, r, c:c + size] = True
    return bars


@pytest.mark.parametrize("num_parts,size,gap,location,shape", [
    (1, 3, 1, (0, -1), SHAPE), (2, 3, 1, (0, -1), SHAPE), (3, 2, 0, (-1, -1), SHAPE),
    (4, 2, 2, (-1, -1), (9, 8, 3)), (5, 1, 1, (-2, 0), (8, 9, 3))])
def test_dba_bars_follow_the_layout(num_parts, size, gap, location, shape):
    """Every bar where the docstring's formula puts it, for one and two bars,
    an odd number, no gap, a wide gap, negative locations (which depend on the
    trigger's height and width), RGB and non-square images; the per-bar
    metrics exist only for more than one bar.

    Catches: the rows or height of the trigger miscounted (``(n - 1) // 2``,
    ``(n + 2) // 2``, ``// 3``, ``rows - (rows - 1) gap``, ``(rows + 1) gap``),
    its width (``num_parts != 1``, ``== 2``, ``2 size - gap``), its corner read
    from a one-channel view (``reshape(h, w, 1)``) or from the rows for the
    column (``any(1)``), per-bar metrics for a single bar or none for two
    (``>= 1``, ``> 2``)."""
    atk = attacks.dba(10, shape, target=3, num_parts=num_parts, size=size, gap=gap,
                      location=location, poison_fraction=1.0)
    want = _dba_bars(shape, num_parts, size, gap, location)
    x = jnp.zeros((1, 2) + shape)
    for cid in range(num_parts + 1):
        px, _, _ = atk.poison(x, jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool), None,
                              view(cid))
        np.testing.assert_array_equal(np.asarray(px)[0, 0] == 1.0, want[cid % num_parts])
    names = set(atk.metrics(None, (), _test_set([0, 0], shape),
                            lambda p, x: jnp.zeros(x.shape[:2], jnp.int32)))
    assert names == {"backdoor_accuracy"} | (
        {f"backdoor_accuracy_{k}" for k in range(num_parts)} if num_parts > 1 else set())


def test_dba_defaults_and_checks():
    """The defaults (target 0, four bars of 3 with a gap of 1 at the top-left,
    value 1) give the bars the docstring names on 8x8 digits; one bar and no
    gap are accepted, bools and smaller values fail naming the attack and the
    field; two parts of a two-part pixel trigger list replicate a single target.

    Catches: changed defaults (target 1, gap 2, value 2), ``num_parts <= 1`` or
    ``< 2``, ``gap <= 0`` or ``< 1``, ``and`` for ``or`` (a bool accepted), the
    name or a field left out of a message; in ``pixel_backdoor``: an empty
    list accepted (``and``), a single target not replicated over the
    locations (``(2, groups)``, ``!= 1``, ``== 2``, ``else 2``), the list's
    field left out of the length message."""
    atk = attacks.dba(10, SHAPE)
    x, y, m = batches()
    bars = [np.asarray(atk.poison(x, y, m, None, view(cid))[0])[0, 0, :, :, 0] == 1.0
            for cid in range(4)]
    np.testing.assert_array_equal(np.logical_or.reduce(bars),
                                  _dba_bars(SHAPE, 4, 3, 1, (0, 0)).any(0)[:, :, 0])
    np.testing.assert_array_equal(np.asarray(atk.poison(x, y, m, None, view(0))[1])[:, :3], 0)
    attacks.dba(10, SHAPE, num_parts=1, gap=0)
    for kwargs, match in (({"num_parts": True}, "num_parts=True must be an integer >= 1"),
                          ({"num_parts": 0}, "num_parts=0 must be an integer >= 1"),
                          ({"gap": True}, "gap=True must be an integer >= 0"),
                          ({"gap": -1}, "gap=-1 must be an integer >= 0"),
                          ({"poison_fraction": 0.0}, "poison_fraction=0.0 must be in"),
                          ({"value": float("nan")}, "value=nan must be finite")):
        with pytest.raises(ValueError, match="^dba: " + re.escape(match)):
            attacks.dba(10, SHAPE, **kwargs)
    with pytest.raises(ValueError, match=r"^pixel_backdoor: value=inf must be finite$"):
        attacks.pixel_backdoor(10, SHAPE, value=float("inf"))
    with pytest.raises(ValueError, match="^pixel_backdoor: target and location must not be empty"):
        attacks.pixel_backdoor(10, SHAPE, target=[])
    with pytest.raises(ValueError, match=r"^pixel_backdoor: target has 2 entries but another "):
        attacks.pixel_backdoor(10, SHAPE, target=[1, 2], location=[(0, 0), (3, 3), (5, 5)], size=2)
    two = attacks.pixel_backdoor(10, SHAPE, target=3, location=[(0, 0), (-1, -1)], size=2,
                                 poison_fraction=1.0)
    for cid in range(2):
        np.testing.assert_array_equal(np.asarray(two.poison(x, y, m, None, view(cid))[1]), 3)


def test_pixel_backdoor_defaults_group_metrics_and_messages():
    """With its defaults (target 0, a 3x3 square at the top-left corner,
    value 1, a 0.3 share) the trigger is exactly that; with two groups the
    metrics are each group's trigger to its target and their mean; a list of
    the wrong length fails naming the attack.

    Catches: a changed default (target 1, size 4, location (1, 0) or (0, 1)),
    the mean left out (``"backdoor_accuracy" in out``) or written over DBA's
    whole-trigger accuracy, the attack's name left out of a message."""
    atk = attacks.pixel_backdoor(10, SHAPE)
    x, y, m = batches()
    px, py, _ = atk.poison(x, y, m, jax.random.PRNGKey(0), view(0))
    want = np.zeros(SHAPE, bool)
    want[:3, :3] = True
    np.testing.assert_array_equal(np.asarray(px != x)[0, 0], want)
    np.testing.assert_array_equal(np.asarray(px)[0, 0][want], 1.0)
    np.testing.assert_array_equal(np.asarray(py)[:, :3], 0)  # round(0.3 * 10) examples
    atk = attacks.pixel_backdoor(10, SHAPE, target=[1, 2], location=[(0, 0), (-1, -1)], size=2)
    test = _test_set([0, 3, 4, 5, 6, 7, 8, 9])
    # answers 1 when the top-left corner is lit, else 0: group 0's backdoor works, group 1's not
    lit = lambda p, x: jnp.where(x[..., 0, 0, 0] == 1.0, 1, 0).astype(jnp.int32)  # noqa: E731
    out = {k: float(v) for k, v in atk.metrics(None, (), test, lit).items()}
    assert out == {"backdoor_accuracy_0": 1.0, "backdoor_accuracy_1": 0.0,
                   "backdoor_accuracy": 0.5}
    # DBA: the whole trigger's own accuracy, not the mean of its bars' (bar 0 holds the corner)
    out = attacks.dba(10, SHAPE, target=1).metrics(None, (), test, lit)
    assert [float(out[f"backdoor_accuracy{k}"]) for k in ("", "_0", "_1", "_2", "_3")] == \
        [1.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"^pixel_backdoor: location has 2 entries but another "):
        attacks.pixel_backdoor(10, SHAPE, target=[1, 2, 3], location=[(0, 0), (-1, -1)])


def test_dba_pieces_partition_the_global_trigger():
    """DBA's four bars are disjoint, their union is the trigger the test
    stamps, and attacker k trains with bar k % 4. Catches: overlapping or
    misplaced bars; the global trigger used in training."""
    atk = attacks.dba(10, SHAPE, target=0, num_parts=4, size=3, gap=1, poison_fraction=1.0)
    x, y, m = batches()
    bars = []
    for cid in range(4):
        px, _, _ = atk.poison(x, y, m, jax.random.PRNGKey(0), view(cid))
        bars.append(np.asarray(px != x)[0, 0, :, :, 0])
    for k, bar in enumerate(bars):
        assert bar.sum() == 3 and bar.any(1).sum() == 1  # a 1x3 bar
        for j in range(k):
            assert not (bar & bars[j]).any()
    union = np.logical_or.reduce(bars)
    np.testing.assert_array_equal(np.flatnonzero(union.any(1)), [0, 2])
    np.testing.assert_array_equal(np.flatnonzero(union.any(0)), [0, 1, 2, 4, 5, 6])
    px5, _, _ = atk.poison(x, y, m, jax.random.PRNGKey(0), view(5))
    np.testing.assert_array_equal(np.asarray(px5 != x)[0, 0, :, :, 0], bars[1])


# ----------------------------------------------------------------------------
# Backdoor accuracy


def _test_set(y, shape=SHAPE):
    y = np.asarray(y, np.int32).reshape(2, -1)
    x = np.zeros(y.shape + tuple(shape), np.float32)
    return Batches(jnp.asarray(x), jnp.asarray(y), jnp.ones(y.shape, bool))


def test_backdoor_accuracy_excludes_target_inputs():
    """A model that always answers the target scores 1.0 (on the non-target
    inputs), one that answers the target only on target-class inputs scores
    0.0, padding is ignored, and a set with only target inputs is NaN.

    Catches: target-class inputs counted as successes (a model that does
    nothing would score the target's share), padding counted, a single
    qualifying input not counted (``total > 1``, ``max(total, 2)``).
    """
    test = _test_set([0, 1, 2, 3, 3, 3, 5, 3])
    always = lambda p, x: jnp.full(x.shape[:2], 3, jnp.int32)  # noqa: E731
    assert float(bd.success_rate(None, test, always, 3)) == 1.0
    honest = lambda p, x: jnp.asarray(test.y)  # noqa: E731  (right on every input)
    assert float(bd.success_rate(None, test, honest, 3)) == 0.0
    half = lambda p, x: jnp.where(jnp.arange(4)[None] < 2, 3, 9) * jnp.ones(x.shape[:2], int)  # noqa
    # non-target inputs: 0, 1, 2 (batch 0, positions 0-2) and 5 (batch 1, position 2);
    # hits: positions 0 and 1 of batch 0 (batch 1's are target-class inputs)
    assert float(bd.success_rate(None, test, half, 3)) == pytest.approx(2 / 4)
    padded = test._replace(mask=jnp.asarray([[True] * 4, [True, True, False, False]]))
    assert float(bd.success_rate(None, padded, always, 3)) == 1.0
    assert np.isnan(float(bd.success_rate(None, _test_set([3] * 4), always, 3)))
    one = _test_set([3, 3, 3, 3, 3, 3, 0, 3])  # one qualifying input
    assert float(bd.success_rate(None, one, always, 3)) == 1.0


def test_pixel_metric_stamps_the_trigger():
    """A constructed model that answers the target exactly when the trigger's
    pixel is lit scores 1.0, and 0.0 without the stamp; DBA reports the whole
    trigger and each bar. Catches: the metric evaluated on clean inputs, or
    stamping another place than training does."""
    atk = attacks.pixel_backdoor(10, SHAPE, target=5, size=1, location=(-1, -1), value=1.0)
    test = _test_set([0, 1, 2, 5, 6, 7, 8, 9])
    lit = lambda p, x: jnp.where(x[..., 7, 7, 0] == 1.0, 5, 0).astype(jnp.int32)  # noqa: E731
    out = atk.metrics(None, (), test, lit)
    assert set(out) == {"backdoor_accuracy"} and float(out["backdoor_accuracy"]) == 1.0
    assert float(bd.success_rate(None, test, lit, 5)) == 0.0
    out = attacks.dba(10, SHAPE, target=5).metrics(None, (), test, lit)
    assert set(out) == {"backdoor_accuracy"} | {f"backdoor_accuracy_{k}" for k in range(4)}


# ----------------------------------------------------------------------------
# Inside the simulator. The configs share two specs (PIXEL, and STRATEGIES
# with PGD, boosting and Neurotoxin on top) so that each compiles once; what
# the tests vary are values (poison fraction, bounds, boost, the malicious
# mask, the schedule), which is itself part of what they check.

PIXEL = ("attack.name='pixel_backdoor'",
         "attack.kwargs={'target': 3, 'size': 2, 'location': [-1, -1], 'poison_fraction': 1.0}")


def strategies(norm_bound=1e6, gamma=1.0, mask_fraction=0.05):
    return PIXEL + (f"attack.combine=[{{'name': 'pgd', 'kwargs': {{'norm_bound': {norm_bound}}}}}, "
                    f"{{'name': 'model_replacement', 'kwargs': {{'gamma': {gamma}}}}}, "
                    f"{{'name': 'neurotoxin', 'kwargs': {{'mask_fraction': {mask_fraction}}}}}]",)


def _stamped(data, target=3):
    x = np.asarray(data.x).copy()
    x[:, -2:, -2:, :] = 1.0
    return data._replace(x=jnp.asarray(x), y=jnp.full_like(data.y, target))


def test_round_with_every_client_malicious_trains_on_triggered_data():
    """Every client malicious with poison fraction 1: one round equals a clean
    round on data whose every image carries the trigger and the target label;
    with no client malicious it equals the clean round; with the schedule
    starting at round 1 the first round is clean too.

    Catches: the poison not applied inside the jitted training, applied to
    benign clients, or applied in rounds the schedule leaves out.
    """
    clean_plan = plan_lib.prepare(small_cfg())
    clean, _, _ = run_rounds(small_cfg(), 1, plan=clean_plan)
    want, _, _ = run_rounds(small_cfg(), 1,
                            plan=clean_plan._replace(data=_stamped(clean_plan.data)))
    every, _, _ = run_rounds(small_cfg(*PIXEL, "attack.num_malicious=40"), 1)
    assert_trees_close(every.params, want.params, atol=1e-6)
    none, _, _ = run_rounds(small_cfg(*PIXEL), 1)
    assert_trees_close(none.params, clean.params, atol=1e-7, rtol=1e-6)
    later, _, _ = run_rounds(small_cfg(*PIXEL, "attack.num_malicious=40",
                                       "attack.schedule.start=1"), 1)
    assert_trees_close(later.params, clean.params, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("attack", [
    PIXEL + ("attack.kwargs.poison_fraction=0.3",),
    ("attack.name='targeted_task'",)], ids=["pixel", "targeted_task"])
def test_only_sampled_malicious_rows_change(attack):
    """Half the population malicious: the rows of sampled benign clients are
    exactly the clean round's, those of sampled malicious clients differ.

    Catches: a poison or training hook leaking into benign clients.
    """
    _, clean, _ = run_rounds(small_cfg(), 1)
    _, info, _ = run_rounds(small_cfg(*attack, "attack.num_malicious=20"), 1)
    mal = np.asarray(info.malicious)
    assert 0 < mal.sum() < 4, np.asarray(info.client_ids)  # seed 0's first round mixes
    n0, n1 = np.asarray(clean.update_norms), np.asarray(info.update_norms)
    np.testing.assert_allclose(n1[~mal], n0[~mal], rtol=1e-6)
    assert np.all(np.abs(n1[mal] - n0[mal]) > 1e-6 * n0[mal])


def test_backdoor_accuracy_reaches_metrics_files(tmp_path):
    """``backdoor_accuracy`` lands in metrics.jsonl and summary.json, and the
    run draws its plot. Catches: the attack's metrics dropped between the
    evaluation and the files."""
    import json

    cfg = small_cfg(*PIXEL, "attack.num_malicious=8", "rounds=2")
    res = simulate.run(cfg, str(tmp_path), progress=False, log=None)
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"backdoor_accuracy", "main_accuracy"} <= set(rec)
    assert 0.0 <= rec["backdoor_accuracy"] <= 1.0
    assert "final_backdoor_accuracy" in res.summary
    assert (tmp_path / "accuracy.png").exists()


def test_pgd_and_boosting_in_the_round_land_on_their_bounds():
    """Every client malicious: PGD onto 0.02 puts every update's norm at
    0.02; PGD onto 0.02 then model replacement by 4 at 0.08 (Sun et al.'s
    boosted norm-bounded attack). Catches: the projection skipped, the boost
    applied before the projection or to the wrong rows."""
    for gamma, want in ((1.0, 0.02), (4.0, 0.08)):
        _, info, _ = run_rounds(small_cfg(*strategies(0.02, gamma), "attack.num_malicious=40"), 1)
        np.testing.assert_allclose(np.asarray(info.update_norms), want, rtol=1e-5)


def test_neurotoxin_in_the_round_keeps_its_mask():
    """Through the simulator the mask after a round has the requested size
    and lives in the checkpointed state. Catches: end_round not called, or
    the state not carried to the next round."""
    state, _, plan = run_rounds(small_cfg(*strategies(), "attack.num_malicious=8"), 2)
    mask = state.attack_state[3].mask
    dim = sum(m.size for m in jax.tree_util.tree_leaves(mask))
    assert int(sum(jnp.sum(m) for m in jax.tree_util.tree_leaves(mask))) == round(0.05 * dim)


def test_attack_values_and_masks_do_not_retrace():
    """Two configs differing only in poison fraction, trigger value, boost,
    norm bound, mask fraction and the malicious mask share one spec and one
    compiled step. Catches: one of them annotated as static (baked into the
    program, a new spec) or changing a shape or dtype (a retrace)."""
    a = small_cfg(*strategies(0.5, 2.0, 0.01), "attack.num_malicious=4")
    b = small_cfg(*strategies(0.1, 9.0, 0.2), "attack.num_malicious=20",
                  "attack.kwargs.poison_fraction=0.4", "attack.kwargs.value=0.5")
    pa, pb = plan_lib.prepare(a), plan_lib.prepare(b)
    assert pa.spec == pb.spec
    comp = simulate.compiled(pa.spec)
    norms = []
    for p in (pa, pb):
        k_init, k_rounds = simulate.run_keys(0)
        state = comp.init(p.hparams, p.data, k_init)
        norms.append(np.asarray(comp.step(p.hparams, state, p.data, k_rounds,
                                          comp.round.new_buffer())[1].update_norms))
    assert comp.step._cache_size() == 1
    assert not np.allclose(norms[0], norms[1])


# ----------------------------------------------------------------------------
# Subsets


def test_targeted_task_subset_is_the_writers_sources():
    """``writers=w`` takes the source-class images of the last w clients and
    measures on them; ``writers=0`` every source image, measured on the
    test's. Catches: another class or other clients' images in the subset."""
    fed = plan_lib.prepare(small_cfg()).federated
    sub, same = attacks.select_targeted_task(fed, source=7, writers=10, batch=16)
    assert same is fed
    first = fed.offsets[30]
    want = fed.x[first:][fed.y[first:] == 7]
    np.testing.assert_array_equal(sub.x, want)
    assert np.all(sub.y == 7) and int(np.sum(sub.test.mask)) == len(want)
    sub0, _ = attacks.select_targeted_task(fed, source=7, writers=0)
    assert len(sub0.y) == int(np.sum(fed.y == 7))
    assert int(np.sum(sub0.test.mask)) == int(np.sum(fed.y_test == 7))


def test_edge_case_holds_its_examples_out():
    """The held-out tail leaves every client's data, no client is emptied,
    the attackers' half and the measured half are disjoint and are the
    farthest sevens. Catches: benign clients still holding the edge cases,
    a client left with no example, the pool and the test overlapping."""
    fed = plan_lib.prepare(small_cfg()).federated
    sub, kept = attacks.select_edge_case(fed, source=7, num_examples=20, batch=8)
    assert len(kept.y) == len(fed.y) - 20 and kept.counts.min() >= 1
    np.testing.assert_array_equal(kept.offsets[1:], np.cumsum(kept.counts)[:-1])
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    held = np.concatenate([flat(sub.x), flat(np.asarray(sub.test.x).reshape(-1, 8, 8, 1)[
        np.asarray(sub.test.mask).reshape(-1)])])
    assert len(held) == 20 and len(np.unique(held, axis=0)) == 20
    kept_rows = {r.tobytes() for r in flat(kept.x)}
    assert not any(r.tobytes() in kept_rows for r in held)
    sevens = flat(fed.x[fed.y == 7]).astype(np.float64)
    dist = np.linalg.norm(sevens - sevens.mean(0), axis=1)
    held_dist = np.linalg.norm(held - sevens.mean(0), axis=1)
    assert held_dist.min() >= np.sort(dist)[-25]


def _tiny_fed(labels_per_client, test_labels=(7, 7, 1)):
    """A FederatedData with the given labels per client (one pixel each)."""
    from fljax.data.federated import FederatedData

    y = np.concatenate([np.asarray(c, np.int32) for c in labels_per_client])
    counts = np.asarray([len(c) for c in labels_per_client], np.int32)
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1)
    return FederatedData(x, y, np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32),
                         counts, np.zeros((len(test_labels), 1, 1, 1), np.float32),
                         np.asarray(test_labels, np.int32), 10, "tiny")


def test_subset_selection_edges_defaults_and_messages():
    """The selections' defaults are their attacks' (the simulator passes the
    attack's kwargs to both: a different default would pick another class
    than the attack checks); one source image is a subset, all clients may be
    writers, two examples may be held out; no source image among the writers,
    a bool or too small a count fail, naming the attack and the field.

    The edge cases are the farthest sources, each client keeping one example
    at least.

    Catches: a changed default (source 8, writers 1, num_examples 41), ``w >=
    num_clients``, exactly ``num_examples`` sources refused (``<=``), a
    client's last example taken (``>= 1``) or its second-last not (``> 2``),
    the examples' owners off by one, the counts left (``+= 1``, ``-= 2``) or
    the first offset (``[1]``) of the data without them, ``len(rows) == 1`` or ``len(test_y) == 1`` as empty, ``and``
    for ``or`` (an empty subset accepted), ``num_examples >= 3``, ``and`` in the
    integer check, the attack's name, a field or the clients left out of a
    message."""
    for select, make, names in ((attacks.select_targeted_task, attacks.targeted_task,
                                 ("source", "writers")),
                                (attacks.select_edge_case, attacks.edge_case,
                                 ("source", "num_examples"))):
        got, want = inspect.signature(select).parameters, inspect.signature(make).parameters
        assert {k: got[k].default for k in names} == {k: want[k].default for k in names}
    fed = _tiny_fed([[7, 1, 2], [3, 4], [1, 7, 7], [5, 6]])
    sub, _ = attacks.select_targeted_task(fed, source=3, writers=4)  # one image of class 3
    assert sub.y.tolist() == [3] and np.asarray(sub.test.mask).sum() == 1
    sub, _ = attacks.select_targeted_task(fed, source=7, writers=2)
    assert sub.x.ravel().tolist() == [6.0, 7.0]
    sub, kept = attacks.select_edge_case(fed, source=7, num_examples=2)
    assert len(sub.y) == 1 and len(kept.y) == len(fed.y) - 2
    sub, kept = attacks.select_edge_case(fed, source=7, num_examples=3)  # every seven
    assert kept.counts.tolist() == [2, 2, 1, 2]
    # Sevens at x = 10 (client 0), 9 (client 1: its only example), 0 and 1
    # (client 2, of three) and 8 (client 3): farthest from their mean (5.6)
    # first, client 1's skipped; even ranks train, odd ranks measure.
    tail = fed._replace(x=np.asarray([10, 0, 9, 5, 0, 1, 8, 5], np.float32).reshape(-1, 1, 1, 1),
                        y=np.asarray([7, 1, 7, 3, 7, 7, 7, 2], np.int32),
                        offsets=np.asarray([0, 2, 3, 6], np.int32),
                        counts=np.asarray([2, 1, 3, 2], np.int32))
    sub, kept = attacks.select_edge_case(tail, source=7, num_examples=4)
    assert kept.counts.tolist() == [1, 1, 1, 1] and kept.offsets.tolist() == [0, 1, 2, 3]
    assert kept.x.ravel().tolist() == [0.0, 9.0, 5.0, 5.0]
    assert sub.x.ravel().tolist() == [0.0, 10.0]
    judge = np.asarray(sub.test.x).ravel()[np.asarray(sub.test.mask).ravel()]
    assert judge.tolist() == [1.0, 8.0]
    for call, match in (
            (lambda: attacks.select_targeted_task(fed, source=3, writers=2),
             r"^targeted_task: no image of class source=3 among the last 2 clients; "),
            (lambda: attacks.select_targeted_task(fed, source=9, writers=0),
             r"^targeted_task: no image of class source=9 among the data; "),
            (lambda: attacks.select_targeted_task(fed, source=5, writers=0),  # none to test on
             r"^targeted_task: no image of class source=5 among the data; "),
            (lambda: attacks.select_targeted_task(fed, writers=True),
             r"^targeted_task: writers=True must be an integer >= 0$"),
            (lambda: attacks.select_targeted_task(fed, writers=5),
             r"^targeted_task: writers=5 exceeds the 4 clients$"),
            (lambda: attacks.select_edge_case(fed, source=7, num_examples=1),
             r"^edge_case: num_examples=1 must be an integer >= 2$"),
            (lambda: attacks.select_edge_case(fed, source=10),
             r"^edge_case: source=10 is not a class in \[0, 10\)$")):
        with pytest.raises(ValueError, match=match):
            call()


def test_subset_attacks_poison_measure_and_default_as_documented():
    """Sun et al.'s and the edge-case attack on a two-image subset: the
    poisoned slots hold subset images (both drawn, over 3 x 10 slots),
    labelled ``target``; the metric is the subset test's backdoor accuracy;
    the defaults are the documented ones; bad values fail naming the attack.

    Catches: the first subset image never drawn (``randint(..., 1, size)``),
    the metric's test set or name lost, a changed default (target 2, writers
    1, source 8, num_examples 41, poison_fraction 1.3), the target dropped
    (``t = None``), the attack's name or a field left out of a message."""
    for make, extra in ((attacks.targeted_task, {"writers": 0}),
                        (attacks.edge_case, {"num_examples": 40})):
        params = inspect.signature(make).parameters
        assert {k: params[k].default for k in ("source", "target", "poison_fraction", *extra)} \
            == {"source": 7, "target": 1, "poison_fraction": 0.3, **extra}
    fed = _tiny_fed([[7, 1, 2], [3, 4], [1, 7, 7], [5, 6]])
    sub, _ = attacks.select_targeted_task(fed, source=7, writers=2, batch=4)  # x = 6, 7
    for make in (attacks.targeted_task, attacks.edge_case):
        atk = make(10, (1, 1, 1), subset=sub, target=4, poison_fraction=0.5)
        x, y = jnp.full((3, 10, 1, 1, 1), -1.0), jnp.zeros((3, 10), jnp.int32)
        px, py, _ = atk.poison(x, y, jnp.ones((3, 10), bool), jax.random.PRNGKey(0), view(0))
        drawn = np.asarray(px)[:, :5].ravel()
        assert set(drawn.tolist()) == {6.0, 7.0}
        np.testing.assert_array_equal(np.asarray(px)[:, 5:], -1.0)
        np.testing.assert_array_equal(np.asarray(py), np.where(np.arange(10) < 5, 4, 0)[None]
                                      .repeat(3, 0))
        always = lambda p, x: jnp.full(x.shape[:2], 4, jnp.int32)  # noqa: E731
        assert {k: float(v) for k, v in atk.metrics(None, (), None, always).items()} == \
            {"backdoor_accuracy": 1.0}
        name = make.__name__
        for kwargs, match in (({"source": 10}, r"source=10 is not a class"),
                              ({"target": -1}, r"target=-1 is not a class")):
            with pytest.raises(ValueError, match=f"^{name}: {match}"):
                make(10, (1, 1, 1), subset=sub, **kwargs)


# ----------------------------------------------------------------------------
# Update strategies


def _updates():
    u = jax.random.normal(jax.random.PRNGKey(2), (5, 7)) * 0.1
    return u, jnp.array([True, False, True, False, False])


def test_boosting_scales_exactly():
    """Malicious rows become gamma * u bit for bit, benign rows are untouched,
    and the default gamma is n / server_lr. Catches: boosting the benign rows,
    the wrong default (N instead of the round's n, or ignoring the server
    learning rate)."""
    u, mal = _updates()
    out, info = attacks.model_replacement(3.0).craft(u, mal, None, AttackContext())
    np.testing.assert_array_equal(np.asarray(out)[np.asarray(mal)],
                                  np.asarray(3.0 * u)[np.asarray(mal)])
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(mal)],
                                  np.asarray(u)[~np.asarray(mal)])
    out, info = attacks.model_replacement().craft(u, mal, None,
                                                  AttackContext(server_lr=jnp.float32(0.5)))
    assert float(info["boost"]) == 10.0
    np.testing.assert_array_equal(np.asarray(out)[0], np.asarray(10.0 * u[0]))


def test_constrain_and_scale_lands_on_the_bound():
    """Each malicious row ends exactly on the norm bound (boosted up to it,
    or shrunk when gamma * ||u|| already exceeds nothing); benign rows stay.
    Catches: a factor applied twice, or the bound exceeded after boosting."""
    u, mal = _updates()
    out, _ = attacks.constrain_and_scale(0.7).craft(u, mal, None, AttackContext())
    norms = np.linalg.norm(np.asarray(out), axis=1)
    np.testing.assert_allclose(norms[np.asarray(mal)], 0.7, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(mal)],
                                  np.asarray(u)[~np.asarray(mal)])
    small, _ = attacks.constrain_and_scale(100.0, gamma=2.0).craft(u, mal, None, None)
    np.testing.assert_allclose(np.asarray(small)[0], 2.0 * np.asarray(u)[0], rtol=1e-6)



def test_constrain_and_scale_reports_its_mean_boost_and_checks_gamma():
    """``info['boost']`` is the mean factor over the malicious rows (NaN when
    none is sampled); a zero malicious row counts with the whole boost; the
    default boost is ``n / server_lr`` with ``n`` the rows (5 rows of 7
    columns); a bad ``gamma`` or bound fails, naming the attack.

    Catches: the factor of a zero row clipped to the bound (``norm >= 0``), the
    mean taken over rows (``factor / m``, ``* max(...)``, ``max(..., 2)``), NaN
    only from two rows on (``> 1``) or never (``>= 0``), the key renamed, the
    default from the columns (``shape[1]``), ``gamma`` unchecked when given
    (``is None``), the attack's name left out of a message."""
    u, mal = _updates()
    u = u.at[2].set(0.0)  # a malicious zero row: its factor is the boost itself
    out, info = attacks.constrain_and_scale(0.7).craft(
        u, mal, None, AttackContext(server_lr=jnp.float32(0.5)))
    want = np.mean([0.7 / np.linalg.norm(np.asarray(u[0])), 10.0])  # n / lr = 5 / 0.5
    assert float(info["boost"]) == pytest.approx(want, rel=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[2], 0.0)
    _, info = attacks.constrain_and_scale(1e6).craft(u, mal.at[2].set(False), None, None)
    assert float(info["boost"]) == 5.0  # one attacker, the default n / 1, under the bound
    _, info = attacks.constrain_and_scale(0.7).craft(u, jnp.zeros(5, bool), None, None)
    assert np.isnan(float(info["boost"]))
    for make, match in (
            (lambda: attacks.constrain_and_scale(1.0, gamma=-1.0),
             r"^constrain_and_scale: gamma=-1.0 must be a finite number > 0$"),
            (lambda: attacks.constrain_and_scale(0.0),
             r"^constrain_and_scale: norm_bound=0.0 must be a finite number > 0$"),
            (lambda: attacks.model_replacement(float("inf")),
             r"^model_replacement: gamma=inf must be a finite number > 0$")):
        with pytest.raises(ValueError, match=match):
            make()


def _mlp():
    model = models.mlp(SHAPE, 10, hidden=[16])
    return model, model.init(jax.random.PRNGKey(0))


def test_project_to_ball_moves_along_the_offset():
    """A point outside the ball lands on its surface along the line to the
    centre (a pytree of two tensors, against NumPy); a point inside comes back
    bit for bit. Catches the offset's sign (``c - factor * d``: the same norm,
    the mirror image), which the test below cannot see (its reference
    projects with this function)."""
    centre = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.0, 3.0], [1.0, 1.0]])}
    far = {"a": jnp.array([4.0, 2.0, 0.5]), "b": jnp.array([[1.0, 3.0], [1.0, -1.0]])}
    flat = lambda t: np.concatenate([np.ravel(t["a"]), np.ravel(t["b"])])  # noqa: E731
    offset = flat(far) - flat(centre)
    want = flat(centre) + 0.5 * offset / np.linalg.norm(offset)
    np.testing.assert_allclose(flat(project_to_ball(far, centre, 0.5)), want, rtol=1e-6)
    near = jax.tree_util.tree_map(lambda c, f: c + 1e-3 * (f - c), centre, far)
    np.testing.assert_array_equal(flat(project_to_ball(near, centre, 0.5)), flat(near))


def test_top_fraction_mask_is_exact_on_neighbouring_floats():
    """``k = round(fraction * d)`` coordinates exactly, on 1000 magnitudes one
    float32 step apart (with both signs, over two tensors), 100 zeros and the
    smallest subnormal: the bisection must land on the exact threshold.
    Zeros are never masked, ``k = 0`` masks nothing even beside an infinite
    coordinate, and ``k = 1`` masks the largest.

    Catches: a bisection that does not halve (``// 3``) or stops one step
    early (31 passes), ``bits > mid`` in the count, ``k`` clipped to at least 1,
    zeros or the subnormal masked or not (``bits >= 0``, ``bits > 1``),
    ``k >= 0`` or ``k > 1`` in the final mask."""
    rng = np.random.default_rng(0)
    steps = (np.float32(1.0).view(np.int32) + np.arange(1000, dtype=np.int32)).view(np.float32)
    mags = np.concatenate([steps, np.zeros(100, np.float32), [np.float32(1e-45)]])
    flat = rng.permutation(mags * rng.choice([-1.0, 1.0], mags.size)).astype(np.float32)
    d = flat.size  # 1101
    tree = {"w": jnp.asarray(flat[:600].reshape(20, 30)), "b": jnp.asarray(flat[600:])}
    mask_of = jax.jit(lambda f: top_fraction_mask(tree, f))
    order = np.argsort(-np.abs(flat), kind="stable")
    for k in (1, 7, 500, 1000, 1001):
        m = mask_of(jnp.float32(k / d))
        got = np.concatenate([np.ravel(m["w"]), np.ravel(m["b"])]) > 0
        want = np.zeros(d, bool)
        want[order[:k]] = True
        np.testing.assert_array_equal(got, want, err_msg=f"k={k}")
    every = mask_of(jnp.float32(1.0))
    assert sum(int(jnp.sum(v)) for v in every.values()) == 1001  # the zeros stay unmasked
    hot = jnp.array([np.inf, 1.0, 2.0, 0.0])
    assert not np.any(top_fraction_mask(hot, jnp.float32(0.1)))  # k = round(0.4) = 0
    assert np.asarray(top_fraction_mask(hot, jnp.float32(0.25))).tolist() == [1.0, 0, 0, 0]


def test_neurotoxin_and_pgd_defaults_and_messages():
    """The paper's mask share (1 %) is the default; bad values fail naming the
    attack. Catches: a changed default (``1.01``: the default build fails), the
    attack's name left out of a message."""
    assert attacks.neurotoxin.__defaults__ == (0.01,)
    attacks.neurotoxin()
    with pytest.raises(ValueError, match=r"^neurotoxin: mask_fraction=0.0 must be in \(0, 1\]$"):
        attacks.neurotoxin(0.0)
    with pytest.raises(ValueError, match=r"^pgd: norm_bound=-1.0 must be a finite number > 0$"):
        attacks.pgd(-1.0)

def test_pgd_projects_after_every_step():
    """Each local step ends inside the ball: a client update with the PGD
    hook equals the same steps with an explicit projection after each one;
    the benign client's training is untouched. Catches: projecting only the
    final parameters (different after several steps), projecting benign
    clients."""
    model, params = _mlp()
    o = optax.sgd(0.5, momentum=0.9)
    atk = attacks.pgd(0.05)
    x, y, m = batches(steps=4, batch=8)
    hooked = jax.jit(make_client_update(model.apply, o, hooks=atk.train, unroll=True))
    plain = jax.jit(make_client_update(model.apply, o, unroll=True))
    key = jax.random.PRNGKey(1)
    out = hooked(params, x, y, m, key, view(0, True, global_params=params)).params
    benign = hooked(params, x, y, m, key, view(0, False, global_params=params)).params
    assert_trees_close(benign, plain(params, x, y, m, key).params, atol=0, rtol=0)
    # reference: the same optimizer stepped by hand, projected after each step

    p, state = params, o.init(params)
    for s in range(4):
        g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(q, x[s]), y[s]).mean())(p)
        upd, state = o.update(g, state, p)
        p = project_to_ball(optax.apply_updates(p, upd), params, 0.05)
    assert_trees_close(out, p, atol=1e-6)
    delta = jax.tree_util.tree_map(jnp.subtract, out, params)
    norm = np.sqrt(sum(float(jnp.sum(d ** 2)) for d in jax.tree_util.tree_leaves(delta)))
    assert norm == pytest.approx(0.05, rel=1e-5)


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_neurotoxin_leaves_masked_coordinates_at_zero(opt):
    """After a round, the mask holds the top 10 % of |global update|; a
    malicious client's next update is exactly zero there and not elsewhere;
    a benign client's is not masked. Catches: the mask taken from the wrong
    end, applied after the optimizer's momentum (non-zero steps), applied to
    benign clients."""
    model, params = _mlp()
    atk = attacks.neurotoxin(0.1)
    dim = sum(p.size for p in jax.tree_util.tree_leaves(params))
    state = atk.init(AttackerInit(params, dim, 10, SHAPE, 10, jax.random.PRNGKey(0)))
    step = jax.tree_util.tree_map(lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
                                  params)
    new = jax.tree_util.tree_map(jnp.add, params, step)
    state = atk.end_round(state, RoundView(jnp.int32(0), params, None, None, new, None))
    mask = jnp.concatenate([m.reshape(-1) for m in jax.tree_util.tree_leaves(state.mask)])
    mags = jnp.concatenate([jnp.abs(s).reshape(-1) for s in jax.tree_util.tree_leaves(step)])
    assert int(mask.sum()) == round(0.1 * dim)
    assert float(mags[mask].min()) >= float(mags[~mask].max())
    o = {"momentum": optax.sgd(0.1, momentum=0.9), "adam": optax.adam(0.01)}[opt]
    upd = jax.jit(make_client_update(model.apply, o, hooks=atk.train, unroll=True))
    x, y, m = batches(steps=3, batch=8)
    for malicious in (True, False):
        out = upd(params, x, y, m, jax.random.PRNGKey(1), view(0, malicious, state, params))
        delta = jnp.concatenate([(a - b).reshape(-1) for a, b in zip(
            jax.tree_util.tree_leaves(out.params), jax.tree_util.tree_leaves(params))])
        if malicious:
            assert float(jnp.abs(delta[mask]).max()) == 0.0
            assert float(jnp.mean(delta[~mask] != 0)) > 0.5
        else:
            assert float(jnp.mean(delta[mask] != 0)) > 0.5


# ----------------------------------------------------------------------------
# Bad input fails before any round


@pytest.mark.parametrize("attack,needle", [
    ("{'name': 'pixel_backdoor', 'kwargs': {'location': [7, 7], 'size': 2}}", "location"),
    ("{'name': 'pixel_backdoor', 'kwargs': {'size': 9}}", "outside the 8x8 image"),
    ("{'name': 'pixel_backdoor', 'kwargs': {'target': 10}}", "target=10"),
    ("{'name': 'dba', 'kwargs': {'target': -1}}", "target=-1"),
    ("{'name': 'pixel_backdoor', 'kwargs': {'poison_fraction': 0.0}}", "poison_fraction=0.0"),
    ("{'name': 'targeted_task', 'kwargs': {'poison_fraction': 1.5}}", "poison_fraction=1.5"),
    ("{'name': 'targeted_task', 'kwargs': {'source': 12}}", "source=12"),
    ("{'name': 'targeted_task', 'kwargs': {'target': 7}}", "equals source"),
    ("{'name': 'edge_case', 'kwargs': {'num_examples': 900}}", "num_examples=900"),
    ("{'name': 'pgd', 'kwargs': {'norm_bound': 0.0}}", "norm_bound=0.0"),
    ("{'name': 'constrain_and_scale', 'kwargs': {'norm_bound': -1.0}}", "norm_bound=-1.0"),
    ("{'name': 'model_replacement', 'kwargs': {'gamma': 0.0}}", "gamma=0.0"),
    ("{'name': 'neurotoxin', 'kwargs': {'mask_fraction': 2.0}}", "mask_fraction=2.0"),
])
def test_bad_backdoor_input_is_one_line_before_any_round(attack, needle):
    """Catches: a bad trigger, class, fraction or bound accepted, or failing
    inside a round with a trace instead of one line naming the field and the
    attack."""
    cfg = small_cfg(f"attack={attack}", "attack.num_malicious=2")
    with pytest.raises(config.ConfigError, match=re.escape(needle)) as err:
        plan_lib.prepare(cfg)
    assert "\n" not in str(err.value)
    name = eval(attack)["name"]  # noqa: S307 (a literal of this table)
    assert str(err.value).startswith(f"attack.kwargs: {name}: ")


def test_sun2019_emnist_config_builds_on_stand_in_data():
    """configs/sun2019_emnist.py cannot be prepared here without the federated
    EMNIST files (configs_test skips it); with random EMNIST-shaped data
    standing in for them, its model, attack and every rule of its grid build.
    Catches: the real-data config broken by a change that no other test sees."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sun2019_emnist", "configs/sun2019_emnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stand_in = ("data={'name': 'random_emnist', 'num_clients': 200, "
                "'dataset_kwargs': {'examples_per_client': 8}}")
    for rule in module.RULES:
        cfg = config.resolve(simulate.DEFAULTS, module.get_config(),
                             [stand_in, f"aggregator={rule!r}", "attack.num_malicious=169"])
        plan = plan_lib.prepare(cfg)
        assert plan.spec.input_shape == (28, 28, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sun2019_digits", "invariant_digits"])
def test_reproduction_grids_run_shrunk(tmp_path, name):
    """The two digits grids, every attack and defence, two rounds and one
    seed: every cell finishes with finite main accuracy, the attacked cells
    report a backdoor accuracy in [0, 1] and the clean ones none.

    Catches: a rule or attack of the grid that builds (configs_test) but
    fails inside a round or under the sweep's vmap over cells; the metric
    missing from results.csv. (8 and 16 compiled programs: minutes on 2 cores.)
    """
    import csv

    from fljax import sweep

    path = f"configs/{name}.py"
    base = config.resolve(simulate.DEFAULTS, config.load_file(path), ["rounds=2", "eval_every=1"])
    grid = sweep.set_axis(sweep.load_sweep(path), "seed", [0])
    sweep.run(simulate.DEFAULTS, base, grid, str(tmp_path), progress=False, log=None)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(sweep.expand(simulate.DEFAULTS, base, grid))
    for row in rows:
        assert 0.0 < float(row["main_accuracy"]) <= 1.0, row
        attacked = row["backdoor_accuracy"] != ""
        assert attacked == (row["attack"] != "none"), row
        if attacked:
            assert 0.0 <= float(row["backdoor_accuracy"]) <= 1.0
