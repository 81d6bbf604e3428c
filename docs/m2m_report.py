"""Tables and curves of the multi-label sweep (configs/m2m_digits.py) for docs/backdoors.md.

Run:
  python docs/m2m_report.py runs/m2m_digits [--img docs/img/m2m_digits.png]

Reads every finished cell of the sweep (as docs/backdoor_report.py does: ``fljax.sweep.history`` and
``fljax.sweep.read_results(DIR, average_after=0.5)``) and prints four markdown tables over seeds
(mean ± sample standard deviation), each value averaged over the evaluations of the second half of
training unless marked: the mean backdoor accuracy per attack setting and defence (also at the last
evaluation); each attacker's own backdoor accuracy (``backdoor_accuracy_<g>``: its trigger to its
target) and their mean; the main accuracy. With ``--img`` it draws, per attack setting, each
attacker's backdoor accuracy against rounds under the plain mean (top), the mean backdoor accuracy
per defence (middle) and the main accuracy per defence (bottom); lines are the mean over seeds,
bands the lowest to the highest seed.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from backdoor_report import _ms, _series, defence_label, late_mean  # noqa: E402
from backdoor_report import main as report_main  # noqa: E402


def setting(cfg: dict) -> str:
    """``'m2m x4'``, ``'badnets x4 (same patch)'``, ``'badnets x1 (SBA)'``; M2M with the
    paper's 50 outer search steps (the reduction check) is ``'m2m x4 (paper's search)'``."""
    ac = cfg["attack"]
    kw = ac.get("kwargs") or {}
    g = kw.get("num_attackers", 1)
    name = ac["name"]
    if ac["num_malicious"] == 0:
        return f"{name}, no attacker"
    if g == 1:
        return f"{name} x1 (SBA)"
    if name == "badnets":
        loc = kw.get("location", [-1, -1])
        same = len(loc) == 2 and all(isinstance(v, int) for v in loc)
        return f"{name} x{g} ({'same patch' if same else 'own corners'})"
    if name == "m2m" and kw.get("outer_steps", 50) == 50:
        return f"{name} x{g} (paper's search)"
    return f"{name} x{g}"


def last_value(cell: dict, key: str) -> float:
    v = cell["hist"][-1].get(key)
    return np.nan if v is None else float(v)


def groups(cells: list[dict]) -> dict:
    out: dict = {}
    for c in cells:
        out.setdefault((setting(c["cfg"]), defence_label(c["cfg"])), []).append(c)
    return out


def num_attackers(cells: list[dict]) -> int:
    return (cells[0]["cfg"]["attack"].get("kwargs") or {}).get("num_attackers", 1)


def tables(cells: list[dict]) -> str:
    g = groups(cells)
    settings = list(dict.fromkeys(s for s, _ in g))
    defences = list(dict.fromkeys(d for _, d in g))
    out = []
    for key, how, title in (
            ("backdoor_accuracy", late_mean, "Mean backdoor accuracy over attackers, second half"),
            ("backdoor_accuracy", last_value,
             "Mean backdoor accuracy over attackers, last evaluation"),
            ("main_accuracy", late_mean, "Main accuracy, second half")):
        lines = [f"**{title}**", "", "| defence | " + " | ".join(settings) + " |",
                 "|" + "---|" * (len(settings) + 1)]
        for d in defences:
            row = [_ms([how(c, key) for c in g.get((s, d), [])]) for s in settings]
            lines.append(f"| {d} | " + " | ".join(row) + " |")
        out.append("\n".join(lines))
    lines = ["**Each attacker's backdoor accuracy (its trigger to its target), second half**", ""]
    multi = [(s, d) for (s, d), cs in g.items() if num_attackers(cs) > 1]
    if multi:
        n = max(num_attackers(g[k]) for k in multi)
        lines += ["| attack | defence | " + " | ".join(f"attacker {i}" for i in range(n))
                  + " | mean |", "|" + "---|" * (n + 3)]
        for s, d in multi:
            cs = g[(s, d)]
            row = [_ms([late_mean(c, f"backdoor_accuracy_{i}") for c in cs])
                   for i in range(n)]
            row.append(_ms([late_mean(c, "backdoor_accuracy") for c in cs]))
            lines.append(f"| {s} | {d} | " + " | ".join(row) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def _band(ax, runs, color, label, lw=1.1):
    r = runs[0][0]
    v = np.array([x[1] for x in runs if len(x[1]) == len(r)])
    ax.plot(r, np.nanmean(v, 0), color=color, lw=lw, label=label)
    if len(v) > 1:
        ax.fill_between(r, np.nanmin(v, 0), np.nanmax(v, 0), color=color, alpha=0.12, lw=0)


def plot(cells: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = groups(cells)
    settings = [s for s in dict.fromkeys(s for s, _ in g) if "no attacker" not in s]
    defences = list(dict.fromkeys(d for _, d in g))
    fig, axes = plt.subplots(3, len(settings), figsize=(3.3 * len(settings), 7.6), dpi=110,
                             squeeze=False, sharex=True, sharey=True)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for j, s in enumerate(settings):
        plain = g.get((s, defences[0]), [])
        if plain:
            n = num_attackers(plain)
            keys = ["backdoor_accuracy"] if n == 1 else [f"backdoor_accuracy_{i}"
                                                         for i in range(n)]
            for i, key in enumerate(keys):
                _band(axes[0, j], [_series(c["hist"], key) for c in plain], colors[i],
                      f"attacker {i}")
        for k, d in enumerate(defences):
            cs = g.get((s, d), [])
            if cs:
                _band(axes[1, j], [_series(c["hist"], "backdoor_accuracy") for c in cs],
                      colors[k], d)
                _band(axes[2, j], [_series(c["hist"], "main_accuracy") for c in cs],
                      colors[k], d)
        axes[0, j].set_title(s, fontsize=8)
        axes[2, j].set_xlabel("round", fontsize=8)
    for i, lab in enumerate((f"each attacker ({defences[0]})", "mean backdoor acc",
                             "main accuracy")):
        axes[i, 0].set_ylabel(lab, fontsize=8)
    for ax in axes.flat:
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6, frameon=False)
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    report_main(__doc__, tables, plot)
