"""Building blocks shared by the backdoor attacks.

A backdoor attack wants the global model to answer an attacker-chosen
*target* label on inputs that carry some feature (a pixel trigger, or
membership of a natural subset such as one writer's sevens) while it keeps
its accuracy on the main task. Every attack here is built from the same few
pure functions, written for ONE client's batches ``x: float[S, B, ...]``,
``y: int[S, B]`` (S local steps of batch B) or for the padded test set:

* :func:`poisoned_slots`: which examples of each local batch are poisoned
  (the first ``round(fraction * B)`` of every batch; batches are already
  shuffled, so the positions are a random sample of the client's data);
* :func:`stamp`: a pixel trigger written into images;
* :func:`group_of`: the attacker group of a malicious client (client ``c``
  belongs to group ``c % num_groups``): per-group triggers (DBA's pieces)
  and per-group targets (several non-colluding attackers) hang off it;
* :func:`success_rate`: *backdoor accuracy*, the fraction of the inputs
  whose true label is not the target that the model classifies as the
  target (inputs of the target class are left out: a model that always
  answers the target scores 1.0, one that never does 0.0);
* ``check_*``: the factories' validation, one ``ValueError`` naming the
  field, run only on Python numbers (traced values are checked where the
  config was read).

Everything is on-device and cheap (elementwise work on a batch), because the
simulator applies an attacker's ``poison`` to every sampled client and keeps
the result where the client is malicious and acting this round.

References:
  Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the
  Machine Learning Model Supply Chain", 2017 (arXiv 1708.06733);
  Bagdasaryan et al., "How To Backdoor Federated Learning", AISTATS 2020.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fljax.attacks.attacker import TestSet
from fljax.attacks.base import is_number

PATTERNS = ("square", "checkerboard", "cross")


# ----------------------------------------------------------------------------
# Checks (Python values only)


def check_class(attack: str, field: str, label, num_classes: int) -> int:
    """``label`` is an integer class in ``[0, num_classes)``."""
    ok = isinstance(label, (int, np.integer)) and not isinstance(label, bool)
    if not ok or not 0 <= label < num_classes:
        raise ValueError(f"{attack}: {field}={label!r} is not a class in [0, {num_classes})")
    return int(label)


def check_fraction(attack: str, field: str, value) -> None:
    """A Python number must lie in ``(0, 1]``."""
    if is_number(value) and not (0.0 < float(value) <= 1.0):
        raise ValueError(f"{attack}: {field}={value!r} must be in (0, 1]")


def check_positive(attack: str, field: str, value) -> None:
    """A Python number must be finite and ``> 0``."""
    if is_number(value) and not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{attack}: {field}={value!r} must be a finite number > 0")


def check_finite(attack: str, field: str, value) -> None:
    if is_number(value) and not math.isfinite(float(value)):
        raise ValueError(f"{attack}: {field}={value!r} must be finite")


def image_shape(attack: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(H, W, C)`` of an image input (``[H, W]`` counts as one channel)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        return shape + (1,)
    if len(shape) != 3:
        raise ValueError(f"{attack}: a pixel trigger needs image inputs [H, W, C]; this data set's "
                         f"inputs are {list(shape)}")
    return shape


# ----------------------------------------------------------------------------
# Trigger masks (host, once per build)


def box_mask(attack: str, input_shape: Sequence[int], location, height: int, width: int,
             pattern: str = "square") -> np.ndarray:
    """``bool[*input_shape]``: the pixels of a ``height x width`` trigger at ``location``.

    Args:
      attack: the attack's name (for error messages).
      input_shape: the example shape, ``(H, W, C)`` or ``(H, W)``.
      location: ``(row, col)`` of the trigger's top-left pixel; a negative
        coordinate counts from the far edge like a Python index, placing the
        trigger's *last* row / column there (``(-1, -1)``: the bottom-right
        corner).
      height, width: the trigger's box.
      pattern: ``'square'`` (every pixel of the box), ``'checkerboard'``
        (pixels whose row + column is even) or ``'cross'`` (the middle row and
        column).

    Raises:
      ValueError: an unknown pattern, a non-positive size, or a box that does
        not fit inside the image (naming ``location`` and ``size``).
    """
    h, w, channels = image_shape(attack, input_shape)
    if pattern not in PATTERNS:
        raise ValueError(f"{attack}: pattern={pattern!r} must be one of {PATTERNS}")
    for name, v in (("size", height), ("size", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{attack}: {name}={v!r} must be an integer >= 1")
    try:
        r, c = (int(v) for v in location)
    except (TypeError, ValueError):
        raise ValueError(f"{attack}: location={location!r} must be a (row, col) pair") from None
    top = r if r >= 0 else h + r - height + 1
    left = c if c >= 0 else w + c - width + 1
    if not (0 <= top and top + height <= h and 0 <= left and left + width <= w):
        raise ValueError(f"{attack}: location={tuple(location)!r} with size {height}x{width} puts "
                         f"the trigger outside the {h}x{w} image")
    ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    if pattern == "square":
        on = np.ones((height, width), bool)
    elif pattern == "checkerboard":
        on = (ii + jj) % 2 == 0
    else:
        on = (ii == height // 2) | (jj == width // 2)
    mask = np.zeros((h, w), bool)
    mask[top:top + height, left:left + width] = on
    return np.repeat(mask[:, :, None], channels, axis=2).reshape(tuple(input_shape))


# ----------------------------------------------------------------------------
# On-device pieces


def poisoned_slots(shape: tuple, fraction) -> jax.Array:
    """``bool[S, B]``: the first ``n = clip(round(fraction * B), 1, B)``
    examples of every batch.

    ``fraction`` may be traced (a sweep over it does not recompile). The
    batches are shuffled per client and round before they get here, so the
    first positions are a random draw from the client's examples.
    """
    steps, batch = shape
    n = jnp.clip(jnp.round(jnp.asarray(fraction, jnp.float32) * batch), 1, batch)
    row = jnp.arange(batch) < n  # bool[B]
    return jnp.broadcast_to(row[None, :], (steps, batch))


def stamp(x: jax.Array, mask, value) -> jax.Array:
    """``x`` with the pixels of ``mask`` (``bool[...]`` of one example's shape,
    broadcast over the leading axes) set to ``value``."""
    return jnp.where(mask, jnp.asarray(value, x.dtype), x)


def expand(slots: jax.Array, ndim: int) -> jax.Array:
    """``bool[S, B]`` reshaped to broadcast against ``[S, B, ...]`` of ``ndim`` axes."""
    return slots.reshape(slots.shape + (1,) * (ndim - slots.ndim))


def group_of(client_id, num_groups: int) -> jax.Array:
    """The attacker group of client ``client_id``: ``client_id % num_groups``.

    Malicious clients are ``0..m-1``, so with ``G`` groups the attackers are
    dealt round-robin: DBA's attacker ``k`` carries trigger piece ``k % G``, and
    ``G = m`` gives every attacker its own trigger and target.
    """
    return jnp.mod(jnp.asarray(client_id, jnp.int32), num_groups)


def success_rate(params, test: TestSet, predict: Callable, target,
                 transform: Optional[Callable] = None) -> jax.Array:
    """Backdoor accuracy: among the test inputs whose true label is not
    ``target``, the fraction the model classifies as ``target`` after
    ``transform`` (e.g. stamping the trigger; None: the inputs as they are).

    Args:
      params: the model's parameters.
      test: padded batches (``x: float[nb, B, ...]``, ``y``, ``mask``).
      predict: ``predict(params, x[nb, B, ...]) -> int32[nb, B]``.
      target: the target label (may be traced).
      transform: applied to one batch ``float[B, ...]`` inside the loop (no
        triggered copy of the whole test set is made).

    Returns:
      ``float32[]``; NaN when no input qualifies.
    """
    target = jnp.asarray(target, jnp.int32)

    def one(batch):
        xb, yb, mb = batch
        if transform is not None:
            xb = transform(xb)
        pred = predict(params, xb[None])[0]  # int32[B]
        valid = mb & (yb != target)
        return jnp.stack([jnp.sum(valid & (pred == target)), jnp.sum(valid)]).astype(jnp.float32)

    hits, total = jnp.sum(jax.lax.map(one, (test.x, test.y, test.mask)), axis=0)
    return jnp.where(total > 0, hits / jnp.maximum(total, 1.0), jnp.nan)
