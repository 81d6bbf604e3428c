"""What a backdoor costs a round: seconds per round with each attack beside the clean round.

Run (2-core CPU figures are in docs/backdoors.md):
  python benchmarks/backdoor.py --model dense --clients 100 --rounds 20
  python benchmarks/backdoor.py --model cnn --clients 20 --rounds 4
  python benchmarks/backdoor.py --model digits --rounds 200      # the sun2019_digits config
  python benchmarks/backdoor.py --model m2m_digits --rounds 20 --attacks badnets4,m2m4,m2m4_reduced

The same config (random EMNIST-shaped data, 28x28x1 and 10 classes, ``--examples`` per client,
local SGD for ``--epochs`` epochs of batch ``--batch``, FedAvg; or ``--model digits``: the
sun2019_digits config without its attack; ``--model m2m_digits``: the m2m_digits config, whose
attacks then use that grid's triggers) runs clean and with each attack, every client
malicious by default (the worst case: every client of the round poisons and runs the hooks;
``--malicious 0.2`` makes a fifth of them malicious; with every client malicious all four M2M
attackers search every round, the paper's setting where every attacker takes part in every
attack round). After a
warm-up round each (which compiles), the configs take turns round by round, so a change in the
machine's load hits all of them alike; it prints one JSON line per config (median and fastest
wall seconds per round, and the median CPU seconds of the process per round, which other
processes on a shared machine disturb least) and their ratios to the clean round's. The evaluation, which also measures backdoor accuracy,
is timed the same way (``eval_s``). The issue's bound: a backdoor round at most 1.3x a clean one.
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

ATTACKS = {
    "clean": None,
    "pixel_backdoor": {"name": "pixel_backdoor", "kwargs": {"size": 3, "location": [-1, -1]}},
    "dba": {"name": "dba", "kwargs": {"size": 3}},
    "targeted_task": {"name": "targeted_task", "kwargs": {"poison_fraction": 0.5}},
    "pixel+pgd": {"name": "pixel_backdoor", "kwargs": {"size": 3},
                  "combine": [{"name": "pgd", "kwargs": {"norm_bound": 0.5}}]},
    "pixel+boost": {"name": "pixel_backdoor", "kwargs": {"size": 3},
                    "combine": [{"name": "model_replacement"}]},
    "pixel+pgd+boost": {"name": "pixel_backdoor", "kwargs": {"size": 3},
                        "combine": [{"name": "pgd", "kwargs": {"norm_bound": 0.5}},
                                    {"name": "model_replacement"}]},
    "pixel+neurotoxin": {"name": "pixel_backdoor", "kwargs": {"size": 3},
                         "combine": [{"name": "neurotoxin"}]},
    # Four attackers with their own targets (configs/m2m_digits.py); M2M at the paper's
    # search constants and at the reduced ones the digits grid uses (m2m_digits.REDUCED).
    "badnets4": {"name": "badnets", "kwargs": {"num_attackers": 4, "size": 3}},
    "m2m4": {"name": "m2m", "kwargs": {"num_attackers": 4, "size": 3}},
    "m2m4_reduced": {"name": "m2m", "kwargs": {"num_attackers": 4, "size": 3, "REDUCED": True}},
}


def _m2m_digits():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import m2m_digits

    return m2m_digits


def attack_config(args, attack):
    """The attack as configured: on ``--model m2m_digits`` the grid's own kwargs (2x2
    triggers at the corners); ``REDUCED`` puts in the grid's reduced search constants."""
    attack = {**attack, "kwargs": dict(attack.get("kwargs") or {})}
    reduced = attack["kwargs"].pop("REDUCED", False)
    if args.model == "m2m_digits" and attack["name"] in ("badnets", "m2m"):
        m = _m2m_digits()
        grid = {"badnets": m.BADNETS, "m2m": m.M2M}[attack["name"]]
        attack["kwargs"] = {k: v for k, v in grid["kwargs"].items()
                            if k not in m.REDUCED or reduced}
    elif reduced:
        attack["kwargs"].update(_m2m_digits().REDUCED)
    return attack


def base_config(args) -> dict:
    if args.model == "digits":
        import os
        import sys

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
        import sun2019_digits

        cfg = sun2019_digits.get_config()
        cfg["attack"] = {"name": "none"}
        return cfg
    if args.model == "m2m_digits":
        cfg = _m2m_digits().get_config()
        cfg["attack"] = {"name": "none"}
        return cfg
    return {
        "clients_per_round": args.clients,
        "data": {"name": "random_emnist", "num_clients": args.clients, "partition": "iid",
                 "dataset_kwargs": {"examples_per_client": args.examples}},
        "model": {"name": {"dense": "emnist_dense", "cnn": "emnist_cnn"}[args.model]},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": args.batch,
                   "epochs": args.epochs},
        "execution": {"strategy": args.strategy},
    }


def build(args, attack):
    from fljax import config, simulate

    cfg = config.resolve(simulate.DEFAULTS, base_config(args))
    if attack is not None:
        num = max(1, round(args.malicious * cfg["data"]["num_clients"]))
        attack = attack_config(args, attack)
        cfg = config.resolve(simulate.DEFAULTS, cfg, [f"attack={dict(attack, num_malicious=num)!r}"])
    runner = fljax_runner(cfg)
    runner.one_round()  # compiles
    runner.evaluate()
    return runner.one_round, runner.evaluate, runner.plan.spec


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["dense", "cnn", "digits", "m2m_digits"], default="dense")
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--evals", type=int, default=3)
    p.add_argument("--strategy", default="auto", choices=["auto", "vmap", "map"])
    p.add_argument("--malicious", type=float, default=1.0,
                   help="fraction of the clients that are malicious (1: every client, the worst case)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help=f"comma-separated, from {', '.join(ATTACKS)}")
    args = p.parse_args()
    names = ["clean"] + [a for a in args.attacks.split(",") if a and a != "clean"]
    built = {n: build(args, ATTACKS[n]) for n in names}
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    evals = {n: [] for n in names}
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t, c = time.perf_counter(), time.process_time()
            built[n][0]()
            times[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
    for _ in range(args.evals):
        for n in names:
            t = time.perf_counter()
            built[n][1]()
            evals[n].append(time.perf_counter() - t)
    clean = float(np.median(times["clean"]))
    clean_min = float(np.min(times["clean"]))
    clean_cpu = float(np.median(cpu["clean"]))
    clean_eval = float(np.median(evals["clean"]))
    spec = built["clean"][2]
    for n in names:
        med = float(np.median(times[n]))
        low = float(np.min(times[n]))
        ev = float(np.median(evals[n]))
        print(json.dumps({"attack": n, "model": args.model, "clients": spec.clients_per_round,
                          "malicious": args.malicious,
                          "local_steps": spec.steps, "strategy": spec.strategy,
                          "round_s": round(med, 5), "ratio": round(med / clean, 3),
                          "min_round_s": round(low, 5), "min_ratio": round(low / clean_min, 3),
                          "cpu_s": round(float(np.median(cpu[n])), 5),
                          "cpu_ratio": round(float(np.median(cpu[n])) / clean_cpu, 3),
                          "eval_s": round(ev, 5), "eval_ratio": round(ev / clean_eval, 3),
                          "device": jax.devices()[0].device_kind}))


if __name__ == "__main__":
    main()
