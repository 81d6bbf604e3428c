"""Attacks.

Update-level poisoning attacks are pure functions
``attack(updates: float[n, d], malicious: bool[n], key) -> float[n, d]``: benign
rows come back bit-identical, and ``malicious`` is a traced array, so changing
which clients are malicious never recompiles. Select one in a config by name
(``attack.name``) from :data:`UPDATE_ATTACKS`.

Data-leakage (reconstruction) attacks live in :mod:`fljax.attacks.leakage`.
"""

from fljax.attacks import leakage
from fljax.attacks.gaussian import gaussian
from fljax.attacks.sign_flip import sign_flip

UPDATE_ATTACKS = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
}

__all__ = ["UPDATE_ATTACKS", "gaussian", "leakage", "sign_flip"]
