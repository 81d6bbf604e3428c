"""Writing results: valid JSON (NaN and inf as ``null``), atomic files, plots."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np


def clean(obj: Any) -> Any:
    """A JSON-ready copy: arrays to lists, NaN / inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return clean(arr.tolist()) if arr.ndim else clean(arr.item())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` that never writes a bare ``NaN`` or ``Infinity``."""
    return json.dumps(clean(obj), allow_nan=False, **kwargs)


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(dumps(obj, indent=2))
    os.replace(tmp, path)


def append_jsonl(path: str, obj: Any) -> None:
    with open(path, "a") as f:
        f.write(dumps(obj) + "\n")
        f.flush()


def read_jsonl(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def prepare_out_dir(out_dir: str) -> str:
    """Creates ``out_dir`` and checks it is a writable folder, with a clear error."""
    from fljax.config import ConfigError

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out_dir!r} is a file, not a folder; pass a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
        # A probe of its own name (several processes of one run check the same
        # folder at once: a shared name was removed by one under another).
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ConfigError(f"output folder {out_dir!r} is not writable ({e.strerror}); pass "
                          "--out with a folder you can write to") from None
    return out_dir


def plot_history(history: list, path: str, title: str = "") -> None:
    """Saves test accuracy (and any ``*_accuracy`` metric an attack adds,
    e.g. backdoor accuracy) against rounds as a PNG."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays its own

    fig = Figure(figsize=(5, 3.2), dpi=120)
    ax = fig.subplots()
    rounds = [h["round"] for h in history]
    names = ["main_accuracy"] + sorted({k for h in history for k in h
                                        if k.endswith("_accuracy") and k != "main_accuracy"
                                        and not k.startswith("backdoor_accuracy_")})
    for name in names:
        vals = [h.get(name) for h in history]
        vals = [np.nan if v is None else v for v in vals]
        ax.plot(rounds, vals, marker="o", ms=3, label=name.replace("_", " "))
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(names) > 1:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
