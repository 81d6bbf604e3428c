"""Reproduction 2, training side: the test accuracy each leakage defence costs.

Run (after ``fljax leak configs/dlm_defences.py --out results/dlm_defences``):
  python benchmarks/leakage_defences.py --leak results/dlm_defences \
      --out results/dlm_defences

For every defence of ``configs/dlm_defences.py`` it runs FedAvg on digits with
``fljax.simulate.run`` (100 clients, Dirichlet(0.5), 10 per round, the same
sigmoid MLP, local SGD lr 0.1) with the defence as a ``client_transforms``
entry, i.e. the very transform the leakage experiment put in front of the
attack (per-tensor defences get the model's tensor shapes). It writes
``defences.csv`` / ``defences.md`` (PSNR, SSIM, label accuracy of DLM+ beside
the final test accuracy) and ``defences.png`` (PSNR and accuracy against
strength, one panel per defence family).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os

import jax

from fljax import config as config_lib
from fljax import simulate, transforms
from fljax.models import get_model


def _load_module(path):
    spec = importlib.util.spec_from_file_location("dlm_defences", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train_accuracy(mod, defences, rounds: int, seed: int = 0) -> float:
    model = get_model(mod.MODEL["name"], (8, 8, 1), 10, **mod.MODEL["kwargs"])
    shapes = transforms.tensor_shapes(model.init(jax.random.PRNGKey(0)))
    tfs = []
    for d in defences:
        kw = dict(d["kwargs"])
        if d["name"] in ("row_noise", "prune", "quantize"):
            kw["shapes"] = [list(s) for s in shapes]
        tfs.append({"name": d["name"], "kwargs": kw})
    cfg = config_lib.resolve(simulate.DEFAULTS, {
        "seed": seed, "rounds": rounds, "eval_every": rounds, "clients_per_round": 10,
        "data": {"name": "digits", "num_clients": 100, "partition": "dirichlet",
                 "partition_kwargs": {"alpha": 0.5}},
        "model": mod.MODEL,
        "client": {"optimizer": "sgd", "learning_rate": mod.LR, "batch_size": 8, "epochs": 2},
        "client_transforms": tfs,
    })
    res = simulate.run(cfg, None, progress=False, log=None)
    return float(res.summary["final_main_accuracy"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/dlm_defences.py")
    p.add_argument("--leak", default="results/dlm_defences",
                   help="output folder of the fljax leak run (summary.json)")
    p.add_argument("--out", default="results/dlm_defences")
    p.add_argument("--rounds", type=int, default=100)
    args = p.parse_args(argv)
    mod = _load_module(args.config)
    with open(os.path.join(args.leak, "summary.json")) as f:
        leak_runs = {r["name"]: r for r in json.load(f)["runs"]}
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for label, family, strength, defences in mod.defence_grid():
        acc = train_accuracy(mod, defences, args.rounds)
        lk = leak_runs.get(f"DLM+ | {label}", {})
        dlg = leak_runs.get(f"DLG grad | {label}", {})
        row = {"defence": label, "family": family, "strength": strength,
               "test_accuracy": acc,
               "dlm_plus_psnr": lk.get("psnr"), "dlm_plus_ssim": lk.get("ssim"),
               "dlm_plus_label_accuracy": lk.get("label_accuracy"),
               "dlm_plus_frac_beats_baselines": lk.get("frac_beats_baselines"),
               "psnr_mean_baseline": lk.get("psnr_mean"), "psnr_grey_baseline": lk.get("psnr_grey"),
               "dlg_grad_psnr": dlg.get("psnr")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "defences.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    with open(os.path.join(args.out, "defences.md"), "w") as f:
        f.write("| defence | DLM+ PSNR | DLM+ SSIM | DLM+ label acc | beats baselines | "
                "DLG(grad) PSNR | FL test acc |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['defence']} | {fmt(r['dlm_plus_psnr'])} | {fmt(r['dlm_plus_ssim'])} | "
                    f"{fmt(r['dlm_plus_label_accuracy'])} | "
                    f"{fmt(r['dlm_plus_frac_beats_baselines'])} | {fmt(r['dlg_grad_psnr'])} | "
                    f"{fmt(r['test_accuracy'])} |\n")
    _plot(rows, os.path.join(args.out, "defences.png"))


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]
    fams = ["row_noise_gaussian", "row_noise_laplace", "prune", "quantize"]
    fig, axes = plt.subplots(1, len(fams), figsize=(4 * len(fams), 3.2))
    for ax, fam in zip(axes, fams):
        rs = [r for r in rows if r["family"] == fam]
        xs = [r["strength"] for r in rs]
        ax.plot(xs, [r["dlm_plus_psnr"] for r in rs], "o-", label="DLM+ PSNR")
        if fam == "prune":
            ax.plot(xs, [r["dlg_grad_psnr"] for r in rs], "s--", label="DLG (grad) PSNR")
        ax.axhline(base["psnr_mean_baseline"], color="gray", ls=":", label="mean-image PSNR")
        ax.axhline(base["psnr_grey_baseline"], color="k", ls=":", label="grey PSNR")
        ax.set_ylabel("PSNR (dB)")
        if fam.startswith("row_noise"):
            ax.set_xscale("log")
        ax.set_xlabel({"prune": "pruned %", "quantize": "bits"}.get(fam, "noise scale s"))
        ax2 = ax.twinx()
        ax2.plot(xs, [r["test_accuracy"] for r in rs], "^-", color="tab:red",
                 label="FL test acc")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("test accuracy", color="tab:red")
        ax.set_title(fam, fontsize=9)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
