"""Times the Pallas kernels on a GPU against XLA and the device's copy bandwidth.

Run from the repository root on a machine with an NVIDIA GPU::

    python benchmarks/pallas_gpu.py --clients 100,1000,10000 --dim 1000000

One JSON line per (N, what): seconds (best of ``--repeats`` after a warm-up),
and ``gbps``, the input's bytes (N * D * 4) over the seconds: the bandwidth
the computation achieves as if it read its input once. ``copy`` (a device copy
of the matrix: reads and writes it, so its ``gbps`` counts both) is the floor;
``xla_sort`` (``jnp.sort(x, axis=0)``, what a plain jnp median costs) and the
rules' jnp paths are the baselines; ``pallas_*`` are ``kernels/pallas_*.py``.
A kernel should become the default on the GPU (``fljax/aggregators/_kernels.py``)
only where these rows show it winning. Not yet run: no GPU has been lent so
far. ``--interpret --dim 2000 --clients 9`` runs the same code on the CPU (in
Pallas' interpret mode; the timings mean nothing there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import best_of  # noqa: E402

from fljax import aggregators  # noqa: E402
from fljax.aggregators import _ops  # noqa: E402
from kernels import pallas_gram, pallas_order_stats  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,1000,10000")
    parser.add_argument("--dim", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interpret", action="store_true")
    args = parser.parse_args(argv)
    interpret = True if args.interpret else None
    device = str(jax.devices()[0].device_kind)
    key = jax.random.PRNGKey(0)
    for n in [int(c) for c in args.clients.split(",")]:
        d = args.dim
        x = jax.random.normal(jax.random.PRNGKey(n), (n, d), jnp.float32)
        valid = jnp.ones((n,), bool)
        lo, hi, t = (n - 1) // 2, n // 2, n // 5
        median, trimmed = aggregators.coordinate_median(kernel=None), aggregators.trimmed_mean(t, kernel=None)
        centre = jnp.mean(x, axis=0)
        cases = {
            "copy": jax.jit(lambda x: x * 1.0),
            "xla_sort": jax.jit(lambda x: jnp.sort(x, axis=0)[n // 2]),
            "jnp_median": jax.jit(lambda x: median.aggregate(x, median.init(d), key)[0]),
            "jnp_trimmed_mean": jax.jit(lambda x: trimmed.aggregate(x, trimmed.init(d), key)[0]),
            "pallas_median": jax.jit(lambda x: pallas_order_stats.range_mean(
                x, valid, lo, hi, interpret=interpret)),
            "pallas_trimmed_mean": jax.jit(lambda x: pallas_order_stats.range_mean(
                x, valid, t, n - 1 - t, interpret=interpret)),
            "jnp_gram": jax.jit(lambda x: _ops.centred_gram_blocked(x, centre, valid)),
            "pallas_gram": jax.jit(lambda x: pallas_gram.centred_gram(
                x, centre, valid, interpret=interpret)),
        }
        for what, fn in cases.items():
            row = {"what": what, "clients": n, "dim": d, "device": device}
            try:
                seconds = best_of(lambda: fn(x), args.repeats, warmup=True)
            except Exception as e:  # e.g. out of memory for XLA's sort at N = 10,000
                row["failed"] = f"{type(e).__name__}: {e}"[:300]
            else:
                row["seconds"] = round(seconds, 5)
                row["gbps"] = round(n * d * 4 / seconds / 1e9, 1)
            print(json.dumps(row), flush=True)
        del x


if __name__ == "__main__":
    main()
