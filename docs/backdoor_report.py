"""Tables and curves of a backdoor sweep (``fljax sweep ... --out DIR``) for docs/backdoors.md.

Run:
  python docs/backdoor_report.py runs/sun2019_digits [--img docs/img/sun2019_digits.png]

Reads every finished cell of the sweep (its ``config.json``, its history with
``fljax.sweep.history`` and its second-half averages with ``fljax.sweep.read_results(DIR,
average_after=0.5)``) and prints one markdown table, one row per (attack, defence) over seeds: main
and backdoor accuracy at the last evaluation and averaged over the evaluations of the second half of
training (a backdoor that is planted in the rounds an attacker is sampled and healed in between
swings from one evaluation to the next, so its last value alone is a lottery), and over the
second-half evaluations that follow a round in which an attacker was sampled (``malicious_rows > 0``
since the previous evaluation), as mean ± sample standard deviation over seeds. With ``--img`` it
also draws main and backdoor accuracy against rounds (one panel per attack setting with attackers,
one line per defence, the mean over seeds with a band from the lowest to the highest seed).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from fljax import sweep


def _fmt_kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def defence_label(cfg: dict) -> str:
    agg = cfg["aggregator"]
    kw = {k: v for k, v in (agg.get("kwargs") or {}).items() if k not in ("kernel",)}
    return agg["name"] + (f" ({_fmt_kwargs(kw)})" if kw else "")


def attack_label(cfg: dict) -> str:
    ac = cfg["attack"]
    if ac["name"] == "none":
        return "no attack"
    parts = [ac["name"]] + [c["name"] for c in ac.get("combine") or []]
    if ac["num_malicious"] == 0:
        return f"{' + '.join(parts)}, no attacker"
    return f"{' + '.join(parts)}, {ac['num_malicious']} of {cfg['data']['num_clients']} malicious"


def load(out: str) -> list[dict]:
    """Every finished cell of the sweep in ``out``: its config (``cells/<cell>/config.json``), its
    history (:func:`fljax.sweep.history`) and its metrics averaged over the evaluations of the
    second half of training (:func:`fljax.sweep.read_results` with ``average_after=0.5``)."""
    cells = []
    rows = sweep.read_results(out, average_after=0.5)  # in the order the programs finished
    for row in sorted(rows, key=lambda r: int(r["cell"])):
        with open(os.path.join(out, "cells", f"{int(row['cell']):04d}", "config.json")) as f:
            cfg = json.load(f)
        hist = sweep.history(out, row["cell"])
        if hist:
            cells.append({"cfg": cfg, "hist": hist, "late": row})
    return cells


def _series(hist: list, key: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([h["round"] for h in hist], float)
    v = np.array([np.nan if h.get(key) is None else h[key] for h in hist], float)
    return r, v


def late_mean(cell: dict, key: str) -> float:
    """``key`` averaged over the second half of training (NaN if never recorded)."""
    v = cell["late"].get(key)
    return float(v) if v not in (None, "") else np.nan


def summarise(cell: dict) -> dict:
    hist = cell["hist"]
    last_round = hist[-1]["round"]
    out = {}
    for key in ("main_accuracy", "backdoor_accuracy"):
        r, v = _series(hist, key)
        if np.all(np.isnan(v)):
            continue
        out[key] = v[-1]
        out[key + "_late"] = late_mean(cell, key)
        if key == "backdoor_accuracy":
            _, rows = _series(hist, "malicious_rows")
            hit = (r > last_round / 2) & (np.nan_to_num(rows) > 0)
            out[key + "_attacked"] = np.nanmean(v[hit]) if hit.any() else np.nan
    return out


def _ms(vals: list) -> str:
    vals = np.array([v for v in vals if v is not None and not np.isnan(v)])
    if len(vals) == 0:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{vals.mean():.3f} ± {vals.std(ddof=1):.3f}"


def table(cells: list[dict]) -> str:
    groups: dict = {}
    for c in cells:
        groups.setdefault((attack_label(c["cfg"]), defence_label(c["cfg"])), []).append(c)
    cols = ["main_accuracy", "main_accuracy_late", "backdoor_accuracy", "backdoor_accuracy_late",
            "backdoor_accuracy_attacked"]
    head = ["attack", "defence", "main acc (last)", "main acc (2nd half)",
            "backdoor acc (last)", "backdoor acc (2nd half)",
            "backdoor acc (2nd half, after attacked rounds)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (a, d), cs in groups.items():
        s = [summarise(c) for c in cs]
        row = [a, d] + [_ms([x.get(k) for x in s]) for k in cols] + [str(len(cs))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(cells: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(attack_label(c["cfg"]) for c in cells
                                 if c["cfg"]["attack"]["name"] != "none"
                                 and c["cfg"]["attack"]["num_malicious"] > 0))
    defences = list(dict.fromkeys(defence_label(c["cfg"]) for c in cells))
    fig, axes = plt.subplots(2, len(attacks), figsize=(3.6 * len(attacks), 5.4), dpi=110,
                             squeeze=False, sharex=True, sharey=True)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for j, a in enumerate(attacks):
        for i, key in enumerate(("backdoor_accuracy", "main_accuracy")):
            ax = axes[i, j]
            for k, d in enumerate(defences):
                cs = [c for c in cells if attack_label(c["cfg"]) == a
                      and defence_label(c["cfg"]) == d]
                if not cs:
                    continue
                runs = [_series(c["hist"], key) for c in cs]
                r = runs[0][0]
                v = np.array([x[1] for x in runs if len(x[1]) == len(r)])
                ax.plot(r, np.nanmean(v, 0), color=colors[k % 10], lw=1.1, label=d)
                if len(v) > 1:
                    ax.fill_between(r, np.nanmin(v, 0), np.nanmax(v, 0), color=colors[k % 10],
                                    alpha=0.12, lw=0)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(a, fontsize=8)
            if j == 0:
                ax.set_ylabel(key.replace("_", " "), fontsize=8)
            if i == 1:
                ax.set_xlabel("round", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    ncol = min(len(labels), 4)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def main(description: str = __doc__, tables=None, curves=None):
    """The command line of a report: the sweep's folder, ``--img``, ``--title``
    (``docs/m2m_report.py`` passes its own tables and curves)."""
    tables, curves = tables or table, curves or plot
    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("out", help="the sweep's output folder")
    p.add_argument("--img", default=None, help="write the curves to this PNG")
    p.add_argument("--title", default="")
    args = p.parse_args()
    cells = load(args.out)
    if not cells:
        raise SystemExit(f"no finished cells under {args.out}/cells")
    print(tables(cells))
    if args.img:
        curves(cells, args.img, args.title)
        print(f"\ncurves: {args.img}")


if __name__ == "__main__":
    main()
