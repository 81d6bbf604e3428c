"""Fang et al. (USENIX Security 2020) on the Wisconsin breast cancer data (one of the paper's four sets).

Setup: logistic regression on scikit-learn's breast cancer data (455
training and 114 test examples, 30 standardised features, 2 classes), 40
clients (~11 examples each) of which 8 (20 %) are malicious, Fang's
bias-q grouping with q = 0.5 (with two classes this is the IID split), full
participation, one full-batch SGD step (lr 0.5) per round on the client's
own 5-20 examples, 100 rounds. The rules assume
c = 8 (trim 8 per side; Krum and Bulyan with f = 8), and face Fang's
attacks on the trimmed mean and on Krum, with full and partial knowledge,
beside no attack, Gaussian noise and label flipping; three seeds.

Run:
  fljax sweep configs/fang2020_breast_cancer.py --out results/fang2020_breast_cancer

Measured (docs/poisoning.md; test error after 100 rounds, mean over 3 seeds,
114 test examples): no attack 0.015 (mean) to 0.082 (Krum). The attacks are
mild here: the attack on the trimmed mean takes it to 0.082 and the median to
0.067 (partial knowledge the same); the attack on Krum takes Krum to 0.123
(a crafted row wins every round, but its lambda is ~1e-4, so it stalls the
model) and gives up in every round against the mean, median and trimmed
mean, and in 2 of 3 seeds against Bulyan. 10.9 minutes for the 105 cells at
load 9-12 on the shared 2-core CPU (~225 s of CPU time).
"""

RULES = [
    {"name": "mean"},
    {"name": "coordinate_median"},
    {"name": "trimmed_mean", "kwargs": {"num_trim": 8}},
    {"name": "krum", "kwargs": {"num_byzantine": 8}},
    {"name": "bulyan", "kwargs": {"num_byzantine": 8}},
]


def attack(name, **kwargs):
    return {"name": name, "num_malicious": 0 if name == "none" else 8, "kwargs": kwargs}


ATTACKS = [
    attack("none"),
    attack("gaussian", stddev=200.0 ** 0.5),
    attack("label_flip"),
    attack("fang_trimmed_mean", knowledge="full", b=2.0),
    attack("fang_trimmed_mean", knowledge="partial"),
    attack("fang_krum", num_byzantine=8, knowledge="full"),
    attack("fang_krum", num_byzantine=8, knowledge="partial"),
]


def get_config():
    return {
        "seed": 0,
        "rounds": 100,
        "eval_every": 25,
        "clients_per_round": 40,
        "data": {"name": "breast_cancer", "num_clients": 40, "partition": "fang",
                 "partition_kwargs": {"bias": 0.5}},
        "model": {"name": "logistic"},
        "client": {"optimizer": "sgd", "learning_rate": 0.5, "batch_size": 64, "epochs": 1},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "trimmed_mean", "kwargs": {"num_trim": 8}},
        "server_data": {"root_size": 0, "validation_size": 50},
    }


def get_sweep():
    return {"aggregator": RULES, "attack": ATTACKS, "seed": [0, 1, 2]}
