"""Fang et al. (USENIX Security 2020), local model poisoning, reproduced on digits.

Setup (the paper's, at the scale of scikit-learn's digits): 100 clients, 20 of
them malicious (clients 0-19), Fang's bias-q grouping with q = 0.5, full
participation (all 100 clients every round), multinomial logistic regression
(the paper's MNIST classifier), one full-batch SGD step (lr 0.5) per round on
the client's own 7-22 examples (the FedSGD-style training of the paper's
code), server SGD with learning rate 1, 100 rounds. Every robust rule assumes c = 20: the
trimmed mean trims 20 per side, Krum and Bulyan take f = 20. The attacks
(``fljax.attacks``): Gaussian noise (std sqrt(200), the paper's "variance
200" [unverified in the notes]), label flipping (``l -> 9 - l``), Fang's
attacks on the trimmed mean (b = 2; also the one used against the median) and
on Krum (also the one used against Bulyan), each with full and partial
knowledge, ALIE (z from n and f), IPM (epsilon 0.1), Min-Max and Min-Sum
(unit perturbation, uncapped). Then ERR and LFR (Fang's defences, 100
validation examples, rejecting 20) around the trimmed mean and Krum against
the two full-knowledge Fang attacks. Three seeds each.

Run:
  fljax sweep configs/fang2020_digits.py --out results/fang2020_digits
  fljax run configs/fang2020_digits.py   # one cell: trimmed mean, no attack

Expected (docs/poisoning.md has the tables): test error rate without attack
~0.06-0.11 for every rule; the full-knowledge Fang attacks raise the error of
the rule they target far above it and above Gaussian noise and label flipping;
the whole grid (189 cells) in ~15 minutes on an idle 2-core CPU.
"""

RULES = [
    {"name": "mean"},
    {"name": "coordinate_median"},
    {"name": "trimmed_mean", "kwargs": {"num_trim": 20}},
    {"name": "krum", "kwargs": {"num_byzantine": 20}},
    {"name": "bulyan", "kwargs": {"num_byzantine": 20}},
]


def attack(name, **kwargs):
    return {"name": name, "num_malicious": 0 if name == "none" else 20, "kwargs": kwargs}


FANG_FULL = [attack("fang_trimmed_mean", knowledge="full", b=2.0),
             attack("fang_krum", num_byzantine=20, knowledge="full")]
ATTACKS = [
    attack("none"),
    attack("gaussian", stddev=200.0 ** 0.5),
    attack("label_flip"),
    *FANG_FULL,
    attack("fang_trimmed_mean", knowledge="partial"),
    attack("fang_krum", num_byzantine=20, knowledge="partial"),
    attack("alie", knowledge="full"),
    attack("ipm", epsilon=0.1, knowledge="full"),
    attack("min_max", perturbation="unit"),
    attack("min_sum", perturbation="unit"),
]
REJECTION = [
    {"name": rule, "kwargs": {"num_reject": 20, "base": base}}
    for rule in ("err", "lfr")
    for base in ({"name": "trimmed_mean", "kwargs": {"num_trim": 20}},
                 {"name": "krum", "kwargs": {"num_byzantine": 20}})
]


def get_config():
    return {
        "seed": 0,
        "rounds": 100,
        "eval_every": 25,
        "clients_per_round": 100,
        "data": {"name": "digits", "num_clients": 100, "partition": "fang",
                 "partition_kwargs": {"bias": 0.5}},
        "model": {"name": "logistic"},
        "client": {"optimizer": "sgd", "learning_rate": 0.5, "batch_size": 64, "epochs": 1},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "trimmed_mean", "kwargs": {"num_trim": 20}},
        "server_data": {"root_size": 0, "validation_size": 100},
    }


def get_sweep():
    return [
        {"aggregator": RULES, "attack": ATTACKS, "seed": [0, 1, 2]},
        {"aggregator": REJECTION, "attack": FANG_FULL, "seed": [0, 1, 2]},
    ]
