"""Order-statistic and distance-based rules against boosted sign flipping, on digits.

20% of 50 clients flip and boost (x4) their updates; 20 clients per round.

Run:
  fljax run configs/byzantine_digits.py                       # Krum, f = 4
  fljax run configs/byzantine_digits.py --set aggregator.name=bulyan
  fljax run configs/byzantine_digits.py --set aggregator.name=coordinate_median --set 'aggregator.kwargs={}'
  fljax run configs/byzantine_digits.py --set aggregator.name=trimmed_mean --set 'aggregator.kwargs={"num_trim": 4}'
  fljax run configs/byzantine_digits.py --set aggregator.name=geometric_median --set 'aggregator.kwargs={}'
  fljax run configs/byzantine_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'

The order-statistic rules (median, trimmed mean, invariant, Bulyan) use the compiled CPU
kernel by default where it builds (kernel="auto": one console line the first time it compiles,
the jnp path with one line saying why where no C++ compiler is found); force the jnp path with:
  fljax run configs/byzantine_digits.py --set aggregator.name=trimmed_mean --set 'aggregator.kwargs={"num_trim": 4, "kernel": None}'

Expected test accuracy after 60 rounds (2-core CPU, 5-15 s each): Krum ~0.87, Bulyan ~0.91,
coordinate median ~0.87, trimmed mean ~0.86, geometric median ~0.89; the plain mean ~0.18.
Impossible settings fail at once: --set aggregator.kwargs.num_byzantine=9 (Krum needs
n > 2f + 2 = 20 with n = 20 clients per round).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "krum", "kwargs": {"num_byzantine": 4}}
    cfg["attack"] = {"name": "sign_flip", "num_malicious": 10, "kwargs": {"scale": 4.0}}
    return cfg
