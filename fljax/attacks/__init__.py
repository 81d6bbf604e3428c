"""Attacks.

Update-level poisoning attacks are pure functions
``attack(updates: float[n, d], malicious: bool[n], key) -> float[n, d]``: benign
rows come back bit-identical, and ``malicious`` is a traced array, so changing
which clients are malicious never recompiles. Select one in a config by name
(``attack.name``) from :data:`UPDATE_ATTACKS`.

Data-level attacks are pure transforms of a malicious client's batch,
``poison(x, y, key) -> (x, y)``, applied inside local training where the
(traced) malicious mask is set; select them by name from :data:`DATA_ATTACKS`.

Data-leakage (reconstruction) attacks live in :mod:`fljax.attacks.leakage`.
"""

from fljax.attacks import leakage
from fljax.attacks.gaussian import gaussian
from fljax.attacks.label_flip import label_flip
from fljax.attacks.sign_flip import sign_flip

UPDATE_ATTACKS = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
}

# Factories that take the number of classes first (the simulator passes it).
DATA_ATTACKS = {
    "label_flip": label_flip,
}

__all__ = ["DATA_ATTACKS", "UPDATE_ATTACKS", "gaussian", "label_flip", "leakage",
           "sign_flip"]
