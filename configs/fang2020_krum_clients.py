"""Why is Krum poor on digits without any attack? (a follow-up of docs/poisoning.md)

Question: in ``configs/fang2020_digits.py`` Krum's test error without attack
is ~0.32 against ~0.06 for the mean. Krum forwards ONE client's update per
round, and there a client holds 7-22 examples about half of them from one
class (Fang's bias q = 0.5). Is the poor baseline that single small, biased
update? If so it should shrink when each client holds more data (20 clients
of ~72 examples instead of 100 of ~14), when the data are IID (q = 0.1 is
the uniform split for 10 classes), and under Multi-Krum (the mean of the
``n - f`` best-scored updates). And does Fang's full-knowledge Krum attack
still work once Krum's own baseline is good?

Grid: rule {krum, multi_krum} x clients {100 (20 malicious), 20 (4
malicious)} x bias {0.1, 0.5} x attack {none, fang_krum full} x 3 seeds (48
cells); everything else as ``configs/fang2020_digits.py`` (Krum with f = the
number of malicious clients; with no attack the clients are all honest but
the rules still assume f).

Run:
  fljax sweep configs/fang2020_krum_clients.py --out results/fang2020_krum_clients

Results: docs/poisoning.md, "Why Krum is poor here".
"""

import copy
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "fang2020_digits", os.path.join(os.path.dirname(os.path.abspath(__file__)), "fang2020_digits.py"))
_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_digits)


def get_config():
    return copy.deepcopy(_digits.get_config())


def _cells(clients: int):
    f = clients // 5
    attacks = [{"name": "none", "num_malicious": 0, "kwargs": {}},
               {"name": "fang_krum", "num_malicious": f,
                "kwargs": {"num_byzantine": f, "knowledge": "full"}}]
    return {
        "data.num_clients": [clients],
        "clients_per_round": [clients],
        "data.partition_kwargs": [{"bias": 0.1}, {"bias": 0.5}],
        "aggregator": [{"name": "krum", "kwargs": {"num_byzantine": f}},
                       {"name": "multi_krum", "kwargs": {"num_byzantine": f}}],
        "attack": attacks,
        "seed": [0, 1, 2],
    }


def get_sweep():
    return [_cells(100), _cells(20)]
