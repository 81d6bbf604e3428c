"""Throughput of a leakage attack: many victims in one vmapped call vs a loop.

Run:
  python benchmarks/leakage_throughput.py                      # MLP, DLM+, 128 victims
  python benchmarks/leakage_throughput.py --model lenet5 --optimizer lbfgs --steps 20

Both paths run the same jit-compiled attack (fljax.attacks.leakage): the
vmapped one reconstructs all victims in one call; the sequential one calls the
jitted single-victim ``reconstruct`` once per victim in a Python loop, which is
how the peer libraries (breaching, the DLG/iDLG/DLM scripts) run. Compilation is
excluded from both timings (one warm-up call each). Prints one JSON line per
path and one with the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from fljax import leak
from fljax.attacks import leakage
from fljax.models import get_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--victims", type=int, default=128)
    p.add_argument("--model", default="mlp")
    p.add_argument("--attack", default="dlm_plus")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--sequential-victims", type=int, default=0,
                   help="victims timed in the loop (0: all); the rate is per victim")
    args = p.parse_args(argv)

    kwargs = {"hidden": [32], "activation": "sigmoid"} if args.model == "mlp" else {
        "activation": "sigmoid"}
    model = get_model(args.model, (8, 8, 1), 10, **kwargs)
    params = leakage.observe.uniform_init(model.init(jax.random.PRNGKey(0)),
                                          jax.random.PRNGKey(1))
    x_all, y_all = leak.load_digits()
    x, y = leak.select_victims(x_all, y_all, args.victims, 1, seed=0)
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    observed = jax.jit(jax.vmap(lambda a, b: leakage.observe.observe(
        model, params, a, b, kind="delta", lr=0.1)))(xs, ys)
    attack = leakage.get_attack(args.attack, model, optimizer=args.optimizer,
                                num_steps=args.steps, restarts=args.restarts)
    keys = jax.random.split(jax.random.PRNGKey(2), args.victims)
    common = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "model": args.model, "attack": args.attack, "optimizer": args.optimizer,
              "num_steps": args.steps, "restarts": args.restarts}

    many = leakage.reconstruct_many(attack)
    t0 = time.perf_counter()
    jax.block_until_ready(many(params, observed, keys, ys))
    compile_v = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(many(params, observed, keys, ys))
    t_v = time.perf_counter() - t0
    rate_v = args.victims / t_v
    print(json.dumps({**common, "mode": "vmapped", "victims": args.victims,
                      "seconds": t_v, "first_call_s": compile_v,
                      "reconstructions_per_s": rate_v}), flush=True)

    one = jax.jit(attack.reconstruct)
    take = lambda t, i: jax.tree_util.tree_map(lambda a: a[i], t)
    t0 = time.perf_counter()
    jax.block_until_ready(one(params, take(observed, 0), keys[0], ys[0]))
    compile_s = time.perf_counter() - t0
    n_seq = args.sequential_victims or args.victims
    t0 = time.perf_counter()
    for i in range(n_seq):
        jax.block_until_ready(one(params, take(observed, i), keys[i], ys[i]))
    t_s = time.perf_counter() - t0
    rate_s = n_seq / t_s
    print(json.dumps({**common, "mode": "sequential", "victims": n_seq, "seconds": t_s,
                      "first_call_s": compile_s, "reconstructions_per_s": rate_s}), flush=True)
    print(json.dumps({**common, "mode": "ratio", "vmapped_over_sequential": rate_v / rate_s}),
          flush=True)


if __name__ == "__main__":
    main()
