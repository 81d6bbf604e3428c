"""Scale: every one of K clients trains in every round, EMNIST-shaped, in bounded memory.

FedJAX's EMNIST dense model (199,210 parameters) on ``random_emnist`` (16 random 28x28 images
and labels per client: the shapes and cost of EMNIST, no download), K = ``clients_per_round`` =
``data.num_clients`` clients, all of them in every round, one local SGD step of batch 16, server
SGD at learning rate 1, the plain mean (which streams: the [K, d] update matrix never exists).
The setup of ``benchmarks/scale.py`` and of ``notebooks/scale.ipynb``, which varies K and the
rule (``--set clients_per_round=10000 --set data.num_clients=10000``).

Run:
  fljax run configs/scale_emnist.py --set aggregator.name=coordinate_median

Expected: accuracy ~0.1 (random labels: this config measures time and memory, not learning).
K = 1,000 on a 2-core CPU: ~0.5 s per round under the mean, ~1.4 s under the coordinate median
(dense: a 0.8 GB update matrix), each after ~10 s of compilation; K = 10,000: 5 s and 31 s per
round, peak memory 1.8 GB and 9.6 GB (README, "Measured performance").
"""

K = 1000


def get_config():
    return {
        "seed": 0,
        "rounds": 3,
        "eval_every": 3,
        "clients_per_round": K,
        "data": {"name": "random_emnist", "num_clients": K, "partition": "iid",
                 "dataset_kwargs": {"examples_per_client": 16}},
        "model": {"name": "emnist_dense"},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 16, "epochs": 1},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "mean"},
        "server_data": {"root_size": 0, "validation_size": 0},
    }
