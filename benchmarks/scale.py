"""Scale: thousands of clients per round in bounded memory, on one or many devices.

Run (figures in the README):
  python benchmarks/scale.py --model dense --clients-per-round 10000 --aggregator mean
  python benchmarks/scale.py --model dense --clients-per-round 10000 --aggregator coordinate_median
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python benchmarks/scale.py --model dense --clients-per-round 10000 --aggregator mean --devices 8

Synthetic EMNIST-shaped data (``random_emnist``: random 28x28x1 images and
labels, ``--examples`` per client), as many clients as ``--clients-per-round``
(every client takes part in every round), local SGD (lr 0.1, one epoch of
batch ``--batch``), server SGD lr 1, the rule named by ``--aggregator``. It
runs ``--rounds`` rounds through ``fljax.simulate.run`` (the first compiles)
and prints one JSON line: ``clients_per_round``, ``seconds_per_round`` (rounds
after the first), ``peak_memory_gb`` (the largest per-round peak: the process's
resident memory on CPU, ``peak_bytes_in_use`` on accelerators),
``aggregator``, and beside them the plan's memory estimate, the strategy,
chunk and aggregation (stream / dense) fljax picked, the final test accuracy
and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["dense", "cnn"], default="dense")
    p.add_argument("--clients-per-round", type=int, default=1000)
    p.add_argument("--aggregator", default="mean",
                   help="a rule name; its keyword arguments with --kwargs")
    p.add_argument("--kwargs", default="{}", help="the rule's keyword arguments (a dict literal)")
    p.add_argument("--examples", type=int, default=16, help="examples per client")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--devices", type=int, default=1, help="execution.devices (0: all)")
    p.add_argument("--memory-gb", type=float, default=0.0, help="execution.memory_gb")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config field")
    args = p.parse_args()

    import ast

    import jax

    from fljax import config, simulate

    k = args.clients_per_round
    cfg = config.resolve(simulate.DEFAULTS, {
        "rounds": args.rounds,
        "eval_every": args.rounds,
        "clients_per_round": k,
        "data": {"name": "random_emnist", "num_clients": k, "partition": "iid",
                 "dataset_kwargs": {"examples_per_client": args.examples}},
        "model": {"name": {"dense": "emnist_dense", "cnn": "emnist_cnn"}[args.model]},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": args.batch,
                   "epochs": 1},
        "aggregator": {"name": args.aggregator, "kwargs": ast.literal_eval(args.kwargs)},
        "server_data": {"root_size": 0, "validation_size": 0},
        "execution": {"devices": args.devices, "memory_gb": args.memory_gb},
    }, args.set)
    t0 = time.perf_counter()
    res = simulate.run(cfg, progress=False, log=None)
    s = res.summary
    ups = s["client_updates_per_s"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({
        "clients_per_round": k,
        "seconds_per_round": k / ups if ups else None,
        "peak_memory_gb": s["peak_memory_gb"],
        "aggregator": args.aggregator,
        "memory_estimate_gb": s["memory_estimate_gb"],
        "memory_budget_gb": s["memory_budget_gb"],
        "aggregation": s["aggregation"],
        "strategy": s["strategy"],
        "client_chunk": s["client_chunk"],
        "devices": s["devices"],
        "final_accuracy": s.get("final_main_accuracy"),
        "final_loss": s.get("final_main_loss"),
        "num_params": s["num_params"],
        "rounds": args.rounds,
        "wall_s": time.perf_counter() - t0,
        "device": jax.devices()[0].device_kind,
        "load_1min": load,
    }), flush=True)


if __name__ == "__main__":
    main()
