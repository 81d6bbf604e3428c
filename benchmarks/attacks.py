"""Times every update attack on one random float32 [N, D] round, against one Krum aggregation.

Run from the repository root::

    python benchmarks/attacks.py --clients 200 --dim 1000000 --byzantine 40

The rows are honest-looking updates (a shared direction plus per-client noise,
``--common``); ``--byzantine`` of them, drawn at random, are malicious. Each
attack in ``fljax.attacks.UPDATE_ATTACKS`` is built with its defaults
(``num_byzantine = F``, ``scaling(N / F)``; attacks with a ``knowledge``
argument once per knowledge), ``craft`` is jitted, warmed up once and timed as
the best of ``--repeats`` runs. One JSON line per attack: ``attack, seconds``
(a fresh ``[N, D]`` output buffer, as a standalone call), ``inplace_seconds``
(the updates donated, as inside a jitted round where the deltas are an
intermediate), ``krum_ratio = seconds / krum seconds`` and the attack's
scalar ``info``. Then one line for ``krum`` (``fljax.aggregators.krum(F)`` on
the same matrix) and, unless ``--no-sequential``, one for the sequential
NumPy search of Fang's Krum attack (``tests/attacks/references.py``: Krum once
per candidate lambda, timed once) with ``speedup`` = its time over
``fang_krum``'s, and both lambdas.

Measured on the shared 2-core CPU (200 x 1M, F = 40), best of 3, one run on
2026-11-30 under a load average of 8-10 (other test suites running; Krum
itself took 1.09 s, against ~0.45 s on a quiet machine), so read the ratios,
which come from the same run::

    attack              knowledge  seconds  in place  / Krum  in place / Krum
    sign_flip                      1.08     0.015     0.99    0.01
    gaussian                       8.10     8.07      7.43    7.40   (threefry noise)
    scaling                        0.93     0.014     0.85    0.01
    ipm                 full       0.94     0.14      0.86    0.13
    ipm                 partial    0.96     0.12      0.88    0.11
    alie                full       0.81     0.36      0.74    0.33
    alie                partial    1.14     0.24      1.04    0.22
    min_max             full       1.72     1.40      1.58    1.29
    min_max             partial    2.29     1.35      2.10    1.24
    min_sum             full       1.22     0.37      1.12    0.34
    min_sum             partial    1.05     0.39      0.96    0.35
    fang_trimmed_mean   full       1.37     0.60      1.26    0.55
    fang_trimmed_mean   partial    1.09     0.31      1.00    0.28
    fang_krum           full       2.39     1.56      2.19    1.43
    fang_krum           partial    2.01     1.38      1.84    1.26
    krum (aggregation)             1.09
    fang_krum, sequential NumPy search (3 Krum runs + the bound): 60.2 s, 25x
    fang_krum's time, same lambda (0.730477)

A standalone call pays for its fresh ``[N, D]`` result (sign_flip: 1.08 s
against 0.015 s in place, i.e. ~1 s of page faults and writes under this load,
~0.26 s on a quiet machine); Krum returns ``[D]``. In place, everything but
Min-Max and Fang's Krum attack costs a fraction of Krum; those two need the
same O(N^2 D) Gram matrix as Krum itself (the diameter of the honest rows;
Krum's scores and Fang's bound) plus O(N D) passes, and land at 1.1-1.4x Krum
(in a second profile under the same load, fang_krum in place took 1.14 s
against Krum's 1.18 s). The search over lambda itself takes ~5 ms.

The adaptive attacks run the server's rule inside their search: ``--rule``
(default ``coordinate_median``) is passed in the attack context (every
attack gets it; only ``optimal_alie`` / ``optimal_ipm`` use it), and ByzFL's
``Optimal_ALittleIsEnough`` (``delta = -10``, fljax's sign) /
``Optimal_InnerProductManipulation`` with the same rule and no
pre-aggregation, ``Mimic(0)`` and ``Inf`` are timed on the honest rows
(``byzfl_seconds``, one run for the searches; ``speedup`` = ByzFL / fljax).
Measured on 2026-12-01, 100 x 100k, F = 20, against the median, load 12
(other work), best of 3::

    attack          knowledge  seconds  in place  evaluations  ByzFL (torch.quantile)
    optimal_alie    full       1.62     1.20      31 (lookahead 2)   34.0 s  (21x)
    optimal_alie    full       0.60     0.47      20 (lookahead 1)           (56x)
    optimal_alie    partial    1.55 / 0.43 (lookahead 2 / 1)
    optimal_ipm     full       1.10     1.04      20 (lookahead 2)   35.9 s  (33x)
    optimal_ipm     full       0.38     0.58      20 (lookahead 1)           (95x)
    optimal_ipm     partial    1.64 / 0.63 (lookahead 2 / 1)
    mimic           full       0.058    0.079     (ByzFL returns the row: ~0 s)
    inf                        0.042    0.0005
    krum (aggregation)         0.019

So on the CPU one candidate per wave (``lookahead=1``, the CPU default) is
fastest: 20 evaluations of the median, ~30 ms each. ByzFL's 20 medians
through ``torch.quantile`` (which refuses inputs beyond 2^24 entries, so
ByzFL cannot search against its median at 200 x 1M) cost ~1.7 s each.
At 200 x 1M, F = 40, against the trimmed mean (``--rule trimmed_mean
--repeats 1``, load 9-17): optimal_ipm full 15.7 s (10.3 s in place; 20
trimmed means, scale 2.6e6), partial 12.1 s; ByzFL's search (20 ``TrMean``
sorts of 160 x 1M) 436 s, 27.8x; Krum 2.7 s in the same run. (optimal_alie
at that size was not measured: the run was stopped at its 25-minute cap.)
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import best_of  # noqa: E402

from fljax import aggregators, attacks  # noqa: E402
from fljax.attacks.base import AttackContext  # noqa: E402


def builds(name, n, f):
    """``[(label, kwargs)]``: how the benchmark builds attack ``name``."""
    params = inspect.signature(attacks.UPDATE_ATTACKS[name]).parameters
    kwargs = {}
    if "num_byzantine" in params:
        kwargs["num_byzantine"] = f
    if "factor" in params:
        kwargs["factor"] = n / max(f, 1)
    if "knowledge" in params:
        return [(k, dict(kwargs, knowledge=k)) for k in ("full", "partial")]
    return [(None, kwargs)]


def byzfl_peer(name, knowledge, rule, f):
    """ByzFL's version of attack ``name`` as ``fn(honest float32[m, d] numpy) ->
    row`` (torch tensors, ByzFL's own path), against ByzFL's version of
    ``rule`` without pre-aggregation; None where ByzFL has no such attack or
    rule. ByzFL's attackers see the honest rows only (fljax's ``full``)."""
    if knowledge not in (None, "full"):
        return None
    try:
        import importlib

        import torch

        from benchmarks.aggregators import _import_byzfl_aggregators

        bz = _import_byzfl_aggregators()
        byz = importlib.import_module("byzfl.attacks.attacks")
    except Exception:  # pragma: no cover - optional peer
        return None
    agg = {"mean": lambda: bz.Average(), "coordinate_median": lambda: bz.Median(),
           "trimmed_mean": lambda: bz.TrMean(f=f)}.get(rule)
    make = {
        # delta = -10: ByzFL's mu + tau sigma at the negated scale is fljax's mu - tau sigma.
        "optimal_alie": lambda: byz.Optimal_ALittleIsEnough(agg=agg(), pre_agg_list=[], f=f,
                                                            delta=-10.0),
        "optimal_ipm": lambda: byz.Optimal_InnerProductManipulation(agg=agg(), pre_agg_list=[],
                                                                    f=f),
        "mimic": lambda: byz.Mimic(0),
        "inf": lambda: byz.Inf(),
    }.get(name)
    if make is None or (agg is None and name.startswith("optimal")):
        return None
    attack = make()
    return lambda x: attack(torch.from_numpy(x))


def scalars(info):
    return {k: round(float(v), 6) for k, v in info.items() if np.ndim(v) == 0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--byzantine", type=int, default=40)
    parser.add_argument("--attacks", default="", help="comma-separated subset of UPDATE_ATTACKS")
    parser.add_argument("--common", type=float, default=0.3,
                        help="scale of the direction shared by the honest rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sequential", action="store_true",
                        help="skip the sequential NumPy search for fang_krum")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rule", default="coordinate_median",
                        help="the server's rule in the attack context (what optimal_alie / "
                             "optimal_ipm search against): mean, coordinate_median, trimmed_mean")
    parser.add_argument("--no-byzfl", action="store_true", help="skip ByzFL's attacks")
    parser.add_argument("--lookahead", type=int, default=0,
                        help="optimal_alie / optimal_ipm: loop steps per wave (0: the default)")
    args = parser.parse_args(argv)

    n, d, f = args.clients, args.dim, args.byzantine
    rng = np.random.default_rng(args.seed)
    x_np = rng.standard_normal((n, d), dtype=np.float32)
    x_np += np.float32(args.common) * rng.standard_normal(d, dtype=np.float32)[None, :]
    mal_np = np.zeros(n, bool)
    mal_np[rng.choice(n, f, replace=False)] = True
    x, mal = jax.device_put(x_np), jax.device_put(mal_np)
    key = jax.random.PRNGKey(args.seed)
    dev = jax.devices()[0]
    device = str(getattr(dev, "device_kind", dev))
    base = {"clients": n, "dim": d, "byzantine": f, "device": device}

    krum = aggregators.krum(f)
    krum_fn = jax.jit(krum.aggregate)
    jax.block_until_ready(krum_fn(x, krum.init(d), key))
    krum_s = best_of(lambda: jax.block_until_ready(krum_fn(x, krum.init(d), key)), args.repeats)

    rule = {"mean": lambda: aggregators.mean(weighted=False),
            "coordinate_median": aggregators.coordinate_median,
            "trimmed_mean": lambda: aggregators.trimmed_mean(f)}[args.rule]()
    ctx = AttackContext(aggregator=rule)
    base["rule"] = args.rule
    names = [a for a in args.attacks.split(",") if a] or list(attacks.UPDATE_ATTACKS)
    fang_s = fang_lam = None
    for name in names:
        for knowledge, kwargs in builds(name, n, f):
            if args.lookahead and name.startswith("optimal"):
                kwargs = dict(kwargs, lookahead=args.lookahead)
            attack = attacks.UPDATE_ATTACKS[name](**kwargs)
            fn = jax.jit(lambda u, m, k, a=attack: a.craft(u, m, k, ctx))
            _, info = jax.block_until_ready(fn(x, mal, key))
            seconds = best_of(lambda: jax.block_until_ready(fn(x, mal, key)), args.repeats)
            donated = jax.jit(lambda u, m, k, a=attack: a.craft(u, m, k, ctx), donate_argnums=0)
            times = []
            for _ in range(args.repeats + 1):  # the first call compiles
                fresh = jax.block_until_ready(x + 0)
                t = time.perf_counter()
                jax.block_until_ready(donated(fresh, mal, key))
                times.append(time.perf_counter() - t)
                del fresh
            row = {"attack": name, **({"knowledge": knowledge} if knowledge else {}),
                   "seconds": round(seconds, 5), "inplace_seconds": round(min(times[1:]), 5),
                   "krum_ratio": round(seconds / krum_s, 2),
                   "inplace_krum_ratio": round(min(times[1:]) / krum_s, 2),
                   "info": scalars(info), **base}
            peer = None if args.no_byzfl else byzfl_peer(name, knowledge, args.rule, f)
            if peer is not None:
                honest = np.ascontiguousarray(x_np[~mal_np])
                peer(honest)  # warm-up
                peer_s = best_of(lambda: peer(honest), 1 if name.startswith("optimal") else
                                 args.repeats)
                row.update(byzfl_seconds=round(peer_s, 4), speedup=round(peer_s / seconds, 1))
            print(json.dumps(row), flush=True)
            if name == "fang_krum" and knowledge == "full":
                fang_s, fang_lam = seconds, float(info["lambda"])
    print(json.dumps({"attack": "krum (aggregation)", "seconds": round(krum_s, 4), **base}),
          flush=True)

    if fang_s is not None and not args.no_sequential:
        from tests.attacks.references import fang_krum_sequential

        t = time.perf_counter()
        lam, halvings = fang_krum_sequential(x_np, mal_np, f)
        seq_s = time.perf_counter() - t
        print(json.dumps({"attack": "fang_krum (sequential NumPy search)",
                          "seconds": round(seq_s, 4), "krum_runs": halvings + 1 if halvings >= 0
                          else None, "lambda": lam, "fljax_lambda": fang_lam,
                          "speedup": round(seq_s / fang_s, 1), **base}), flush=True)


if __name__ == "__main__":
    main()
