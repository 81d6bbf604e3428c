"""The robust learning rate (Ozdayi et al. 2021): flip the server step where fewer than 'threshold' clients agree on the sign. --set aggregator.name=invariant runs the invariant aggregator.

Run:
  fljax run configs/sign_digits.py
  fljax run configs/sign_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5-10 s): the robust learning rate ~0.69 (it slows learning too); the plain mean ~0.18.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "robust_lr", "kwargs": {"threshold": 8}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    return cfg
