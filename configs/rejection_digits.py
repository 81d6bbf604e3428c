"""Fang et al.'s error-rate based rejection (ERR; --set aggregator.name=lfr for the loss-based LFR) against boosted sign flipping, on digits. The server rejects the 4 clients whose removal lowers validation error most.

Run:
  fljax run configs/rejection_digits.py
  fljax run configs/rejection_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5-10 s idle; 30 s at load 12): ERR ~0.82 after 60 rounds; the plain mean ~0.18.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "err", "kwargs": {"num_reject": 4}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    return cfg
