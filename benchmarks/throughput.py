"""FedAvg throughput: client-updates per second, fljax beside FedJAX.

Run (2-core CPU figures are in the README):
  python benchmarks/throughput.py --model dense --clients 100 --rounds 5
  python benchmarks/throughput.py --model cnn --clients 100 --rounds 3 --peer fedjax

Random EMNIST-shaped data (28x28x1, 10 classes), every client has
``--examples`` examples, local SGD (lr 0.1) for ``--epochs`` epochs of batch
``--batch``, server SGD lr 1 (plain FedAvg). After one warm-up round (which
compiles) it times ``--rounds`` rounds, alternating the systems round by round, and
prints one JSON line per system (median seconds per round) and their ratio.
``--peer fedjax`` needs ``pip install fedjax==0.0.17 dm-haiku`` (patched for
current JAX with ``jax.tree_map = jax.tree_util.tree_map``).
"""

from __future__ import annotations

import argparse
import json
import time

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import fljax_runner  # noqa: E402


def fljax_rounds(args) -> dict:
    from fljax import config, simulate

    cfg = config.resolve(simulate.DEFAULTS, {
        "rounds": args.rounds + 1,
        "clients_per_round": args.clients,
        "data": {"name": "random_emnist", "num_clients": args.clients, "partition": "iid",
                 "dataset_kwargs": {"examples_per_client": args.examples}},
        "model": {"name": {"dense": "emnist_dense", "cnn": "emnist_cnn"}[args.model]},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": args.batch,
                   "epochs": args.epochs},
        "execution": {"strategy": args.strategy, "client_chunk": args.chunk},
    })
    runner = fljax_runner(cfg)
    meta = {"system": "fljax", "strategy": runner.plan.spec.strategy, "model": args.model,
            "clients": args.clients, "examples": args.examples, "batch": args.batch,
            "epochs": args.epochs, "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend()}
    return runner.one_round, meta


def fedjax_rounds(args) -> dict:
    jax.tree_map = jax.tree_util.tree_map  # FedJAX 0.0.17 predates its removal
    import fedjax

    model = {"dense": fedjax.models.emnist.create_dense_model,
             "cnn": fedjax.models.emnist.create_conv_model}[args.model](only_digits=True)
    grad_fn = fedjax.model_grad(model)
    algorithm = fedjax.algorithms.fed_avg.federated_averaging(
        grad_fn, fedjax.optimizers.sgd(0.1), fedjax.optimizers.sgd(1.0),
        fedjax.ShuffleRepeatBatchHParams(batch_size=args.batch, num_epochs=args.epochs))
    rng = np.random.default_rng(0)
    clients = []
    for c in range(args.clients):
        x = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, args.examples).astype(np.int32)
        clients.append((str(c).encode(), fedjax.ClientDataset({"x": x, "y": y}),
                        jax.random.PRNGKey(c)))
    box = [algorithm.init(model.init(jax.random.PRNGKey(0)))]

    def one_round():
        box[0], _ = algorithm.apply(box[0], clients)
        jax.block_until_ready(box[0].params)

    meta = {"system": "fedjax-0.0.17", "model": args.model, "clients": args.clients,
            "device": jax.devices()[0].device_kind}
    return one_round, meta


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["dense", "cnn"], default="dense")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--strategy", default="auto", choices=["auto", "vmap", "map"])
    p.add_argument("--chunk", type=int, default=0, help="client_chunk for map")
    p.add_argument("--peer", choices=["fedjax"], default=None)
    args = p.parse_args()
    systems = [fljax_rounds(args)]
    if args.peer == "fedjax":
        systems.append(fedjax_rounds(args))
    for run_round, _ in systems:
        run_round()  # warm-up: compiles
    # Rounds of the systems alternate, so that load on a shared machine hits both alike.
    times = [[] for _ in systems]
    for _ in range(args.rounds):
        for (run_round, _), ts in zip(systems, times):
            t = time.perf_counter()
            run_round()
            ts.append(time.perf_counter() - t)
    rates = []
    for (_, meta), ts in zip(systems, times):
        sec = float(np.median(ts))
        rates.append(args.clients / sec)
        print(json.dumps({**meta, "seconds_per_round": sec,
                          "client_updates_per_s": args.clients / sec}), flush=True)
    if len(rates) == 2:
        print(json.dumps({"ratio_fljax_over_fedjax": rates[0] / rates[1], "model": args.model,
                          "clients": args.clients}), flush=True)


if __name__ == "__main__":
    main()
