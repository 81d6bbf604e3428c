"""The ``fljax`` command.

  fljax run CONFIG [--set key=value ...] [--out DIR] [--resume] [--no-progress]
  fljax sweep CONFIG [--grid KEY=V1,V2,...]... [--set key=value ...] [--out DIR]
  (run and sweep, over several processes / hosts: --coordinator HOST:PORT
   --num-processes N --process-id I [--coordinator-timeout S])
  fljax leak CONFIG [--set key=value ...] [--out DIR]
  fljax list [KIND]
  fljax --version

CONFIG is a Python file with ``get_config()`` (and, for sweeps, optionally
``get_sweep()``). ``--set`` overrides any field by its dotted name (``--set
aggregator.name=krum --set client.learning_rate=0.05``); a dict literal
replaces the field it names. Every mistake in a config or on the command line
fails before any work with one line on stderr naming the field, the value and
what is allowed, and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fljax import config as config_lib


def _default_out(config_path: str, kind: str = "") -> str:
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("runs", f"{name}{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def _parser() -> argparse.ArgumentParser:
    from fljax import __version__

    p = argparse.ArgumentParser(prog="fljax", description="Federated-learning security "
                                "simulator on JAX.")
    p.add_argument("--version", action="version", version=f"fljax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "run a federated training"),
                        ("sweep", "run a grid of configs (cells sharing shapes as one program)"),
                        ("leak", "run data-leakage (reconstruction) attacks")]:
        s = sub.add_parser(name, help=help_)
        s.add_argument("config", help="a Python file defining get_config()")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field by its dotted name (repeatable)")
        s.add_argument("--out", default=None, help="output folder (default runs/<config>-<time>)")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
        s.add_argument("--debug", action="store_true", help="show tracebacks")
        if name in ("run", "sweep"):
            g = s.add_argument_group("several processes (fljax/distributed.py; default: the "
                                     "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                                     "JAX_PROCESS_ID environment variables)")
            g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                           help="address of process 0, which hosts the coordinator")
            g.add_argument("--num-processes", type=int, default=None)
            g.add_argument("--process-id", type=int, default=None)
            g.add_argument("--coordinator-timeout", type=float, default=60.0, metavar="S",
                           help="seconds to wait for the coordinator (default 60)")
        if name == "run":
            s.add_argument("--resume", action="store_true",
                           help="continue from the last checkpoint in --out DIR")
        if name == "sweep":
            s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                           help="a grid axis (repeatable); replaces the file's list for KEY")
    s = sub.add_parser("list", help="list data sets, partitions, models, optimizers, "
                       "aggregators, attacks and transforms")
    s.add_argument("kind", nargs="?", default=None, help="one kind (e.g. aggregator)")
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return p


def _list(kind: str | None) -> None:
    from fljax import registry

    kinds = registry.kinds()
    if kind is not None and kind not in kinds:
        raise config_lib.ConfigError(f"fljax list: unknown kind {kind!r}; choose one of "
                                     f"{', '.join(kinds)}")
    for k in ([kind] if kind else kinds):
        print(f"{k}:")
        for name, doc in registry.summary(k):
            print(f"  {name:24s} {doc}")


def _distributed(args) -> None:
    from fljax import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                           args.coordinator_timeout)


def _run(args) -> None:
    from fljax import simulate

    _distributed(args)
    cfg = config_lib.resolve(simulate.DEFAULTS, config_lib.load_file(args.config), args.set)
    if args.resume and not args.out:
        raise config_lib.ConfigError("--resume needs --out DIR of the run to continue")
    out = args.out or _default_out(args.config)
    res = simulate.run(cfg, out, progress=not args.no_progress, resume=args.resume)
    s = res.summary
    import jax

    if jax.process_index() != 0:
        return
    ups = s["client_updates_per_s"]
    acc = s.get("final_main_accuracy")
    acc_text = "nan" if acc is None else f"{acc:.4f}"
    extra = "".join(f", {k[len('final_'):]} {v:.4f}" for k, v in sorted(s.items())
                    if k.startswith("final_") and k.endswith("_accuracy")
                    and k != "final_main_accuracy" and isinstance(v, float))
    print(f"final accuracy {acc_text}{extra} after {s['final_round']} rounds in "
          f"{s['wall_time_s']:.1f}s" + (f" ({ups:.0f} client-updates/s)" if ups else "")
          + (f"; DIVERGED at round {s['diverged_round']}" if s.get("diverged") else "")
          + (f"; peak memory {s['peak_memory_gb']:.2f} GB" if s.get("peak_memory_gb") else "")
          + f"; results in {out}")


def _sweep(args) -> None:
    from fljax import simulate, sweep

    _distributed(args)
    base = config_lib.resolve(simulate.DEFAULTS, config_lib.load_file(args.config), args.set)
    grid = sweep.load_sweep(args.config)
    for g in args.grid:
        key, values = sweep.parse_grid(g)
        grid = sweep.set_axis(grid, key, values)
    if not grid:
        raise config_lib.ConfigError(f"{args.config} defines no get_sweep() and no --grid was "
                                     "given: nothing to sweep (use fljax run for one config)")
    out = args.out or _default_out(args.config, "-sweep")
    sweep.run(simulate.DEFAULTS, base, grid, out, config_path=args.config,
              progress=not args.no_progress)


def _leak(args) -> None:
    from fljax import leak

    cfg = config_lib.resolve(leak.DEFAULTS, config_lib.load_file(args.config), args.set)
    out = args.out or _default_out(args.config)
    summary = leak.run(cfg, out, progress=not args.no_progress)
    for r in summary["runs"]:
        print(f"{r['name']}: PSNR {r['psnr']:.2f} dB (grey {r['psnr_grey']:.2f}, "
              f"mean image {r['psnr_mean']:.2f}), SSIM {r['ssim']:.3f}, "
              f"label accuracy {r['label_accuracy']:.2f}")
    print(f"results in {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "sweep":
            _sweep(args)
        elif args.command == "leak":
            _leak(args)
        else:
            _list(args.kind)
    except config_lib.ConfigError as e:
        if args.debug:
            raise
        print(f"fljax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fljax: interrupted; what finished is on disk (rerun the same command to "
              "continue: `fljax run --resume`; `fljax sweep` skips finished cells and "
              "resumes the others from their checkpoints)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
