"""Norm clipping (Sun et al. 2019) against strongly boosted sign flipping; --set aggregator.name=weak_dp --set aggregator.kwargs.sigma=0.01 adds weak-DP noise, aggregator.name=centered_clipping (with aggregator.kwargs={'tau': 1.0}) runs centered clipping.

Run:
  fljax run configs/clipping_digits.py
  fljax run configs/clipping_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5-10 s): clipping to 0.2 (honest update norms are ~0.15) ~0.83; the plain mean ~0.11.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "norm_clipping", "kwargs": {"max_norm": 0.2}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 20.0}}
    return cfg
