"""FoolsGold (similarity-based down-weighting of sybils) against 10 label-flipping sybils (1 -> 7) of 50 clients, on label-skewed digits.

Run:
  fljax run configs/foolsgold_digits.py
  fljax run configs/foolsgold_digits.py --set aggregator.name=mean --set 'aggregator.kwargs={}'  # undefended

Expected (2-core CPU, ~5-10 s): FoolsGold ~0.79, the plain mean ~0.93. The flip barely hurts the mean here, and FoolsGold
gives the flippers MORE weight than honest clients (mean weight ~0.6 vs ~0.3): its premise is
sybils that share one data set and objective, while these attackers hold different label-skewed
shards. A faithful FoolsGold reproduction needs such sybils (not yet in fljax).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _base import base  # noqa: E402


def get_config():
    cfg = base()
    cfg["aggregator"] = {"name": "foolsgold", "kwargs": {"normalize": True}}
    # FoolsGold tells sybils from honest clients by how alike their update
    # histories are, so honest clients must differ: label-skewed data.
    cfg["data"] = {"name": "digits", "num_clients": 50, "partition": "dirichlet",
                   "partition_kwargs": {"alpha": 0.3}}
    cfg["clients_per_round"] = 50
    cfg["attack"] = {"name": "label_flip", "num_malicious": 10,
                     "kwargs": {"source": 1, "target": 7}}
    return cfg
