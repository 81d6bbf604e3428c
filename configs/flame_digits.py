"""FLAME (HDBSCAN on cosine distances, median-norm clipping, noise) against boosted sign flipping by 20% of the clients, on digits.

Run:
  fljax run configs/flame_digits.py
  fljax run configs/flame_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5-10 s): FLAME ~0.91 test accuracy after 60 rounds; the plain mean ~0.18.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "flame", "kwargs": {"noise_lambda": 0.001}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    return cfg
