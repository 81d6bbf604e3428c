"""``fljax leak``: run data-leakage attacks on simulated victims and score them.

A leakage experiment is a config (a nested dict, see :data:`DEFAULTS`) with a
list of attack *runs*. Each run fixes a model (shared by all victims, as the
server's global model), how the victims train (gradient, or the weight
difference after ``local_steps`` SGD steps of an unknown ``lr``), the
client-side defences applied to every victim's update, and an attack with its
keyword arguments. All victims of a run are attacked in ONE jit-compiled,
vmapped call (restarts are vmapped inside).

Outputs in ``out_dir`` (written as the runs finish):

* ``summary.json``: for every run its name and settings, the mean over victims
  of ``psnr``, ``ssim``, ``mse`` and ``label_accuracy``, the baselines
  ``psnr_grey`` / ``psnr_mean`` (and their SSIMs), the fraction of images that
  beat both baselines, the learned ``k`` (DLM) beside ``1/(lr*local_steps)``,
  and timings.
* ``metrics.csv``: one row per victim image.
* ``grid_<i>_<name>.png`` per run and ``grid.png`` for all runs: originals on
  top, reconstructions below.

Every field is checked by :func:`validate` before any work (no data loaded
for an attack, no folder created): a bad value in the last run fails before
the first runs, with one :class:`fljax.config.ConfigError` line naming the
field, the value and what is allowed.

Run it as ``fljax leak CONFIG [--set k=v ...] [--out DIR]``, or from Python::

  cfg = config.resolve(leak.DEFAULTS, config.load_file('configs/dlm_digits.py'))
  summary = leak.run(cfg, 'results/dlm_digits')
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fljax import config as config_lib
from fljax import transforms as transforms_lib
from fljax.attacks import leakage
from fljax.models import MODELS, get_model

OPEN = config_lib.OPEN

# One run's settings; every entry of ``runs`` is merged onto these (taken from
# the top level of the config), so a run states only what it changes.
RUN_DEFAULTS: dict[str, Any] = {
    "name": "",
    "model": {"name": "mlp", "kwargs": {OPEN: True}, "init": "uniform", "init_scale": 0.5,
              "seed": 0},
    "victim": {"observe": "delta", "lr": 0.1, "local_steps": 1},
    "defences": [],  # [{"name": transform name, "kwargs": {...}}], applied in order
    "attack": {"name": "dlm_plus", "kwargs": {OPEN: True}},
}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "num_victims": 16, "batch_size": 1, "offset": 0},
    **copy.deepcopy(RUN_DEFAULTS),
    "runs": [],  # list of dicts shaped like RUN_DEFAULTS (partial); empty: one run
    "grid": {"max_images": 16},
}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The whole digits set: ``x float32[N, 8, 8, 1]`` in [0, 1], ``y int32[N]``.

    Uses :func:`fljax.data.digits` (train and test splits put back together).
    """
    from fljax import data as data_lib

    xtr, ytr, xte, yte, _ = data_lib.digits()
    x = np.concatenate([np.asarray(xtr), np.asarray(xte)]).astype(np.float32)
    y = np.concatenate([np.asarray(ytr), np.asarray(yte)]).astype(np.int32)
    return x, y


def _load_data(name: str):
    if name == "digits":
        return load_digits()
    raise config_lib.ConfigError(f"config field 'data.name' = {name!r} is not known; "
                                 "allowed values: digits")


def select_victims(x: np.ndarray, y: np.ndarray, num_victims: int, batch_size: int,
                   seed: int, offset: int = 0):
    """Draws ``num_victims`` batches of ``batch_size`` distinct examples.

    Returns ``x float32[V, B, ...]`` and ``y int32[V, B]``.
    """
    _check_victims(len(x), num_victims, batch_size, offset)
    perm = np.random.default_rng(seed).permutation(len(x))
    idx = perm[offset:offset + num_victims * batch_size]
    idx = idx.reshape(num_victims, batch_size)
    return x[idx], y[idx]


def _bad(path: str, value: Any, allowed: str) -> config_lib.ConfigError:
    return config_lib.ConfigError(f"config field '{path}' = {value!r} is not allowed; "
                                  f"allowed: {allowed}")


def _int_at_least(path: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(path, value, f"an integer >= {low}")


def _positive(path: str, value: Any) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not np.isfinite(value) or value <= 0):
        raise _bad(path, value, "a finite number > 0")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _check_victims(num_examples: int, num_victims: int, batch_size: int, offset: int) -> None:
    _int_at_least("data.num_victims", num_victims, 1)
    _int_at_least("data.batch_size", batch_size, 1)
    _int_at_least("data.offset", offset, 0)
    if offset + num_victims * batch_size > num_examples:
        raise config_lib.ConfigError(
            f"config fields 'data.num_victims' = {num_victims}, 'data.batch_size' = {batch_size} "
            f"and 'data.offset' = {offset} need {offset + num_victims * batch_size} examples; "
            f"allowed: offset + num_victims * batch_size <= {num_examples} (the data set's size)")


def _check_out_dir(out_dir: str) -> None:
    """``out_dir`` must be a folder or creatable as one (checked without creating it)."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise config_lib.ConfigError(f"--out {out_dir!r} is a file; allowed: a folder "
                                     "(existing or new)")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise config_lib.ConfigError(f"--out {out_dir!r} lies under the file {parent!r}; "
                                     "allowed: a folder (existing or new)")
    if not os.access(parent, os.W_OK):
        raise config_lib.ConfigError(f"--out {out_dir!r}: {parent!r} is not writable")


def validate(cfg: dict, out_dir: str | None = None) -> list[dict]:
    """Checks every field of a resolved config (and ``out_dir``); returns the expanded runs.

    Nothing is trained or attacked: each run's model, defences and attack are
    only *built* (closures), which is where their keyword arguments are checked.
    Raises a one-line :class:`fljax.config.ConfigError` naming the first bad
    field, its value and what is allowed.
    """
    if out_dir is not None:
        _check_out_dir(out_dir)
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int):
        raise _bad("seed", cfg.get("seed"), "an integer")
    d = cfg["data"]
    config_lib.choice("data.name", d["name"], ("digits",))
    _int_at_least("grid.max_images", cfg["grid"]["max_images"], 1)
    x_all, y_all = _load_data(d["name"])
    _check_victims(len(x_all), d["num_victims"], d["batch_size"], d["offset"])
    input_shape, num_classes = x_all.shape[1:], int(y_all.max()) + 1
    runs = expand_runs(cfg)
    raw = cfg.get("runs") or []
    for i, r in enumerate(runs):
        def field(dotted, i=i):  # where the value came from: the run or the top level
            node = raw[i] if i < len(raw) else {}
            for k in dotted.split("."):
                if not isinstance(node, dict) or k not in node:
                    return dotted
                node = node[k]
            return f"runs[{i}].{dotted}"

        m, v = r["model"], r["victim"]
        config_lib.choice(field("model.name"), m["name"], MODELS)
        config_lib.choice(field("model.init"), m["init"], ("uniform", "default"))
        _positive(field("model.init_scale"), m["init_scale"])
        if isinstance(m["seed"], bool) or not isinstance(m["seed"], int):
            raise _bad(field("model.seed"), m["seed"], "an integer")
        _positive(field("victim.lr"), v["lr"])
        _int_at_least(field("victim.local_steps"), v["local_steps"], 1)
        try:
            model = get_model(m["name"], input_shape, num_classes, **m["kwargs"])
        except (TypeError, ValueError) as e:
            raise _bad(field("model.kwargs"), m["kwargs"],
                       f"keyword arguments of model {m['name']!r} ({_one_line(e)})") from None
        for j, dfn in enumerate(r["defences"]):
            kwargs = dfn.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise _bad(f"{field('defences')}[{j}].kwargs", kwargs, "a dict")
            try:
                transforms_lib.get_transform(dfn["name"], **kwargs)
            except (TypeError, ValueError) as e:
                raise _bad(f"{field('defences')}[{j}].kwargs", kwargs,
                           f"keyword arguments of {dfn['name']!r} ({_one_line(e)})") from None
        a = r["attack"]
        try:
            leakage.get_attack(a["name"], model, batch_size=d["batch_size"], **a["kwargs"])
        except (TypeError, ValueError) as e:
            raise _bad(field("attack.kwargs"), a["kwargs"],
                       f"keyword arguments of attack {a['name']!r} ({_one_line(e)})") from None
    return runs


def expand_runs(cfg: dict) -> list[dict]:
    """The config's runs, each merged onto the top-level run settings and validated."""
    base = {k: copy.deepcopy(cfg[k]) for k in RUN_DEFAULTS}
    schema = copy.deepcopy(RUN_DEFAULTS)
    schema["model"]["kwargs"] = {OPEN: True}
    schema["attack"]["kwargs"] = {OPEN: True}
    base_open = config_lib.merge(schema, _reopen_kwargs(base))
    runs = cfg.get("runs") or [{}]
    out = []
    for i, r in enumerate(runs):
        merged = config_lib.merge(_reopen_kwargs(base_open), r, prefix=f"runs[{i}].")
        merged = config_lib._strip_open(merged)  # noqa: SLF001  (same package family)
        for j, d in enumerate(merged["defences"]):
            if not isinstance(d, dict) or "name" not in d:
                raise config_lib.ConfigError(
                    f"runs[{i}].defences[{j}] must be a dict with 'name' (and 'kwargs')")
            config_lib.choice(f"runs[{i}].defences[{j}].name", d["name"],
                              transforms_lib.TRANSFORMS)
        config_lib.choice(f"runs[{i}].attack.name", merged["attack"]["name"], leakage.ATTACKS)
        config_lib.choice(f"runs[{i}].victim.observe", merged["victim"]["observe"],
                          ("gradient", "delta"))
        if not merged["name"]:
            merged["name"] = _default_name(merged)
        out.append(merged)
    return out


def _reopen_kwargs(run: dict) -> dict:
    run = copy.deepcopy(run)
    for sec in ("model", "attack"):
        if isinstance(run.get(sec), dict) and isinstance(run[sec].get("kwargs"), dict):
            run[sec]["kwargs"] = {**run[sec]["kwargs"], OPEN: True}
    return run


def _default_name(run: dict) -> str:
    v = run["victim"]
    name = f"{run['attack']['name']}/{run['model']['name']}/{v['observe']}"
    if v["observe"] == "delta":
        name += f"/lr{v['lr']:g}x{v['local_steps']}"
    for d in run["defences"]:
        kw = ",".join(f"{k}={val}" for k, val in sorted(d.get("kwargs", {}).items()))
        name += f"/{d['name']}({kw})"
    return name


def _slug(name: str) -> str:
    name = name.replace("+", "plus")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80]


def build_defence(defences: list[dict], params) -> transforms_lib.Transform:
    """Chains the run's defences (per-tensor ones get the params' tensor shapes)."""
    shapes = transforms_lib.tensor_shapes(params)
    ts = [transforms_lib.get_transform(d["name"], shapes=shapes, **d.get("kwargs", {}))
          for d in defences]
    return transforms_lib.chain(*ts) if ts else transforms_lib.identity()


def attack_one_run(run: dict, x: np.ndarray, y: np.ndarray, seed: int,
                   num_classes: int = 10) -> dict:
    """Simulates the victims of one run, defends their updates and attacks them.

    Args:
      run: one expanded run (see :func:`expand_runs`).
      x: ``float32[V, B, *input_shape]`` victims' data in [0, 1].
      y: ``int32[V, B]`` their labels.
      seed: the experiment seed.
      num_classes: the data set's number of classes.

    Returns:
      A dict with the reconstruction (``x``, ``labels``, ``k``, ``loss``) as
      NumPy arrays and timings.
    """
    input_shape = x.shape[2:]
    m = run["model"]
    model = get_model(m["name"], input_shape, num_classes, **m["kwargs"])
    k_model = jax.random.PRNGKey(m["seed"])
    params = model.init(k_model)
    if m["init"] == "uniform":
        params = leakage.observe.uniform_init(params, jax.random.fold_in(k_model, 1),
                                              m["init_scale"])
    elif m["init"] != "default":  # validate() rejects it first
        raise config_lib.ConfigError(f"config field 'model.init' = {m['init']!r} is not "
                                     "allowed; allowed: default, uniform")

    v = run["victim"]
    num_victims = x.shape[0]
    key = jax.random.PRNGKey(seed)
    k_def, k_att = jax.random.split(key)

    defence = build_defence(run["defences"], params)
    _, unravel = ravel_pytree(params)

    @jax.jit
    def observe_all(xs, ys, keys):
        def one(xv, yv, kv):
            obs = leakage.observe.observe(model, params, xv, yv, kind=v["observe"],
                                          lr=v["lr"], local_steps=v["local_steps"])
            flat, _ = ravel_pytree(obs)
            return unravel(defence(flat, kv))
        return jax.vmap(one)(xs, ys, keys)

    xs, ys = jnp.asarray(x), jnp.asarray(y)
    observed = observe_all(xs, ys, jax.random.split(k_def, num_victims))

    a = run["attack"]
    attack = leakage.get_attack(a["name"], model, batch_size=x.shape[1], **a["kwargs"])
    fn = leakage.reconstruct_many(attack)
    keys = jax.random.split(k_att, num_victims)
    t0 = time.perf_counter()
    compiled = fn.lower(params, observed, keys, ys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = jax.block_until_ready(compiled(params, observed, keys, ys))
    attack_s = time.perf_counter() - t0
    return {"x": np.asarray(rec.x), "labels": np.asarray(rec.labels), "k": np.asarray(rec.k),
            "loss": np.asarray(rec.loss), "num_resets": np.asarray(rec.num_resets),
            "compile_s": compile_s, "attack_s": attack_s}


_CSV_FIELDS = ["run", "name", "attack", "victim", "image", "true_label", "label", "mse", "psnr",
               "ssim", "psnr_grey", "psnr_mean", "ssim_grey", "ssim_mean", "k", "loss"]


def _save_grid(path: str, originals: np.ndarray, rows: list[tuple[str, np.ndarray]],
               max_images: int) -> None:
    """Originals in the top row, one row of reconstructions per entry of ``rows``."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays its own

    orig = originals.reshape((-1,) + originals.shape[2:])[:max_images]
    n = orig.shape[0]
    all_rows = [("original", orig)] + [(name, r.reshape((-1,) + r.shape[2:])[:n])
                                       for name, r in rows]
    fig = Figure(figsize=(0.9 * n + 2.2, 0.95 * len(all_rows)))
    axes = fig.subplots(len(all_rows), n, squeeze=False)
    for i, (name, imgs) in enumerate(all_rows):
        for j in range(n):
            ax = axes[i, j]
            img = np.clip(imgs[j], 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _mean(a) -> float:
    return float(np.mean(a))


def run(cfg: dict, out_dir: str, progress: bool = True) -> dict:
    """Runs every attack run of a resolved config and writes the results.

    Args:
      cfg: a config resolved against :data:`DEFAULTS` (``config.resolve``).
      out_dir: output directory (created once every field is valid).
      progress: show a tqdm bar over the runs.

    Returns:
      The summary dict written to ``summary.json``.

    Raises:
      fljax.config.ConfigError: a bad field (see :func:`validate`), before any work.
    """
    from tqdm.auto import tqdm

    runs = validate(cfg, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    d = cfg["data"]
    x_all, y_all = _load_data(d["name"])
    x, y = select_victims(x_all, y_all, d["num_victims"], d["batch_size"], cfg["seed"],
                          d["offset"])
    mean_image = x_all.mean(axis=0)
    num_classes = int(y_all.max()) + 1
    summary: dict[str, Any] = {"config": cfg, "num_victims": int(x.shape[0]),
                               "batch_size": int(x.shape[1]), "runs": []}
    csv_path = os.path.join(out_dir, "metrics.csv")
    with open(csv_path, "w", newline="") as f:
        csv.DictWriter(f, _CSV_FIELDS).writeheader()
    grid_rows = []
    bar = tqdm(runs, desc="leak", disable=not progress)
    for i, r in enumerate(bar):
        bar.set_postfix_str(r["name"][:40])
        res = attack_one_run(r, x, y, cfg["seed"], num_classes)
        s = leakage.metrics.score(x, res["x"], y, res["labels"], mean_image)
        beats = (s["psnr"] > s["psnr_grey"]) & (s["psnr"] > s["psnr_mean"])
        v = r["victim"]
        entry = {
            "name": r["name"],
            "attack": r["attack"]["name"],
            "model": r["model"]["name"],
            "observe": v["observe"],
            "lr": v["lr"],
            "local_steps": v["local_steps"],
            "defences": r["defences"],
            "attack_kwargs": r["attack"]["kwargs"],
            "psnr": _mean(s["psnr"]),
            "ssim": _mean(s["ssim"]),
            "mse": _mean(s["mse"]),
            "label_accuracy": _mean(s["label_correct"]),
            "psnr_grey": _mean(s["psnr_grey"]),
            "psnr_mean": _mean(s["psnr_mean"]),
            "ssim_grey": _mean(s["ssim_grey"]),
            "ssim_mean": _mean(s["ssim_mean"]),
            "psnr_median": float(np.median(s["psnr"])),
            "frac_beats_baselines": _mean(beats),
            "k": _mean(res["k"]),
            "k_median": float(np.median(res["k"])),
            "k_expected": (1.0 / (v["lr"] * v["local_steps"])) if v["observe"] == "delta"
            else 1.0,
            "loss": _mean(res["loss"]),
            "num_resets": int(np.sum(res["num_resets"])),
            "compile_s": res["compile_s"],
            "attack_s": res["attack_s"],
            "reconstructions_per_s": float(x.shape[0] / max(res["attack_s"], 1e-9)),
        }
        summary["runs"].append(entry)
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, _CSV_FIELDS)
            for vi in range(x.shape[0]):
                for b in range(x.shape[1]):
                    w.writerow({"run": i, "name": r["name"], "attack": r["attack"]["name"],
                                "victim": vi, "image": b, "true_label": int(y[vi, b]),
                                "label": int(res["labels"][vi, b]),
                                **{k: f"{float(s[k][vi, b]):.6g}" for k in
                                   ("mse", "psnr", "ssim", "psnr_grey", "psnr_mean",
                                    "ssim_grey", "ssim_mean")},
                                "k": f"{float(res['k'][vi]):.6g}",
                                "loss": f"{float(res['loss'][vi]):.6g}"})
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        _save_grid(os.path.join(out_dir, f"grid_{i:02d}_{_slug(r['name'])}.png"), x,
                   [(r["name"], res["x"])], cfg["grid"]["max_images"])
        grid_rows.append((r["name"], res["x"]))
        _save_grid(os.path.join(out_dir, "grid.png"), x, grid_rows, cfg["grid"]["max_images"])
    return summary
