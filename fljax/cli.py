"""The ``fljax`` command.

  fljax run CONFIG [--set key=value ...] [--out DIR] [--resume] [--no-progress]
  fljax leak CONFIG [--set key=value ...] [--out DIR]

CONFIG is a Python file with ``get_config()``. ``--set`` overrides any field by
its dotted name (``--set aggregator.name=krum --set client.learning_rate=0.05``).
Bad configs fail before any work with one line naming the field.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from fljax import config as config_lib


def _default_out(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fljax", description="Federated-learning security "
                                "simulator on JAX.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [("run", "run a federated training"),
                        ("leak", "run data-leakage (reconstruction) attacks")]:
        s = sub.add_parser(name, help=help_)
        s.add_argument("config", help="a Python file defining get_config()")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field by its dotted name (repeatable)")
        s.add_argument("--out", default=None, help="output folder (default runs/<config>-<time>)")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "run":
            s.add_argument("--resume", action="store_true",
                           help="continue from DIR/checkpoint.msgpack (needs --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from fljax import simulate

            cfg = config_lib.resolve(simulate.DEFAULTS, config_lib.load_file(args.config),
                                     args.set)
            if args.resume and not args.out:
                raise config_lib.ConfigError("--resume needs --out DIR of the run to continue")
            out = args.out or _default_out(args.config)
            res = simulate.run(cfg, out, progress=not args.no_progress, resume=args.resume)
            s = res.summary
            ups = s["client_updates_per_s"]
            print(f"final accuracy {s['final_main_accuracy']:.4f} after {s['final_round']} "
                  f"rounds in {s['wall_time_s']:.1f}s"
                  + (f" ({ups:.0f} client-updates/s)" if ups else "") + f"; results in {out}")
        else:
            from fljax import leak

            cfg = config_lib.resolve(leak.DEFAULTS, config_lib.load_file(args.config), args.set)
            out = args.out or _default_out(args.config)
            summary = leak.run(cfg, out, progress=not args.no_progress)
            for r in summary["runs"]:
                print(f"{r['name']}: PSNR {r['psnr']:.2f} dB (grey {r['psnr_grey']:.2f}, "
                      f"mean image {r['psnr_mean']:.2f}), SSIM {r['ssim']:.3f}, "
                      f"label accuracy {r['label_accuracy']:.2f}")
            print(f"results in {out}")
    except config_lib.ConfigError as e:
        print(f"fljax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
