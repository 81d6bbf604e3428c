"""Hostile rows shared by both conformance tables: huge, tiny and mixed-scale.

Attackers choose the scale of what they send. A finite row may be anything
from float32's smallest subnormal to its largest value (3.4e38), and each
scale breaks a different computation: squares overflow above ~1.8e19 (norms,
distances, losses), sums of two rows above ~1.7e38 (means), closed forms cancel
the honest digits under one dominant row, and below 1.2e-38 XLA:CPU flushes
subnormals to zero. The tables feed every rule ``f`` such rows at each of
these scales (one compiled program per table row: only the data changes).
"""

from __future__ import annotations

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)

# Magnitudes of the finite attacker rows: ordinary outliers, squares near and
# past float32's range, sums past it, and the largest finite value.
HUGE = (1e3, 1e6, 1e12, 1e19, 1e25, 1e30, 1e36, 3e38, F32_MAX)

# Below float32's smallest normal (1.18e-38): subnormal, flushed to zero by XLA:CPU.
TINY = (1e-30, 1e-38, 1e-45)

KINDS = ("signs", "same")


def set_rows(x: np.ndarray, rows, magnitude: float, kind: str, seed: int = 7) -> np.ndarray:
    """``x`` (float32) with ``rows`` set to ``magnitude``: random signs per entry, or all equal."""
    x = np.array(x, np.float32)
    rows = np.asarray(rows)
    if kind == "signs":
        signs = np.sign(np.random.default_rng(seed).standard_normal((len(rows), x.shape[1])))
        x[rows] = (np.float32(magnitude) * signs).astype(np.float32)
    elif kind == "same":
        x[rows] = np.float32(magnitude)
    else:
        raise ValueError(kind)
    return x


def mixed_rows(x: np.ndarray, rows, seed: int = 8, nonfinite: bool = True) -> np.ndarray:
    """``x`` with every row in ``rows`` mixing scales entry by entry.

    Entries drawn from {±3.4e38, ±1e30, 1e-38, -1e-45, 0, 1}; with
    ``nonfinite`` every second row also gets one NaN or infinity.
    """
    x = np.array(x, np.float32)
    rng = np.random.default_rng(seed)
    values = np.array([F32_MAX, -F32_MAX, 1e30, -1e30, 1e-38, -1e-45, 0.0, 1.0], np.float32)
    for i, row in enumerate(rows):
        x[row] = rng.choice(values, size=x.shape[1])
        if nonfinite and i % 2:
            x[row, rng.integers(x.shape[1])] = (np.nan, np.inf, -np.inf)[i % 3]
    return x
