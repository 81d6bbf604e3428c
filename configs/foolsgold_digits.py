"""FoolsGold (similarity-based down-weighting of sybils) against boosted sign flipping by 20% of the clients, on digits.

Run:
  fljax run configs/foolsgold_digits.py
  fljax run configs/foolsgold_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~10 s): EXPECTED
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "foolsgold", "kwargs": {"normalize": True}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    return cfg
