"""FedAvg throughput: client-updates per second, fljax beside FedJAX.

Run (2-core CPU figures are in the README):
  python benchmarks/throughput.py --model dense --clients 100 --rounds 5
  python benchmarks/throughput.py --model cnn --clients 100 --rounds 3 --peer fedjax

Random EMNIST-shaped data (28x28x1, 10 classes), every client has
``--examples`` examples, local SGD (lr 0.1) for ``--epochs`` epochs of batch
``--batch``, server SGD lr 1 (plain FedAvg). After one warm-up round (which
compiles) it times ``--rounds`` rounds and prints one JSON line per system.
``--peer fedjax`` needs ``pip install fedjax==0.0.17 dm-haiku`` (patched for
current JAX with ``jax.tree_map = jax.tree_util.tree_map``).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np


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
    exp = simulate.build(cfg)
    key = jax.random.PRNGKey(0)
    state = exp.init_state(key)
    state, info = exp.round_fn(state, key)  # warm-up: compiles
    jax.block_until_ready(state.params)
    times = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        state, info = exp.round_fn(state, key)
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    return {"system": "fljax", "strategy": exp.strategy, "model": args.model,
            "clients": args.clients, "examples": args.examples, "batch": args.batch,
            "epochs": args.epochs, "seconds_per_round": sec,
            "client_updates_per_s": args.clients / sec,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


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
    state = algorithm.init(model.init(jax.random.PRNGKey(0)))
    state, _ = algorithm.apply(state, clients)  # warm-up
    jax.block_until_ready(state.params)
    times = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        state, _ = algorithm.apply(state, clients)
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    return {"system": "fedjax-0.0.17", "model": args.model, "clients": args.clients,
            "seconds_per_round": sec, "client_updates_per_s": args.clients / sec,
            "device": jax.devices()[0].device_kind}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["dense", "cnn"], default="dense")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "vmap", "map", "chunked", "sequential"])
    p.add_argument("--chunk", type=int, default=0, help="client_chunk for map / chunked")
    p.add_argument("--peer", choices=["fedjax"], default=None)
    args = p.parse_args()
    ours = fljax_rounds(args)
    print(json.dumps(ours), flush=True)
    if args.peer == "fedjax":
        peer = fedjax_rounds(args)
        print(json.dumps(peer), flush=True)
        print(json.dumps({"ratio_fljax_over_fedjax":
                          ours["client_updates_per_s"] / peer["client_updates_per_s"],
                          "model": args.model}), flush=True)


if __name__ == "__main__":
    main()
