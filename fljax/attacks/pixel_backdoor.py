"""Pixel-trigger backdoors: BadNets' pattern and DBA's distributed trigger.

A malicious client writes a small pixel pattern (the trigger) into a
fraction of each of its local batches and relabels those examples to the
target class, then trains as usual. Success is measured on the server's test
set with the trigger stamped on every input whose true label is not the
target (:func:`fljax.attacks.backdoor.success_rate`).

* :func:`pixel_backdoor` (BadNets in FL): one trigger, or one per attacker
  group with its own target (groups are dealt round-robin over the malicious
  clients: client ``c`` is in group ``c % G``), which is the layout several
  non-colluding attackers with different targets need.
* :func:`dba`: the global trigger is cut into ``num_parts`` bars; attacker
  ``c`` trains only with bar ``c % num_parts``; the test uses the whole
  trigger (``backdoor_accuracy``) and each bar alone
  (``backdoor_accuracy_<k>``).

References:
  Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the
  Machine Learning Model Supply Chain", 2017 (arXiv 1708.06733);
  Xie, Huang, Chen, Li, "DBA: Distributed Backdoor Attacks against Federated
  Learning", ICLR 2020 (code: AI-secure/DBA, 4 bars of 1x6 pixels at rows
  0/4, columns 0-5/9-14 on CIFAR-10).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker


def _as_list(value, is_item) -> list:
    return [value] if is_item(value) else list(value)


def _is_pair(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in v))


def trigger_attacker(train_masks: np.ndarray, targets: Sequence[int], evals: list,
                     value, poison_fraction) -> Attacker:
    """The attacker of a pixel-trigger backdoor with ``G`` groups.

    Args:
      train_masks: ``bool[G, *input_shape]``: the trigger group ``g`` trains with.
      targets: ``G`` target labels (static).
      evals: ``[(suffix, mask bool[*input_shape], target)]``: each becomes the
        metric ``'backdoor_accuracy' + suffix``; without a ``''`` suffix the
        mean over the others is ``backdoor_accuracy``.
      value: the trigger pixels' value (may be traced).
      poison_fraction: share of every batch poisoned (may be traced).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` with ``poison`` and ``metrics``.
    """
    num_groups = int(train_masks.shape[0])
    masks = jnp.asarray(train_masks)  # bool[G, ...]: constants of the program
    target_of = jnp.asarray(np.asarray(targets, np.int32))  # int32[G]

    def poison(x, y, mask, key, view):
        del key
        g = bd.group_of(view.client_id, num_groups)
        slots = bd.poisoned_slots(y.shape, poison_fraction)  # bool[S, B]
        hit = bd.expand(slots, x.ndim) & masks[g]  # bool[S, B, ...]
        px = bd.stamp(x, hit, value)
        py = jnp.where(slots, target_of[g], y).astype(y.dtype)
        return px, py, mask

    def metrics(params, state, test, predict):
        del state
        out = {}
        for suffix, m, t in evals:
            m = jnp.asarray(m)
            out["backdoor_accuracy" + suffix] = bd.success_rate(
                params, test, predict, t, lambda xb, m=m: bd.stamp(xb, m, value))
        if "backdoor_accuracy" not in out:
            out["backdoor_accuracy"] = jnp.nanmean(jnp.stack(list(out.values())))
        return out

    return Attacker(poison=poison, metrics=metrics)


def pixel_backdoor(num_classes: int, input_shape: tuple, target=0, pattern: str = "square",
                   size: int = 3, location=(0, 0), value: float = 1.0,
                   poison_fraction: float = 0.3) -> Attacker:
    """BadNets: a pixel pattern stamped on part of each malicious batch, labelled ``target``.

    In every local batch of a malicious client the first
    ``round(poison_fraction * B)`` (shuffled) examples get the trigger's
    pixels set to ``value`` and the label ``target``; the rest stay clean, so
    the client keeps learning the main task. Benign clients are untouched.

    Several attacker groups: give ``target`` and/or ``location`` as lists (of
    one length ``G``, or one of them a single value); malicious client ``c``
    uses entry ``c % G``. The metrics are then ``backdoor_accuracy_<g>`` (group
    ``g``'s trigger to group ``g``'s target) and their mean
    ``backdoor_accuracy``.

    Args:
      num_classes: the number of classes (the simulator passes it).
      input_shape: the example shape ``(H, W, C)`` (the simulator passes it).
      target: the target label, or one per group (static).
      pattern: ``'square'``, ``'checkerboard'`` or ``'cross'`` inside a
        ``size x size`` box (static).
      size: the box's side in pixels (static).
      location: ``(row, col)`` of the box's top-left pixel, negative from the
        far edge (``(-1, -1)``: bottom-right corner); or one pair per group.
      value: the trigger pixels' value (a value: a sweep over it does not
        recompile; images are in ``[0, 1]``).
      poison_fraction: share of each malicious batch poisoned, in ``(0, 1]``
        (a value). FLPoison uses 0.32, BackFed 20/64, DBA 5/64.

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` (``poison``, ``metrics``).

    Raises:
      ValueError: a target outside the classes, a trigger outside the image,
        a poison fraction outside (0, 1], a non-finite value; naming the field.

    References:
      Gu et al. 2017 (BadNets); Bagdasaryan et al., AISTATS 2020 (the pixel
      pattern in FL).
    """
    name = "pixel_backdoor"
    targets = _as_list(target, lambda v: not isinstance(v, (list, tuple)))
    locations = _as_list(location, _is_pair)
    if not targets or not locations:
        raise ValueError(f"{name}: target and location must not be empty")
    groups = max(len(targets), len(locations))
    for field, lst in (("target", targets), ("location", locations)):
        if len(lst) not in (1, groups):
            raise ValueError(f"{name}: {field} has {len(lst)} entries but another list has "
                             f"{groups}; give one per attacker group, or a single one")
    targets = [bd.check_class(name, "target", t, num_classes) for t in targets] * \
        (groups if len(targets) == 1 else 1)
    locations = locations * (groups if len(locations) == 1 else 1)
    bd.check_fraction(name, "poison_fraction", poison_fraction)
    bd.check_finite(name, "value", value)
    masks = np.stack([bd.box_mask(name, input_shape, loc, size, size, pattern)
                      for loc in locations])
    if groups == 1:
        evals = [("", masks[0], targets[0])]
    else:
        evals = [(f"_{g}", masks[g], targets[g]) for g in range(groups)]
    return trigger_attacker(masks, targets, evals, value, poison_fraction)


def dba(num_classes: int, input_shape: tuple, target: int = 0, num_parts: int = 4,
        size: int = 3, gap: int = 1, location=(0, 0), value: float = 1.0,
        poison_fraction: float = 0.3) -> Attacker:
    """DBA: a global trigger of ``num_parts`` bars, each attacker training with one bar.

    Bar ``k`` is ``1 x size`` pixels at row ``r0 + (k // 2) * (gap + 1)`` and
    column ``c0 + (k % 2) * (size + gap)`` (two bars per row, as in the paper's
    4-bar trigger; ``(r0, c0) = location``). Malicious client ``c`` poisons with
    bar ``c % num_parts``. The server's test stamps the whole trigger
    (``backdoor_accuracy``, DBA's attack success rate) and each bar alone
    (``backdoor_accuracy_<k>``).

    The paper's CIFAR-10 trigger is ``size=6, gap=3``; on 8x8 digits the
    defaults give bars at rows 0 and 2, columns 0-2 and 4-6.

    Args:
      num_classes, input_shape: passed by the simulator.
      target: the target label (static).
      num_parts: bars in the global trigger (static, >= 1).
      size: a bar's length in pixels (static).
      gap: pixels between bars (static).
      location: ``(row, col)`` of the global trigger's top-left pixel
        (negative: from the far edge, placing the trigger's last row / column
        there).
      value: the trigger pixels' value (a value).
      poison_fraction: share of each malicious batch poisoned (a value).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` (``poison``, ``metrics``).

    References:
      Xie et al., "DBA: Distributed Backdoor Attacks against Federated
      Learning", ICLR 2020.
    """
    name = "dba"
    t = bd.check_class(name, "target", target, num_classes)
    if not isinstance(num_parts, (int, np.integer)) or isinstance(num_parts, bool) \
            or num_parts < 1:
        raise ValueError(f"{name}: num_parts={num_parts!r} must be an integer >= 1")
    if not isinstance(gap, (int, np.integer)) or isinstance(gap, bool) or gap < 0:
        raise ValueError(f"{name}: gap={gap!r} must be an integer >= 0")
    bd.check_fraction(name, "poison_fraction", poison_fraction)
    bd.check_finite(name, "value", value)
    if not _is_pair(location):
        raise ValueError(f"{name}: location={location!r} must be a (row, col) pair")
    rows = (num_parts + 1) // 2
    height = rows + (rows - 1) * gap
    width = size if num_parts == 1 else 2 * size + gap
    whole = bd.box_mask(name, input_shape, location, height, width)  # checks the fit
    h, w, _ = bd.image_shape(name, input_shape)
    top = np.argmax(whole.reshape(h, w, -1)[:, :, 0].any(1))
    left = np.argmax(whole.reshape(h, w, -1)[:, :, 0].any(0))
    parts = np.stack([
        bd.box_mask(name, input_shape, (top + (k // 2) * (gap + 1), left + (k % 2) * (size + gap)),
                    1, size)
        for k in range(num_parts)])
    glob = parts.any(0)
    evals = [("", glob, t)] + ([(f"_{k}", parts[k], t) for k in range(num_parts)]
                               if num_parts > 1 else [])
    return trigger_attacker(parts, [t] * num_parts, evals, value, poison_fraction)
