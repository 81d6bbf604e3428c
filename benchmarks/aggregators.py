"""Times every aggregation rule on one random float32 [N, D] matrix.

Run from the repository root::

    python benchmarks/aggregators.py --clients 200 --dim 1000000 --byzantine 40 --peers

Each rule in ``fljax.aggregators.RULES`` is built from (N, F) -- or, for rules
with other parameters or a context, as the conformance table builds it (see
``build_rule``) --, jitted, warmed up once, and timed as the best of
``--repeats`` runs (``block_until_ready``). One JSON line per rule: ``rule,
seconds, device, clients, dim`` and, with ``--peers``, ``numpy_seconds`` (the
NumPy reference of the conformance tests, ``tests/aggregators/``, run on the
same float32 matrix; a vectorised one for Bulyan) and ``byzfl_seconds``
(ByzFL's class on a torch CPU tensor, where one exists), plus the ratios
``peer_seconds / seconds`` (> 1: fljax is faster).

The rules that take a ``kernel`` argument (median, trimmed mean, invariant,
Bulyan) run on their default path, ``kernel="auto"``: the compiled CPU kernel
(``kernels/order_stats``) where it can be built, the jnp path elsewhere; their
rows say which (``"path"``). With ``--jnp`` they are timed a second time with
``kernel=None`` (rows with ``"path": "jnp"``; the peers are timed once per
rule). With ``--floor`` those rows also time, in turns with the rule (so under
the same load), the memory floor -- ``copy_seconds`` (NumPy's ``copyto`` of the
matrix into a buffer touched before: one read and one write) and
``column_sum_seconds`` (an XLA matvec: one read) -- and ``numpy_sort_seconds``
(``np.sort(x, axis=0)``), with ``copies`` = seconds / copy and
``numpy_sort_ratio`` = NumPy's sort / seconds. ``benchmarks/pallas_gpu.py``
times the Pallas kernels on a GPU.

Measured on the 2-core CPU (200 x 1M, F = 40), seconds, one ``--peers
--repeats 2`` run on 2026-11-30 on the idle machine (single figures swing by
20-50 % between runs, read the ratios). The "first kernel" column is the first
version of the CPU kernel, injected by hand; the rules' default then was the
jnp path (the "jnp" column):

    rule               jnp     first kernel  NumPy ref   ByzFL (torch CPU)
    mean               0.026                 0.035       0.044
    coordinate_median  1.40    0.28          3.17        5.29
    trimmed_mean       1.02    0.30          0.95        4.95
    krum               0.62                  1.01        2.00
    multi_krum         0.48                  1.05        2.32
    bulyan             2.53                  9.71        -
    geometric_median   0.53                  0.99        2.76
    invariant          0.99    0.31          0.97        -
    centered_clipping  0.58                  2.05        4.54
    norm_clipping      0.075                 1.05        -
    weak_dp            0.083                 0.46        -
    robust_lr          0.105                 0.61        -
    fltrust            0.10                  0.90        -   (rerun after the copy-free rewrite; 0.47 before)
    flame              1.88                  69.7        -
    foolsgold          2.09                  55.9        -
    err                0.99                  132         -
    lfr                0.87                  104         -

The rules that take a kernel, on their default path (the current CPU kernel)
and on the jnp path, ``--floor --jnp --peers --repeats 5``, later on
2026-11-30 with other jobs on the 2 cores (load average 11-15: everything ran
2-4x slower than idle; compare within a row). ``copies`` and ``x np.sort``
come from the copy and ``np.sort`` timed in turns with each rule:

    200 x 1M, F = 40   kernel  copies  x np.sort  jnp    NumPy ref  ByzFL
    coordinate_median  0.42    3.65    2.7        1.54   6.42       24.2
    trimmed_mean       0.27    3.40    3.4        2.06   1.26       22.7
    invariant          0.42    4.78    2.8        4.72   3.42       -
    bulyan             2.33    -       -          8.82   37.0       -
    1,000 x 100k, F = 200
    coordinate_median  0.40    5.40    2.9        2.24
    trimmed_mean       0.41    5.21    2.7        0.84
    invariant          0.36    5.83    2.8        1.89

Bulyan's time is mostly its pairwise distances and its ``n - 2f`` Krum selections
(a sort of the ``[n, n]`` distance matrix each), not the coordinate-wise step.

Round-two rules (issue 15), the same command with ``--rules`` restricted to
them, 2026-11-30, on a machine shared with other jobs (load average 11-17 on
2 cores: absolute figures are several times the idle ones, read the ratios,
taken in the same run); MDA and SMEA at f = 1 (``COMBINATORIAL_F``), the others
at f = 40; NumPy peers vectorised (``references_round2.*_fast_ref``):

    rule               fljax    NumPy ref   ByzFL (torch CPU)
    meamed             2.38     83.5        111   (torch.quantile)
    monna              0.70      9.96       9.41  (after the pivot fix; 3.78 before)
    dnc                0.74    114          -
    signguard          2.73     10.8        -     (both cluster with scikit-learn)
    crfl               0.41     18.9        -
    caf                2.93     64.0        49.8
    mda                2.89     57.6        44.8
    multi_metrics     37.1     987          -     (O(n^2 d) Manhattan sums)
    smea               not finished: the run was stopped after ~17 min inside the
                       peers (ByzFL's SMEA copies the 199 x 1M subset for each of the
                       200 subsets); fljax's SMEA took 0.84 s at 200 x 1,000 (f = 1)

Order-statistic kernels tried (200 x 262,144 unless noted; contended machine):
``jnp.sort`` of transposed [block, n] tiles 6.3-7.8 s; ``lax.top_k`` on
transposed tiles 2.9-3.1 s; bisection on order-preserving uint32 keys, [n, b]
tiles, rolled ``fori_loop`` 0.84-0.86 s (4.4 s on 1M), unrolled 0.52-0.77 s
with float counts, 0.34 s for two bisections at block 256 x 8 on a quiet
machine; the same on transposed tiles 0.35-0.74 s (int32 counts 9.9 s); a
full-matrix bisection (no tiles) 2.9 s; a two-stage 16-bit bisection 0.64-0.82
s (no gain); a bitonic min/max network on [n, b] tiles 0.27-1.5 s depending on
the tiling and the load. Defaults: median by bisection (256 x 8), trimmed mean
and invariant by the bitonic network (64 x 8), see ``fljax/aggregators/_ops.py``.

Also tried (2026-11-30, idle machine, trimmed mean of 200 x 262,144): the
network written as a Python list of row arrays with an optimisation barrier
after every stage runs 2x faster than the reshaped network at 128 rows (97 ms
against 201 ms) and 2.3x at 32 rows, but XLA's compile time grows steeply with
the row count (2.4 s at 128 rows, 6.5 min at 256); a hybrid (lists of 32 rows
of [groups, b] arrays, reshapes across groups) was exact but pathologically
slow (112 s). Also tried then: an interpolation search on values with a
key-bisection safeguard (exact; ~24 passes per tile on Gaussian data because a
tile waits for its slowest column, 0.78 s against the network's 0.38 s); the
network as 16 arrays of [16, b] rows with a layout swap between the strides
below and above 16 (0.62 s); ``jnp.where`` compare-exchange instead of
``minimum`` / ``maximum`` and ``--xla_cpu_enable_fast_min_max`` (no change: the
stages are bound by XLA's reshapes and copies, not by the comparisons).

The CPU kernel (``kernels/order_stats.cc``). Its first version ran Batcher's
odd-even merge sort one comparator at a time on 64-column blocks (two vector
loads and stores per comparator): 0.16-0.30 s for the trimmed mean of 200 x 1M
on an idle machine; the copy-in of the rows cost ~0.04 s of it. Through
``jax.pure_callback`` the same C loop took 0.94-1.57 s (the callback copies the
800 MB input), hence an XLA FFI custom call, which reads XLA's buffer in place.
Measured for the current version (2026-11-30, the 2-core machine shared with
other jobs, load average 2-16; CPU seconds of both threads together, which
the load distorts less than wall time; best of 3-7, variants in turns):

- The network alone, per column: 200 rows, Batcher comparator by comparator
  128 ns (2,906 comparators; pruned to the weighted ranks 108 ns, 2,463), the
  register-blocked bitonic network (16 rows x up to 4 layers per step in
  512-bit registers) 69 ns (3,928 comparators); 1,000 rows 1,466 / 1,350 ns
  against 686 ns. Reordering Batcher's comparators for locality (components
  of 16-128 rows, layer by layer in batches) gained at most 15 %; the
  comparator-on-memory loop is bound by its stores.
- Pruning the blocked network to the ranks that carry weight drops 11 % of
  its comparators for a median or trimmed mean at 120-10,000 rows; sorting the
  first 16 rows with Batcher's 63-comparator network instead of the bitonic 80
  and running a stage's later runs block by block (L1-sized) gained 1-3 %.
- Where the time goes at 200 x 1M: copy-in of the rows ~0.05, network ~0.07
  CPU s (1,000 x 100k: 0.03 and 0.06). Of super-block buffers of 32 KB-2 MB
  per thread, 256 KB was the best compromise (128 KB as fast at 200 rows but
  15 % slower at 1,000; 32 KB and 512 KB-2 MB 5-30 % slower); a software
  prefetch of the next super-block (to L1, L2 or non-temporal) never gained.
- The whole rule against the first kernel, in turns, load ~15: median 0.40 s
  against 0.81 s at 200 x 1M and 0.30 against 0.62 s at 1,000 x 100k (CPU
  0.14 against 0.24 s, 0.10 against 0.21 s); trimmed mean and invariant alike.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import best_of  # noqa: E402

from fljax import aggregators  # noqa: E402

# Rules with a parameter besides f, or that need a context (the global
# parameters, a server update, a validation set), are built as the conformance
# table builds them (tests/aggregators/table_model.py), with the global
# parameters at zero, so the NumPy peer is the same computation:
# norm_clipping(10), weak_dp(10, sigma=0), robust_lr(n // 4),
# centered_clipping(tau=10, iters=3), fltrust towards a fixed server update,
# flame without noise, foolsgold(num_clients=n), err / lfr rejecting f clients
# on a 40-example linear task.
def _model_table():
    from tests.aggregators import table_model

    return {c.name: c for c in table_model.TABLE}


# Rules that enumerate subsets (MDA, SMEA) are timed at a small f, where the
# peers' C(n, f) enumerations finish (ByzFL's MDA and SMEA at f = 2, n = 200
# take minutes); fljax's MDA itself is exact up to 2^f n^2 <= 2^32 (f = 16 at
# n = 200).
COMBINATORIAL_F = {"mda": 1, "smea": 1}


def build_rule(name, n, f, d, kernel="auto"):
    """``(rule, context, None)``, or ``(None, None, reason)`` if (n, f, d) cannot build it.

    ``kernel`` is passed to factories with a ``kernel`` argument (``"auto"``,
    their default, or None for the jnp path).
    """
    table = _model_table()
    if name in table:
        context = aggregators.AggregationContext(params=jnp.zeros((d,), jnp.float32))
        return table[name].build(n, d, f), context, None
    factory = getattr(aggregators, name)
    params = inspect.signature(factory).parameters
    kwargs = {}
    f = min(f, COMBINATORIAL_F.get(name, f))
    for p in params.values():
        if p.name in ("num_byzantine", "num_trim", "f"):
            kwargs[p.name] = f
        elif p.default is inspect.Parameter.empty:
            return None, None, f"needs argument {p.name!r}"
    if "kernel" in params:
        kwargs["kernel"] = kernel
    return factory(**kwargs), None, None


def numpy_peer(name, f):
    from tests.aggregators import references, table_stats

    if name == "bulyan":  # the conformance reference loops over coordinates
        return lambda x: references.bulyan_fast_ref(x, f)
    from tests.aggregators import references_round2 as ref2

    fast = {  # vectorised where the table's references loop over pairs or coordinates
        "mda": lambda x: ref2.mda_fast_ref(x, min(f, COMBINATORIAL_F["mda"])),
        "smea": lambda x: ref2.smea_fast_ref(x, min(f, COMBINATORIAL_F["smea"])),
        "meamed": lambda x: ref2.meamed_fast_ref(x, f),
        "caf": lambda x: ref2.caf_fast_ref(x, f),
        "multi_metrics": lambda x: ref2.multi_metrics_fast_ref(x, np.zeros(x.shape[1], x.dtype)),
    }
    if name in fast:
        return fast[name]
    table = _model_table()
    if name in table:
        return lambda x: table[name].reference(x, np.zeros(x.shape[1]), f)
    for entry in table_stats.TABLE:
        if entry.name == name:
            return lambda x: entry.reference(x, x.shape[0], f)
    return None


def _import_byzfl_aggregators():
    """``byzfl.aggregators`` without the package ``__init__``, which imports its
    federated framework and torchvision (whose build may not match torch)."""
    try:
        from byzfl import aggregators as bz
        return bz
    except Exception:
        import importlib
        import importlib.util
        import types

        for mod in [m for m in sys.modules if m == "byzfl" or m.startswith("byzfl.")]:
            del sys.modules[mod]
        spec = importlib.util.find_spec("byzfl")
        pkg = types.ModuleType("byzfl")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = pkg
        return importlib.import_module("byzfl.aggregators")


def byzfl_peer(name, f):
    try:
        import torch
        bz = _import_byzfl_aggregators()
    except Exception:  # pragma: no cover - optional peer
        return None
    make = {
        "mean": lambda: bz.Average(),
        "coordinate_median": lambda: bz.Median(),
        "trimmed_mean": lambda: bz.TrMean(f=f),
        "krum": lambda: bz.Krum(f=f),
        "multi_krum": lambda: bz.MultiKrum(f=f),
        # Same iteration count and smoothing as fljax's RFA defaults.
        "geometric_median": lambda: bz.GeometricMedian(nu=1e-5, T=4),
        "centered_clipping": lambda: bz.CenteredClipping(L=3, tau=10.0),
        "mda": lambda: bz.MDA(f=min(f, COMBINATORIAL_F["mda"])),
        "smea": lambda: bz.SMEA(f=min(f, COMBINATORIAL_F["smea"])),
        "monna": lambda: bz.MoNNA(f=f, idx=0),
        "meamed": lambda: bz.Meamed(f=f),  # torch.quantile: at most 2^24 entries
        "caf": lambda: bz.CAF(f=f),
    }.get(name)
    if make is None:
        return None
    rule = make()
    return lambda x: rule(torch.from_numpy(x))


def floor_fns(x, x_np):
    """The memory floor of one pass over the input, and NumPy's sort, as timeable functions.

    ``copy``: NumPy's ``copyto`` into a buffer allocated (and touched) once, one
    read and one write of every entry, no page faults; ``column_sum``: one XLA
    matvec ``ones[n] @ x``, one read; ``numpy_sort``: ``np.sort(x, axis=0)``.
    """
    dst = np.empty_like(x_np)
    np.copyto(dst, x_np)
    ones = jnp.ones((x.shape[0],), x.dtype)
    colsum = jax.jit(lambda x: ones @ x)
    jax.block_until_ready(colsum(x))
    return {"copy": lambda: np.copyto(dst, x_np),
            "column_sum": lambda: jax.block_until_ready(colsum(x)),
            "numpy_sort": lambda: np.sort(x_np, axis=0)}


def interleaved(fns, repeats):
    """Best of ``repeats`` for every function, the functions taking turns (same load)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--byzantine", type=int, default=40)
    parser.add_argument("--rules", default="", help="comma-separated subset of RULES")
    parser.add_argument("--peers", action="store_true", help="also time NumPy and ByzFL")
    parser.add_argument("--jnp", action="store_true",
                        help="also time the rules that take a kernel on their jnp paths "
                             "(kernel=None; one more row each, with 'path': 'jnp')")
    parser.add_argument("--floor", action="store_true",
                        help="time the memory floor (a copy and a column sum of the matrix) and "
                             "NumPy's np.sort(x, axis=0) in turns with each rule that takes a "
                             "kernel; those rows get the seconds and the ratios")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    n, d, f = args.clients, args.dim, args.byzantine
    names = [r for r in args.rules.split(",") if r] or list(aggregators.RULES)
    x_np = np.random.default_rng(args.seed).standard_normal((n, d), dtype=np.float32)
    x = jax.device_put(x_np)
    device = str(jax.devices()[0].device_kind if hasattr(jax.devices()[0], "device_kind") else jax.devices()[0])
    key = jax.random.PRNGKey(args.seed)
    floor = floor_fns(x, x_np) if args.floor else {}
    from fljax.aggregators import _kernels

    for name in names:
        peers = {}  # timed once per rule, reported on each of its rows
        takes_kernel = "kernel" in inspect.signature(getattr(aggregators, name)).parameters
        paths = ("auto", None) if args.jnp and takes_kernel else ("auto",)
        for path in paths:
            row = {"rule": name, "clients": n, "dim": d, "byzantine": f, "device": device}
            if takes_kernel:
                kind = "closest_to_median_mean" if name == "bulyan" else "rank_weighted_sum"
                uses = path == "auto" and _kernels.resolve("auto", kind) is not None
                row["path"] = "kernel" if uses else "jnp"
            rule, context, why = build_rule(name, n, f, d, kernel=path)
            if rule is None:
                row["skipped"] = why
                print(json.dumps(row), flush=True)
                continue
            state = rule.init(d)
            fn = jax.jit(functools.partial(rule.aggregate, context=context))
            try:
                jax.block_until_ready(fn(x, state, key))  # compile + warm-up
            except Exception as e:  # e.g. needs a context, or an impossible (n, f)
                row["skipped"] = f"{type(e).__name__}: {e}"[:200]
                print(json.dumps(row), flush=True)
                continue
            run = lambda: jax.block_until_ready(fn(x, state, key))  # noqa: E731
            if floor and takes_kernel:  # the floor and NumPy's sort, timed in turns with the rule
                best = interleaved({"rule": run, **floor}, args.repeats)
                seconds = best.pop("rule")
                row.update({f"{k}_seconds": round(v, 4) for k, v in best.items()})
                row["copies"] = round(seconds / best["copy"], 2)
                row["numpy_sort_ratio"] = round(best["numpy_sort"] / seconds, 2)
            else:
                seconds = best_of(run, args.repeats)
            row["seconds"] = round(seconds, 4)
            if args.peers and not peers:
                for peer, make in (("numpy", numpy_peer), ("byzfl", byzfl_peer)):
                    peer_fn = make(name, f)
                    if peer_fn is None:
                        continue
                    try:
                        peer_fn(x_np)  # warm-up (torch threads, NumPy allocations)
                    except Exception as e:  # e.g. torch.quantile's 2^24-entry limit
                        row[f"{peer}_error"] = f"{type(e).__name__}: {e}"[:120]
                        continue
                    peers[peer] = best_of(lambda: peer_fn(x_np), max(1, args.repeats - 1))
            for peer, secs in peers.items():
                row[f"{peer}_seconds"] = round(secs, 4)
                row[f"{peer}_ratio"] = round(secs / seconds, 2)
            print(json.dumps(row), flush=True)

if __name__ == "__main__":
    main()
