"""Each attacker's pixel trigger out of a run, to look at or stamp on images.

The multi-label backdoors give every attacker ``g`` its own trigger and
target: ``badnets``' triggers are fixed patches, set by the config alone;
``m2m``'s are learned, re-optimised every round the attacker takes part and
kept in the attacker state (:class:`fljax.attacks.m2m.M2MState`), so they come
out of a finished run (``RunResult.state.attack_state``). :func:`attacker_triggers`
returns them in one form (mask, pixel values, target per attacker) and
:func:`stamp_trigger` writes attacker ``g``'s into images with the attack's own
rule: badnets' pixels set to its value (:func:`fljax.attacks.backdoor.stamp`),
M2M's blend (:func:`fljax.attacks.m2m.blend`), as the attacks do in training and
in their ``backdoor_accuracy_<g>``.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fljax.attacks import backdoor as bd
from fljax.attacks.badnets import badnets as _badnets
from fljax.attacks.m2m import M2MState, blend
from fljax.attacks.m2m import m2m as _m2m
from fljax.attacks.m2m import masks as _m2m_masks

SUPPORTED = ("badnets", "m2m")


class Triggers(NamedTuple):
    """The triggers of ``G`` attackers (host arrays)."""

    attack: str  # 'badnets' | 'm2m': which stamping rule applies
    targets: tuple  # int per attacker
    mask: np.ndarray  # bool[G, *input_shape]: the pixels each attacker's trigger covers
    value: np.ndarray  # float32[G, *input_shape]: its pixel values (used inside the mask)
    blend_alpha: float  # m2m: x + alpha (t - x) inside the mask; badnets: 1.0


def _defaults(factory) -> dict:
    return {k: p.default for k, p in inspect.signature(factory).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _attack_state(state, combined: bool):
    """The attacker state inside a ``RunResult``, a ``SimState`` or the state
    itself (the first part's when the attack combines several)."""
    if hasattr(state, "summary") and hasattr(state, "state"):  # simulate.RunResult
        state = state.state
    if hasattr(state, "attack_state"):  # round.SimState
        state = state.attack_state
    if combined and isinstance(state, tuple) and not isinstance(state, M2MState):
        state = state[0]
    return state


def attacker_triggers(cfg: dict, state=None, input_shape: Optional[tuple] = None,
                      num_classes: Optional[int] = None) -> Triggers:
    """Each attacker's trigger in a run of ``cfg`` (attack ``badnets`` or ``m2m``).

    Args:
      cfg: the run's config (resolved; its ``attack`` section and, when
        ``input_shape`` or ``num_classes`` is None, its ``data`` section).
      state: for ``m2m``, the finished run: a ``simulate.RunResult``, its
        ``SimState`` or the attacker state (:class:`~fljax.attacks.m2m.M2MState`)
        of ONE run (not a sweep's stacked cells); ignored for ``badnets``,
        whose patches the config fixes.
      input_shape, num_classes: the data's (None: from the config's data set).

    Returns:
      :class:`Triggers`: attacker ``g``'s target, mask and pixel values.

    Raises:
      ValueError: another attack (or none); ``m2m`` without a state, or with a
        state that is not one run's M2M state of this config's attackers.
    """
    ac = cfg.get("attack") or {}
    name = ac.get("name", "none")
    if name not in SUPPORTED:
        raise ValueError(f"attacker_triggers: attack.name={name!r} has no per-attacker pixel "
                         f"trigger to show; it works for {', '.join(SUPPORTED)}")
    if name == "m2m" and state is None:
        raise ValueError("attacker_triggers: m2m's triggers are learned during the run and kept "
                         "in the attacker state; pass the run's RunResult (or its state)")
    if input_shape is None or num_classes is None:
        from fljax import plan as plan_lib

        fed = plan_lib.load_data(cfg["data"])
        input_shape = fed.x.shape[1:] if input_shape is None else input_shape
        num_classes = fed.num_classes if num_classes is None else num_classes
    input_shape = tuple(int(s) for s in input_shape)
    factory = _badnets if name == "badnets" else _m2m
    kw = {**_defaults(factory), **(ac.get("kwargs") or {})}
    tg = bd.check_targets(name, kw["num_attackers"], kw["targets"], num_classes)
    G = len(tg)
    if name == "badnets":
        masks = bd.group_masks(name, input_shape, G, kw["location"], kw["size"], kw["pattern"])
        value = np.full(masks.shape, float(kw["value"]), np.float32)
        return Triggers(name, tuple(tg), masks, value, 1.0)
    masks = _m2m_masks(input_shape, G, kw["size"], kw["location"])
    st = _attack_state(state, bool(ac.get("combine")))
    if not isinstance(st, M2MState):
        raise ValueError(f"attacker_triggers: the state given is a {type(st).__name__}, not an "
                         "m2m attacker state (M2MState); pass the RunResult of a run of this "
                         "config")
    value = np.asarray(jax.device_get(st.trigger), np.float32)
    if value.shape != masks.shape:
        raise ValueError(f"attacker_triggers: the state's triggers have shape "
                         f"{list(value.shape)}; this config's {G} attackers on "
                         f"{list(input_shape)} inputs need {list(masks.shape)} (a sweep's state "
                         "stacks cells: take one run's)")
    return Triggers(name, tuple(tg), masks, value, float(kw["blend_alpha"]))


def stamp_trigger(x, trig: Triggers, g: int) -> jax.Array:
    """``x: float[..., *input_shape]`` with attacker ``g``'s trigger stamped on
    every image, by the attack's own rule (badnets: the mask's pixels set to
    the patch value; m2m: ``x + alpha (t - x)`` inside the mask).

    Raises:
      ValueError: ``g`` not an attacker of ``trig``, or images of another shape.
    """
    G = len(trig.targets)
    if not isinstance(g, (int, np.integer)) or isinstance(g, bool) or not 0 <= g < G:
        raise ValueError(f"stamp_trigger: g={g!r} is not an attacker (0..{G - 1})")
    x = jnp.asarray(x)
    shape = trig.mask.shape[1:]
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"stamp_trigger: images of shape {list(x.shape)} do not end in the "
                         f"trigger's {list(shape)}")
    t = jnp.asarray(trig.value[g], x.dtype)
    m = jnp.asarray(trig.mask[g])
    if trig.attack == "m2m":
        return blend(x, t, m, trig.blend_alpha)
    return bd.stamp(x, m, t)
