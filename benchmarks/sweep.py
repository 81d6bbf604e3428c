"""A grid as one program: ``fljax sweep`` against separate runs.

Run:
  python benchmarks/sweep.py --config configs/quickstart.py --cells 8

Runs ``--cells`` seeds of the config three ways, each timed from a fresh
Python process (start-up and compilation included, as a user sees them):

* ``separate``: one ``fljax run --set seed=i`` process per cell;
* ``one_process``: one process calling ``fljax.simulate.run`` for each seed in
  turn (the round compiles once and is reused);
* ``sweep``: one ``fljax sweep --grid seed=0,...`` process (the cells share a
  spec, so they run as ONE program vmapped over a cell axis).

Prints one JSON line with the three wall times and ``speedup`` (separate /
sweep). Extra ``--set`` assignments apply to all three.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _one_process(config: str, cells: int, sets: list[str]) -> None:
    from fljax import config as config_lib, simulate

    base = config_lib.resolve(simulate.DEFAULTS, config_lib.load_file(config), sets)
    for seed in range(cells):
        cfg = config_lib.resolve(simulate.DEFAULTS, base, [f"seed={seed}"])
        simulate.run(cfg, None, progress=False, log=None)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/quickstart.py")
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--mode", choices=["all", "one_process"], default="all", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode == "one_process":
        _one_process(args.config, args.cells, args.set)
        return
    sets = [a for s in args.set for a in ("--set", s)]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        t_sep = 0.0
        for seed in range(args.cells):
            t_sep += _timed([py, "-m", "fljax.cli", "run", args.config, "--no-progress", *sets,
                             "--set", f"seed={seed}", "--out", os.path.join(tmp, f"r{seed}")])
        t_one = _timed([py, os.path.abspath(__file__), "--mode", "one_process", "--config",
                        args.config, "--cells", str(args.cells), *sets])
        seeds = ",".join(str(s) for s in range(args.cells))
        t_sweep = _timed([py, "-m", "fljax.cli", "sweep", args.config, "--no-progress", *sets,
                          "--grid", f"seed={seeds}", "--out", os.path.join(tmp, "sweep")])
    import jax

    print(json.dumps({"config": args.config, "cells": args.cells, "separate_s": t_sep,
                      "one_process_s": t_one, "sweep_s": t_sweep, "speedup": t_sep / t_sweep,
                      "speedup_vs_one_process": t_one / t_sweep,
                      "backend": jax.default_backend(), "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
