"""Attacks on federated learning: ``leakage`` (data reconstruction)."""

from fljax.attacks import leakage

__all__ = ["leakage"]
