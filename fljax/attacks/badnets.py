"""BadNets with several attackers who do not know each other (multi-label backdoors).

``num_attackers`` groups of malicious clients (client ``c`` is in group
``c % num_attackers``), each with its own target label. Every attacker stamps
a fixed patch trigger on part of each local batch and labels those examples
with its target. By default all attackers use the same standard patch at the
same place (what attackers who do not know each other pick from the common
default), so their triggers collide and their targets compete; ``location``
as a list gives each its own place. One attacker is the single-label
backdoor (SBA): exactly :func:`fljax.attacks.pixel_backdoor.pixel_backdoor`.

Algorithm (per malicious client ``c`` of group ``g = c % G``, per round it acts)::

    for every local batch (x, y) of B examples:
        the first n = round(poison_fraction * B) examples: x[mask_g] = value, y = target_g
    train as a benign client

Metrics: ``backdoor_accuracy_<g>`` (attacker ``g``'s trigger to its target, on
the test inputs whose label is not ``target_g``) and their mean
``backdoor_accuracy`` (one attacker: ``backdoor_accuracy`` alone).

References:
  Gu, Dolan-Gavitt, Garg, "BadNets", 2017 (arXiv 1708.06733); the multi-label
  setting and this baseline: Li, Zhao, Zhu, Zhang, "Infighting in the Dark:
  Multi-Labels Backdoor Attack in Federated Learning" (arXiv 2409.19601; Mirage,
  CVPR 2025), whose baselines stamp a patch per attacker.
"""

from __future__ import annotations

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker
from fljax.attacks.pixel_backdoor import trigger_attacker


def badnets(num_classes: int, input_shape: tuple, num_attackers: int = 1, targets=None,
            pattern: str = "square", size: int = 3, location=(-1, -1), value: float = 1.0,
            poison_fraction: float = 0.125) -> Attacker:
    """BadNets patch triggers for ``num_attackers`` attackers with their own targets.

    Args:
      num_classes, input_shape: passed by the simulator.
      num_attackers: attacker groups ``G`` (static); needs at least ``G``
        malicious clients.
      targets: one target class per attacker, all different (static); None:
        attacker ``g`` targets class ``g``.
      pattern: ``'square'``, ``'checkerboard'`` or ``'cross'`` (static).
      size: the patch's side in pixels (static).
      location: ``(row, col)`` of the patch for every attacker (the default:
        the bottom-right corner), or one pair per attacker (static).
      value: the patch pixels' value (a value).
      poison_fraction: share of each malicious batch poisoned, in ``(0, 1]``
        (a value; M2M's code poisons 8 of 64).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` (``poison``, ``metrics``,
      ``groups = G``).

    Raises:
      ValueError: two attackers with one target, a target outside the
        classes, a patch outside the image, a bad fraction; naming the field.
    """
    name = "badnets"
    tg = bd.check_targets(name, num_attackers, targets, num_classes)
    bd.check_fraction(name, "poison_fraction", poison_fraction)
    bd.check_finite(name, "value", value)
    masks = bd.group_masks(name, input_shape, len(tg), location, size, pattern)
    return trigger_attacker(masks, tg, bd.group_evals(masks, tg), value,
                            poison_fraction)._replace(groups=len(tg))
