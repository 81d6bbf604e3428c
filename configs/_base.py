"""Shared base for the defence configs: digits, 50 clients (10 malicious), 20 per round.

Not a config itself: the family configs import ``base()`` and override fields.
"""


def base():
    return {
        "seed": 0,
        "rounds": 60,
        "eval_every": 10,
        "clients_per_round": 20,
        "data": {"name": "digits", "num_clients": 50, "partition": "iid"},
        "model": {"name": "mlp", "kwargs": {"hidden": [64]}},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 16, "epochs": 1},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "mean"},
        "attack": {"name": "gaussian", "num_malicious": 10, "kwargs": {"stddev": 1.0}},
    }
