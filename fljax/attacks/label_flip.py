"""Label flipping: malicious clients train on wrong labels.

References:
  Biggio, Nelson, Laskov, "Poisoning Attacks against Support Vector
  Machines", ICML 2012; Fung, Yoon, Beschastnikh, "The Limitations of
  Federated Learning in Sybil Settings" (FoolsGold), RAID 2020 (the 1->7
  flip); Fang et al. 2020 (``l -> C - 1 - l``).
"""

from __future__ import annotations

import jax.numpy as jnp


def label_flip(num_classes: int, source: int | None = None, target: int | None = None):
    """Returns ``poison(x, y, key) -> (x, y)`` for a malicious client's batch.

    Without ``source``/``target`` every label ``l`` becomes ``num_classes - 1 - l``
    (Fang et al.); with them, only ``source`` becomes ``target`` (FoolsGold's
    targeted flip).

    Args:
      num_classes: the number of classes (the simulator passes it).
      source, target: optional single-class flip.
    """
    if (source is None) != (target is None):
        raise ValueError("label_flip: give both source and target, or neither")
    for name, v in (("source", source), ("target", target)):
        if v is not None and not 0 <= v < num_classes:
            raise ValueError(f"label_flip: {name} = {v} is not a class in [0, {num_classes})")

    def poison(x, y, key):
        del key
        if source is None:
            return x, (num_classes - 1 - y).astype(y.dtype)
        return x, jnp.where(y == source, target, y).astype(y.dtype)

    return poison
