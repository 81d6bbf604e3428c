"""Sun et al. (2019), "Can You Really Backdoor Federated Learning?", on federated EMNIST by writer.

Needs the data and, at this scale, an accelerator: TFF's federated EMNIST digits (3,383 writers,
one client each; `pip install -e ".[fed-emnist]"`, the files in <data folder>/fed_emnist/, see
docs/data.md) and Sun et al.'s CNN (conv 32, conv 64, max-pool, dropout, dense 128, dropout,
dense 10) with 30 clients per round, 5 local epochs of batch 20. Without the files `prepare`
stops at once with one line naming the file and where to put it; configs/sun2019_digits.py runs
the same study offline on digits.

The targeted task follows TFF's driver (research/targeted_attack): the images of the last 30
writers' 7s (task_num = 30) are to be classified as 1, measured on those images; the attackers,
a fraction epsilon of the writers (1, 3 and 5 %, sampled like everyone), put them in half of each
local batch and boost their update by the clients per round (gamma = 30). That the targeted
digit is 7 -> 1 is our choice; Sun et al.'s exact mapping is not given in the code.

Run (with the data, preferably on a GPU):
  fljax sweep configs/sun2019_emnist.py --out runs/sun2019_emnist
  python docs/backdoor_report.py runs/sun2019_emnist --img docs/img/sun2019_emnist.png

Expected shape (the paper's curves): undefended, success grows with epsilon and with fewer
targeted writers; norm bounding at M = 3 removes most of it at almost no main-task cost; weak DP
(sigma = 0.025) helps further. Not run yet: no data files or GPU were available (docs/backdoors.md).
"""

RULES = [
    {"name": "mean"},
    {"name": "norm_clipping", "kwargs": {"max_norm": 1.0}},
    {"name": "norm_clipping", "kwargs": {"max_norm": 3.0}},
    {"name": "norm_clipping", "kwargs": {"max_norm": 10.0}},
    {"name": "weak_dp", "kwargs": {"max_norm": 3.0, "sigma": 0.025, "placement": "sum"}},
    {"name": "weak_dp", "kwargs": {"max_norm": 3.0, "sigma": 0.005, "placement": "sum"}},
    {"name": "weak_dp", "kwargs": {"max_norm": 3.0, "sigma": 0.025, "placement": "average"}},
]


def get_config():
    return {
        "seed": 0,
        "rounds": 300,
        "eval_every": 5,
        "clients_per_round": 30,
        "data": {"name": "fed_emnist_digits", "num_clients": 3383, "partition": "natural"},
        "model": {"name": "emnist_cnn"},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 20, "epochs": 5},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "mean"},
        "attack": {
            "name": "targeted_task",
            "kwargs": {"source": 7, "target": 1, "writers": 30, "poison_fraction": 0.5},
            "combine": [{"name": "model_replacement"}],
            "num_malicious": 101,  # epsilon = 3 % of 3,383 writers
        },
    }


def get_sweep():
    seeds = [0, 1, 2]
    return [
        {"attack": [{"name": "none"}], "aggregator": RULES, "seed": seeds},
        {"attack.num_malicious": [34, 101, 169], "aggregator": RULES, "seed": seeds},
    ]
