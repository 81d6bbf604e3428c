"""``fljax sweep``: a grid of configs, cells that share a spec run as ONE program.

The grid is the config file's optional ``get_sweep()`` (a dict from a dotted
key to a list of values; a value may be a dict, e.g. a whole ``aggregator``
entry; or a list of such dicts, whose products are joined) updated by
``--grid KEY=V1,V2,...`` (which replaces the file's list for that key). Every
cell of the Cartesian product is a config; cells whose
:class:`~fljax.plan.Spec` (and data, rounds, evaluation schedule) agree form a
group that runs as one jitted program vmapped over a cell axis (seeds,
learning rates, strengths, malicious masks vary inside it). Groups run one
after another; a group too large for memory is split.

Outputs in ``DIR``:

* ``results.csv``: one row per cell, appended as each group finishes:
  ``cell``, each grid key by its dotted name, ``aggregator``, ``attack``,
  ``seed``, ``rounds`` (where not grid keys), the last evaluation's metrics
  (``main_accuracy``, ``main_loss``, what the attack adds, the round
  diagnostics), ``diverged``, ``seconds``;
* ``results.md``: the same table with means and spreads over seeds;
* ``heatmap_<metric>.png``: each metric over the two grid keys with most values;
* ``cells/<cell>/metrics.jsonl`` (and ``config.json``) for every cell;
* ``sweep.json``: what the results belong to. Re-running the same command
  skips finished cells; a folder holding another sweep's results is refused.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import itertools
import json
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fljax import config as config_lib
from fljax import plan as plan_lib
from fljax import results as results_lib
from fljax import simulate
from fljax.config import ConfigError


def parse_grid(assignment: str) -> tuple[str, list]:
    """``'KEY=V1,V2,...'`` -> ``(KEY, [V1, V2, ...])`` (values parsed as literals)."""
    if "=" not in assignment:
        raise ConfigError(f"--grid expects KEY=V1,V2,..., got {assignment!r}")
    key, text = assignment.split("=", 1)
    key = key.strip()
    try:
        values = ast.literal_eval("[" + text + "]")
    except (ValueError, SyntaxError):
        values = [config_lib.parse_value(t) for t in text.split(",")]
    if not values:
        raise ConfigError(f"--grid {key}: the list of values is empty")
    return key, list(values)


def load_sweep(path: str):
    """The config file's ``get_sweep()``: a dict (one grid) or a list of dicts
    (several grids whose cells are joined); ``{}`` if it has none."""
    import importlib.util

    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"fljax_sweep_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        return {}
    grid = module.get_sweep()
    if isinstance(grid, dict):
        return dict(grid)
    if isinstance(grid, (list, tuple)) and grid and all(isinstance(g, dict) for g in grid):
        return [dict(g) for g in grid]
    raise ConfigError(f"{path}: get_sweep() must return a dict from dotted key to a list of "
                      f"values, or a list of such dicts; got {type(grid).__name__}")


def set_axis(grid, key: str, values: list):
    """``grid`` with ``key``'s values replaced (in every sub-grid that has the
    key; added to all when none has it)."""
    grids = [dict(g) for g in (grid if isinstance(grid, list) else [grid])]
    if not any(key in g for g in grids):
        for g in grids:
            g[key] = values
    for g in grids:
        if key in g:
            g[key] = values
    return grids if isinstance(grid, list) else grids[0]


def grid_keys(grid) -> list[str]:
    keys: list = []
    for g in (grid if isinstance(grid, list) else [grid]):
        keys += [k for k in g if k not in keys]
    return keys


class Cell(NamedTuple):
    index: int
    values: dict  # grid key -> value
    cfg: dict


def expand(defaults: dict, base: dict, grid) -> list[Cell]:
    """Every cell of the grid (or of each grid of a list), each a resolved,
    validated config."""
    grids = grid if isinstance(grid, list) else [grid]
    cells = []
    for g in grids:
        for key, values in g.items():
            if not isinstance(values, (list, tuple)):
                raise ConfigError(f"grid key '{key}': values must be a list, got {values!r}")
            if len(values) == 0:
                raise ConfigError(f"grid key '{key}': the list of values is empty")
        keys = list(g)
        for combo in itertools.product(*(g[k] for k in keys)):
            cfg = base
            for key, value in zip(keys, combo):
                try:
                    cfg = config_lib.assign_value(defaults, cfg, key.split("."), value)
                except ConfigError as e:
                    raise ConfigError(f"grid key '{key}' = {value!r}: {e}") from None
            cells.append(Cell(len(cells), dict(zip(keys, combo)), cfg))
    return cells


def _cell_name(cell: Cell) -> str:
    return f"{cell.index:04d}"


_MISSING = object()


def _value_at(cfg: dict, dotted: str):
    node = cfg
    for k in dotted.split("."):
        if not isinstance(node, dict) or k not in node:
            return _MISSING
        node = node[k]
    return node


def _fmt(value) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


class Group(NamedTuple):
    spec: Any
    cells: list  # [(Cell, Plan)]


def group_cells(cells: list[Cell], log=None) -> list[Group]:
    """Prepares every cell (all checks, before any runs) and groups those that
    can share one compiled program."""
    groups: dict = {}
    for cell in cells:
        try:
            plan = plan_lib.prepare(cell.cfg)
        except ConfigError as e:
            where = ", ".join(f"{k}={_fmt(v)}" for k, v in cell.values.items())
            raise ConfigError(f"cell {cell.index} ({where}): {e}") from None
        key = (plan.spec, json.dumps(cell.cfg["data"], sort_keys=True, default=str),
               cell.cfg["rounds"], cell.cfg["eval_every"],
               cell.cfg["execution"]["stop_on_divergence"])
        groups.setdefault(key, []).append((cell, plan))
    return [Group(k[0], v) for k, v in groups.items()]


def cells_per_program(plan, requested: int = 0, cells: int = 0) -> int:
    """How many cells one program holds: ``requested``, or as many as fit the
    memory budget (:func:`fljax.memory.estimate` of the round with that many
    cells per device; the cells are split over the run's devices, so the
    count is a multiple of them unless fewer cells are left).

    Args:
      plan: a cell's :class:`~fljax.plan.Plan` (its ``memory`` estimate).
      requested: ``execution.cells_per_program`` (0: what fits).
      cells: how many cells are to run (the answer is at most this).
    """
    from fljax import memory as memory_lib

    devices = plan.spec.devices
    limit = cells or 1 << 30
    if requested:
        return max(1, min(requested, limit))
    inputs = dict(plan.memory.inputs)
    inputs.update(chunk=plan.spec.chunk, shards=1)  # a sweep splits cells, not clients

    def fits(per_device: int) -> bool:
        return memory_lib.estimate(**{**inputs, "cells": per_device}).fits

    per_device = 1
    while per_device * devices < limit and fits(per_device * 2):
        per_device *= 2
    lo, hi = per_device, per_device * 2  # fits(lo); refine between lo and hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return max(1, min(lo * devices, limit))


def _stack(trees: list):
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _metric_names(group: Group) -> list[str]:
    """The metric columns a group will report (from the round's shapes)."""
    rnd = simulate.make_round(group.spec)  # one device's round: only the shapes matter
    _, plan = group.cells[0]
    k_init, k_rounds = simulate.run_keys(0)
    state = jax.eval_shape(rnd.init, plan.hparams, plan.data, k_init)
    ev = jax.eval_shape(rnd.evaluate, plan.hparams, state, plan.data)
    buf = jax.eval_shape(rnd.new_buffer)
    _, info, _ = jax.eval_shape(rnd.step, plan.hparams, state, plan.data, k_rounds, buf)
    scal = jax.eval_shape(lambda i: simulate._round_scalars(i, bool(group.spec.attack)), info)
    names = [simulate.MAIN_METRICS.get(k, k) for k in ev]
    return names + sorted(scal)


class Manifest(NamedTuple):
    path: str
    grid: dict
    config: dict


def _check_manifest(out: str, config_path: str, base: dict, grid) -> None:
    path = os.path.join(out, "sweep.json")
    mine = results_lib.clean({"config": base, "grid": grid})
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        diff = plan_lib.first_difference(theirs.get("grid"), mine["grid"], "grid.")
        if diff is None:
            diff = plan_lib.first_difference(theirs.get("config"), mine["config"], "")
        if diff is not None:
            raise ConfigError(f"{out} holds the results of another sweep ('{diff}' differs); "
                              "pass another --out, or delete the folder to start over")
    elif os.path.exists(os.path.join(out, "results.csv")):
        raise ConfigError(f"{out}/results.csv exists but no sweep.json says which sweep wrote it; "
                          "pass another --out")
    elif jax.process_index() == 0:
        results_lib.write_json(path, {**mine, "config_file": config_path})


def _finished(csv_path: str) -> set:
    if not os.path.exists(csv_path):
        return set()
    with open(csv_path, newline="") as f:
        return {int(row["cell"]) for row in csv.DictReader(f)}


def run(defaults: dict, base: dict, grid, out: str, config_path: str = "",
        progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Runs a sweep (the Python entry point behind ``fljax sweep``).

    Args:
      defaults: the schema (``fljax.plan.DEFAULTS``).
      base: the resolved config the grid varies.
      grid: dotted key -> list of values (or a list of such dicts).
      out: the output folder.

    Returns:
      ``{'cells': n, 'ran': n run now, 'skipped': n finished before,
      'groups': n, 'seconds': wall time}``.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    results_lib.prepare_out_dir(out)
    cells = expand(defaults, base, grid)
    groups = group_cells(cells)  # every check, before any cell runs
    _check_manifest(out, config_path, base, grid)
    csv_path = os.path.join(out, "results.csv")
    done = _finished(csv_path)
    keys = grid_keys(grid)
    fixed = [c for c in ("aggregator", "attack", "seed", "rounds") if c not in keys]
    metric_names: list = []
    for g in groups:
        for name in _metric_names(g):
            if name not in metric_names:
                metric_names.append(name)
    lead = [m for m in ("main_accuracy", "main_loss") if m in metric_names]
    metric_names = lead + [m for m in metric_names if m not in lead]
    columns = ["cell"] + keys + fixed + metric_names + ["diverged", "seconds"]
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f), None)
        if header != columns:
            raise ConfigError(f"{csv_path} has other columns than this sweep writes; "
                              "pass another --out")
    elif jax.process_index() == 0:
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(columns)

    todo = [(g, [(c, p) for c, p in g.cells if c.index not in done]) for g in groups]
    total = sum(c.cfg["rounds"] for g, cs in todo for c, _ in cs)
    bar = tqdm(total=total, desc=f"sweep ({len(cells)} cells)",
               disable=not progress or jax.process_index() != 0, dynamic_ncols=True,
               leave=False, unit="cell-round")
    saved = _saved_programs(out)
    ran = 0
    for g, cs in todo:
        if not cs:
            continue
        for chunk, resume_from in _programs(cs, saved):
            _run_chunk(g.spec, chunk, out, csv_path, columns, bar, resume_from)
            ran += len(chunk)
    bar.close()
    write_tables(out, keys, metric_names)
    summary = {"cells": len(cells), "ran": ran, "skipped": len(cells) - ran,
               "groups": len(groups), "seconds": time.perf_counter() - t0}
    if log:
        log(f"{len(cells)} cells ({ran} run now, {len(cells) - ran} finished before) in "
            f"{len(groups)} program group(s), {summary['seconds']:.1f}s; results in {out}")
    return summary


def _saved_programs(out: str) -> dict:
    """Checkpoints of programs that did not finish: ``{folder: cell indices}``."""
    from fljax import checkpoint as ckpt_lib

    root = os.path.join(out, "checkpoints")
    found = {}
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            meta = ckpt_lib.read_meta(os.path.join(root, name))
            if meta is not None and "cells" in meta:
                found[os.path.join(root, name)] = list(meta["cells"])
    return found


def _programs(cs: list, saved: dict) -> list:
    """A group's unfinished cells as programs ``[(cells, checkpoint or None)]``:
    first those a checkpoint holds (resumed as they were split), then the
    rest in as many cells as fit (:func:`cells_per_program`)."""
    by_index = {c.index: (c, p) for c, p in cs}
    programs, taken = [], set()
    for folder, indices in saved.items():
        if indices and all(i in by_index and i not in taken for i in indices):
            programs.append(([by_index[i] for i in indices], folder))
            taken.update(indices)
    rest = [(c, p) for c, p in cs if c.index not in taken]
    if rest:
        size = cells_per_program(rest[0][1], rest[0][0].cfg["execution"]["cells_per_program"],
                                 len(rest))
        programs += [(rest[i:i + size], None) for i in range(0, len(rest), size)]
    return programs


def _program_name(chunk) -> str:
    first, last = chunk[0][0].index, chunk[-1][0].index
    ids = ",".join(str(c.index) for c, _ in chunk)
    return f"cells-{first:04d}-{last:04d}-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"


def _run_chunk(spec, chunk, out, csv_path, columns, bar, resume_from: Optional[str] = None):
    """Runs one program (a chunk of a group's cells), checkpointing it under
    ``out/checkpoints/<program>`` and resuming from ``resume_from``; appends
    its rows to results.csv when it ends and then drops its checkpoint."""
    import shutil

    from fljax import checkpoint as ckpt_lib

    primary = jax.process_index() == 0
    cfg0 = chunk[0][0].cfg
    batched = len(chunk) > 1
    comp = simulate.compiled(spec, batched)
    plans = [p for _, p in chunk]
    hparams = _stack([p.hparams for p in plans]) if batched else plans[0].hparams
    seeds = [c.cfg["seed"] for c, _ in chunk]
    folder = resume_from or os.path.join(out, "checkpoints", _program_name(chunk))
    state, carry, done = None, None, 0
    if resume_from is not None:
        width = len(chunk)
        if batched and comp.mesh is not None:
            width = -(-width // comp.devices) * comp.devices
        k_init = simulate.run_keys(0)[0]
        if batched:
            shapes = jax.eval_shape(
                jax.vmap(comp.round.init, in_axes=(0, None, 0)),
                simulate._pad_cells(hparams, width), plans[0].data, jnp.stack([k_init] * width))
        else:
            shapes = jax.eval_shape(comp.round.init, hparams, plans[0].data, k_init)
        state, meta = ckpt_lib.restore(folder, ckpt_lib.abstract(shapes, comp.sharding(batched)))
        carry, done = meta.get("carry"), int(meta["round"])
    cell_dirs = []
    for cell, _ in chunk:
        d = os.path.join(out, "cells", _cell_name(cell))
        cell_dirs.append(d)
        if not primary:
            continue
        os.makedirs(d, exist_ok=True)
        results_lib.write_json(os.path.join(d, "config.json"), cell.cfg)
        path = os.path.join(d, "metrics.jsonl")
        kept = [h for h in results_lib.read_jsonl(path) if h["round"] <= done] if done else []
        with open(path, "w") as f:  # a resumed program keeps the lines up to its checkpoint
            f.writelines(results_lib.dumps(h) + "\n" for h in kept)
    last: list = [None] * len(chunk)
    if done:
        for i, d in enumerate(cell_dirs):
            lines = results_lib.read_jsonl(os.path.join(d, "metrics.jsonl"))
            last[i] = lines[-1] if lines else None
        if bar is not None:
            bar.update(done * len(chunk))
    t0 = time.perf_counter()
    mgr = ckpt_lib.manager(folder)

    def on_eval(state, r, records):
        for i, rec in enumerate(records):
            if primary:
                results_lib.append_jsonl(os.path.join(cell_dirs[i], "metrics.jsonl"), rec)
            last[i] = rec

    def on_checkpoint(state, r, loop_carry):
        ckpt_lib.save(mgr, r, state, {"cells": [c.index for c, _ in chunk], "round": r,
                                      "carry": loop_carry})

    try:
        simulate.run_cells(comp, hparams, plans[0].data, seeds, cfg0["rounds"],
                           cfg0["eval_every"], state=state, on_eval=on_eval, bar=bar,
                           stop_on_divergence=cfg0["execution"]["stop_on_divergence"],
                           checkpoint_every=cfg0["execution"]["checkpoint_every"],
                           on_checkpoint=on_checkpoint, carry=carry)
    finally:
        mgr.close()
    if not primary:
        return
    seconds = (time.perf_counter() - t0) / len(chunk)
    with open(csv_path, "a", newline="") as f:
        w = csv.writer(f)
        for (cell, _), rec in zip(chunk, last):
            row = {"cell": cell.index}
            for c in columns:  # grid keys of other sub-grids: this cell's own value
                v = _value_at(cell.cfg, c)
                if v is not _MISSING and c not in ("aggregator", "attack"):
                    row[c] = _fmt(v)
            row.update({"aggregator": cell.cfg["aggregator"]["name"],
                        "attack": cell.cfg["attack"]["name"], "seed": cell.cfg["seed"],
                        "rounds": cell.cfg["rounds"]})
            row.update({k: _fmt(v) for k, v in cell.values.items()})  # grid keys win
            rec = results_lib.clean(rec or {})
            for m in columns:
                if m not in row:
                    v = rec.get(m)
                    row[m] = "" if v is None else v
            row["diverged"] = bool(rec.get("diverged"))
            row["seconds"] = f"{seconds:.3f}"
            w.writerow([row.get(c, "") for c in columns])
        f.flush()
    shutil.rmtree(folder, ignore_errors=True)  # the rows are on disk: nothing to resume


def history(out: str, cell: int) -> list[dict]:
    """One cell's evaluations, as ``simulate.run``'s ``history``: a dict per
    evaluation (``round``, ``main_accuracy``, what the attack adds, the round
    diagnostics), read from ``out/cells/<cell>/metrics.jsonl`` (``cell``:
    results.csv's ``cell`` column, an int or its text)."""
    return results_lib.read_jsonl(
        os.path.join(out, "cells", f"{int(cell):04d}", "metrics.jsonl"))


def read_results(out: str, average_after: Optional[float] = None) -> list[dict]:
    """The rows of ``out/results.csv`` (dicts of text, one per finished cell).

    With ``average_after`` (a fraction of the rounds, e.g. 0.5), every metric of
    a row that the cell's history records is instead its mean over the
    evaluations after that fraction of the cell's rounds (NaN and missing
    values skipped; empty when none is left). A metric that swings from one
    evaluation to the next, such as a backdoor planted in the rounds an
    attacker is sampled and healed in between, is then read over the second
    half of training rather than at its last evaluation.
    """
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if average_after is None:
        return rows
    if not 0.0 <= average_after < 1.0:
        raise ValueError(f"average_after must be in [0, 1), got {average_after}")
    for row in rows:
        hist = history(out, row["cell"])
        if not hist:
            continue
        rounds = _num(row.get("rounds"))
        last = rounds if rounds is not None else max(h["round"] for h in hist)
        late = [h for h in hist if h["round"] > average_after * last]
        for key in row:
            if key in ("cell", "round", "rounds", "seed", "elapsed", "diverged", "seconds") \
                    or key not in hist[-1]:
                continue
            vals = [v for v in (_num(h.get(key)) for h in late) if v is not None and np.isfinite(v)]
            row[key] = repr(float(np.mean(vals))) if vals else ""
    return rows


def _num(v):
    try:
        x = float(v)
        return x
    except (TypeError, ValueError):
        return None


def write_tables(out: str, grid_keys: list, metric_names: list) -> None:
    """``results.md`` (mean and spread over seeds) and the heatmaps, from results.csv."""
    rows = read_results(out)
    if not rows:
        return
    keys = [k for k in grid_keys if k != "seed"]
    shown = [m for m in metric_names if any(_num(r.get(m)) is not None for r in rows)]
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    lines = ["| " + " | ".join(keys + shown + ["seeds"]) + " |",
             "|" + "---|" * (len(keys) + len(shown) + 1)]
    for gk, rs in groups.items():
        cells = list(gk)
        for m in shown:
            vals = np.array([v for v in (_num(r.get(m)) for r in rs) if v is not None])
            if len(vals) == 0:
                cells.append("–")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.4f}")
            else:
                cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}")
        cells.append(str(len(rs)))
        lines.append("| " + " | ".join(cells) + " |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("Means ± sample standard deviations over seeds (one row per setting).\n\n")
        f.write("\n".join(lines) + "\n")
    _heatmaps(out, rows, keys, shown)


def short_label(text: str, width: int = 36) -> str:
    """A grid value for a plot axis: ``{"name": "krum", "kwargs": {...}}`` ->
    ``krum(num_byzantine=20)``; a nested component (ERR's ``base``) the same
    way, ``err(base=trimmed_mean(num_trim=20),num_reject=20)``; floats to 4
    significant digits."""
    try:
        v = json.loads(text)
    except (TypeError, ValueError):
        return text[:width]
    if isinstance(v, dict) and "name" in v:
        text = _component_label(v)
    return text if len(text) <= width else text[:width - 1] + "…"


def _component_label(v) -> str:
    """``{"name": "err", "kwargs": {"base": {"name": "krum", ...}}}`` ->
    ``err(base=krum(...))``: named entries, nested ones too, as calls."""
    if isinstance(v, dict) and "name" in v:
        kw = v.get("kwargs") or {}
        inner = ",".join(f"{k}={_component_label(kw[k])}" for k in sorted(kw))
        return v["name"] + (f"({inner})" if inner else "")
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _heatmaps(out: str, rows: list, keys: list, metrics: list) -> None:
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays its own

    if not keys:
        return
    by_size = sorted(keys, key=lambda k: -len({r[k] for r in rows}))
    ky = by_size[0]
    kx = by_size[1] if len(by_size) > 1 else None
    ys = list(dict.fromkeys(r[ky] for r in rows))
    xs = list(dict.fromkeys(r[kx] for r in rows)) if kx else [""]
    for m in metrics:
        grid = np.full((len(ys), len(xs)), np.nan)
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                vals = [_num(r.get(m)) for r in rows if r[ky] == yv and (not kx or r[kx] == xv)]
                vals = [v for v in vals if v is not None]
                if vals:
                    grid[i, j] = float(np.mean(vals))
        if np.all(np.isnan(grid)):
            continue
        fig = Figure(figsize=(3.5 + 0.7 * len(xs), 1.5 + 0.3 * len(ys)), dpi=120,
                     layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(ys)), [short_label(y) for y in ys], fontsize=7)
        ax.set_xticks(range(len(xs)), [short_label(x, 44) for x in xs], fontsize=7, rotation=45,
                      ha="right")
        ax.set_ylabel(ky, fontsize=8)
        if kx:
            ax.set_xlabel(kx, fontsize=8)
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w")
        fig.colorbar(im, ax=ax)
        ax.set_title(f"{m} (mean over the other keys and seeds)", fontsize=8)
        fig.savefig(os.path.join(out, f"heatmap_{m}.png"))


class Table(NamedTuple):
    """A metric over two grid keys (:func:`table`): ``mean[i, j]`` and ``std[i, j]``
    (sample standard deviation; NaN for a single value) over the ``count[i, j]``
    cells whose key ``rows`` is ``row_values[i]`` and key ``cols`` is
    ``col_values[j]`` (values as results.csv writes them: JSON for dicts)."""
    row_values: list
    col_values: list
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def table(out: str, rows: str, cols: str, metric: str, where: Optional[dict] = None,
          average_after: Optional[float] = None) -> Table:
    """``metric`` from ``out/results.csv`` as arrays: one row per value of grid
    key ``rows``, one column per value of ``cols``, each entry the mean (and
    spread) over the cells that share both, i.e. over the seeds and any other
    key. ``where``: only the cells whose keys have these values (compared as
    text, e.g. ``{"attack.num_malicious": 10}``); ``average_after``: each cell's
    metric averaged over its late evaluations (:func:`read_results`)."""
    data = read_results(out, average_after)
    for k, v in (where or {}).items():
        if data and k not in data[0]:
            raise KeyError(f"where: {k!r} is not a column of {out}/results.csv")
        data = [r for r in data if r[k] == _fmt(v)]
    rv = list(dict.fromkeys(r[rows] for r in data))
    cv = list(dict.fromkeys(r[cols] for r in data))
    mean = np.full((len(rv), len(cv)), np.nan)
    std = np.full((len(rv), len(cv)), np.nan)
    count = np.zeros((len(rv), len(cv)), int)
    for i, a in enumerate(rv):
        for j, b in enumerate(cv):
            vals = np.array([v for v in (_num(r.get(metric)) for r in data
                                         if r[rows] == a and r[cols] == b) if v is not None])
            count[i, j] = len(vals)
            if len(vals):
                mean[i, j] = vals.mean()
            if len(vals) > 1:
                std[i, j] = vals.std(ddof=1)
    return Table(rv, cv, mean, std, count)


def pivot(out: str, rows: str, cols: str, metric: str, digits: int = 3,
          where: Optional[dict] = None, average_after: Optional[float] = None) -> str:
    """A markdown table of ``metric`` from ``out/results.csv``: one row per value
    of grid key ``rows``, one column per value of ``cols``, each cell the mean ±
    sample standard deviation over the cells that share both (seeds and any
    other key), e.g. ``pivot(out, 'aggregator', 'attack', 'main_error_rate')``.
    ``where`` and ``average_after`` as in :func:`table`."""
    t = table(out, rows, cols, metric, where, average_after)
    lines = ["| " + " | ".join([rows] + [short_label(c, 40) for c in t.col_values]) + " |",
             "|" + "---|" * (len(t.col_values) + 1)]
    for i, a in enumerate(t.row_values):
        cells = [short_label(a, 64)]  # wide enough to tell weak_dp(..., placement=...) apart
        for j in range(len(t.col_values)):
            if t.count[i, j] == 0:
                cells.append("–")
            elif t.count[i, j] == 1:
                cells.append(f"{t.mean[i, j]:.{digits}f}")
            else:
                cells.append(f"{t.mean[i, j]:.{digits}f} ± {t.std[i, j]:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
