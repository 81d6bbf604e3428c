"""FLTrust against sign flipping (boosted x4) by 20% of the clients, on digits.

Run:
  fljax run configs/fltrust_digits.py
  fljax run configs/fltrust_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5 s): FLTrust ~0.93 test accuracy after 60 rounds; the
plain mean is driven to ~0.18 by the flipped, boosted updates.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "fltrust"}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    cfg["server_data"] = {"root_size": 100, "validation_size": 200}
    return cfg
