"""Running rounds: ``fljax run`` (one config) on top of the pure round.

:func:`fljax.plan.prepare` checks a config and does the host work,
:func:`fljax.round.make_round` gives the pure ``init`` / ``step`` /
``evaluate``; this module compiles them (vmapped over a cell axis for
sweeps, see :mod:`fljax.sweep`), runs the rounds, evaluates every
``eval_every`` rounds, and writes the results as they are produced:

* ``config.json``: the resolved config;
* ``metrics.jsonl``: one JSON object per evaluation (flushed): ``round``,
  ``main_accuracy``, ``main_loss``, any metric the attack adds (e.g.
  ``backdoor_accuracy``), ``train_loss`` and the round diagnostics averaged
  since the last evaluation (``malicious_kept``, ``cosine_to_honest``,
  ``norm_ratio_to_honest``, the attack's own scalars as ``attack_*``);
* ``summary.json``: the final metrics, ``diverged`` (and the round), speed;
* ``accuracy.png``, ``params.msgpack`` and ``checkpoints/`` (orbax: the
  whole simulation state every ``execution.checkpoint_every`` rounds, or at
  every evaluation; ``--resume`` continues with the same keys, and the result
  equals an uninterrupted run; :mod:`fljax.checkpoint`).

``summary.json`` and every ``metrics.jsonl`` line report the peak memory of
the rounds (``peak_memory_gb``, :class:`fljax.memory.PeakTracker`) beside
the plan's estimate (``memory_estimate_gb``).

Devices. A run over ``D > 1`` devices (``execution.devices``) compiles the
round's ``step`` inside ``shard_map`` over a one-axis mesh (clients); a
sweep's vmapped program splits its cell axis over the devices instead. The
inputs are placed as global arrays (replicated, or split over the cells), so
the same code runs over several processes (:mod:`fljax.distributed`); only
process 0 writes files, every process takes part in checkpoints.

Every JSON file is valid JSON: NaN and inf are written as ``null``.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fljax import checkpoint as ckpt_lib
from fljax import memory as memory_lib
from fljax import results as results_lib
from fljax.config import ConfigError
from fljax.execution import CELLS, CLIENTS
from fljax.plan import DEFAULTS, prepare  # noqa: F401  (the public entry points)
from fljax.round import RoundInfo, SimState, ServerState, make_round  # noqa: F401

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

prepare_out_dir = results_lib.prepare_out_dir

# The evaluation's names -> the history's (the model's metrics on the test set are "main_";
# an attacker's metrics, e.g. backdoor_accuracy, keep their names).
MAIN_METRICS = {"accuracy": "main_accuracy", "loss": "main_loss",
                "error_rate": "main_error_rate"}


class Compiled(NamedTuple):
    round: Any  # fljax.round.Round
    init: Callable
    step: Callable
    evaluate: Callable
    batched: bool
    spec: Any
    mesh: Any = None  # a jax.sharding.Mesh over the run's devices (None: one device)

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def sharding(self, cells: bool = False):
        """Where arrays live: replicated over the mesh, or split over its cell
        axis (``cells``); one device without a mesh."""
        from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

        if self.mesh is None:
            return SingleDeviceSharding(jax.devices()[0])
        return NamedSharding(self.mesh, P(CELLS) if cells else P())

    def put(self, tree, cells: bool = False):
        """Host or device arrays as global arrays with :meth:`sharding` (each
        process supplies its own shards, so this also runs on several hosts)."""
        if self.mesh is None:
            return tree
        sharding = self.sharding(cells)

        def one(x):
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

        return jax.tree_util.tree_map(one, tree)

    def new_buffer(self, cells: int):
        """The donated update buffer, created where it lives (None: none),
        with a leading cell axis of ``cells`` (0: a single run's, none)."""
        shape = jax.eval_shape(self.round.new_buffer)
        if shape is None:
            return None
        if self.mesh is None:
            buf = self.round.new_buffer()
            return jnp.broadcast_to(buf, (cells,) + buf.shape).copy() if cells else buf
        from jax.sharding import NamedSharding, PartitionSpec as P

        if cells:
            return jax.jit(lambda: jnp.zeros((cells,) + shape.shape, shape.dtype),
                           out_shardings=NamedSharding(self.mesh, P(CELLS)))()
        return jax.jit(self.round.new_buffer,
                       out_shardings=NamedSharding(self.mesh, P(None, CLIENTS)))()


@functools.lru_cache(maxsize=16)
def compiled(spec, batched: bool = False) -> Compiled:
    """The jitted round of ``spec`` (vmapped over a leading cell axis if ``batched``).

    The state and the update buffer are donated: every round reuses them.
    With ``spec.devices > 1`` a single run's ``step`` runs inside
    ``shard_map`` over a mesh axis of the clients (each device trains its
    share, see :func:`fljax.round.make_round`), and a batched program's
    cell axis is split over a mesh axis of the cells (cells are independent:
    no communication).
    """
    from jax.sharding import Mesh, PartitionSpec as P

    d = spec.devices
    if d == 1:
        rnd = make_round(spec)
        if batched:
            init = jax.jit(jax.vmap(rnd.init, in_axes=(0, None, 0)))
            step = jax.jit(jax.vmap(rnd.step, in_axes=(0, 0, None, 0, 0)),
                           donate_argnums=(1, 4))
            evaluate = jax.jit(jax.vmap(rnd.evaluate, in_axes=(0, 0, None)))
        else:
            init = jax.jit(rnd.init)
            step = jax.jit(rnd.step, donate_argnums=(1, 4))
            evaluate = jax.jit(rnd.evaluate)
        return Compiled(rnd, init, step, evaluate, batched, spec)
    devices = np.array(jax.devices()[:d])
    smap = functools.partial(jax.shard_map, check_vma=False)
    if batched:
        mesh = Mesh(devices, (CELLS,))
        rnd = make_round(spec)
        c, r = P(CELLS), P()
        init = jax.jit(smap(jax.vmap(rnd.init, in_axes=(0, None, 0)), mesh=mesh,
                            in_specs=(c, r, c), out_specs=c))
        step = jax.jit(smap(jax.vmap(rnd.step, in_axes=(0, 0, None, 0, 0)), mesh=mesh,
                            in_specs=(c, c, r, c, c), out_specs=(c, c, c)),
                       donate_argnums=(1, 4))
        evaluate = jax.jit(smap(jax.vmap(rnd.evaluate, in_axes=(0, 0, None)), mesh=mesh,
                                in_specs=(c, c, r), out_specs=c))
    else:
        mesh = Mesh(devices, (CLIENTS,))
        rnd = make_round(spec, shards=d)
        r, cols = P(), P(None, CLIENTS)
        from jax.sharding import NamedSharding

        init = jax.jit(rnd.init, out_shardings=NamedSharding(mesh, r))
        step = jax.jit(smap(rnd.step, mesh=mesh, in_specs=(r, r, r, r, cols),
                            out_specs=(r, r, cols)), donate_argnums=(1, 4))
        evaluate = jax.jit(rnd.evaluate)
    return Compiled(rnd, init, step, evaluate, batched, spec, mesh)


def to_host(tree):
    """Device arrays as NumPy, also global arrays of a multi-process run
    (replicated ones from the local copy, split ones gathered)."""
    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(init key, rounds key)`` of a run: the same seed gives the same run."""
    return tuple(jax.random.split(jax.random.PRNGKey(seed)))


class _Accumulator:
    """Means of the per-round scalars of each cell since the last evaluation."""

    def __init__(self, cells: int):
        self.cells = cells
        self.reset()

    def reset(self):
        self.sums: list[dict] = [dict() for _ in range(self.cells)]
        self.counts: list[dict] = [dict() for _ in range(self.cells)]

    def add(self, values: dict):
        for name, arr in values.items():
            arr = np.asarray(arr, np.float64).reshape(self.cells)
            for c in range(self.cells):
                v = arr[c]
                if np.isnan(v):
                    continue
                self.sums[c][name] = self.sums[c].get(name, 0.0) + v
                self.counts[c][name] = self.counts[c].get(name, 0) + 1

    def means(self, c: int, names) -> dict:
        return {n: (self.sums[c][n] / self.counts[c][n] if self.counts[c].get(n) else None)
                for n in names}


def _round_scalars(info: RoundInfo, attacked: bool = True) -> dict:
    """The per-round values that go to metrics.jsonl (averaged between
    evaluations); the attack diagnostics only where there is an attack."""
    out = {"train_loss": info.train_loss}
    if not attacked:
        return out
    out["attack_active"] = info.attack_active.astype(jnp.float32)
    for k, v in info.diagnostics.items():
        out[k] = jnp.asarray(v, jnp.float32)
    for k, v in info.attack_info.items():
        v = jnp.asarray(v)
        if v.ndim == 0 or (v.ndim == 1 and info.train_loss.ndim == 1):
            out[f"attack_{k}"] = v.astype(jnp.float32)
    return out


def _pad_cells(tree, n: int):
    """A stacked pytree's leading cell axis padded to ``n`` (repeating the last cell)."""
    def one(x):
        x = np.asarray(x)
        if x.shape[0] == n:
            return x
        return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)])

    return jax.tree_util.tree_map(one, tree)


def run_cells(comp: Compiled, hparams, data, seeds: list[int], rounds: int, eval_every: int, *,
              state=None, on_eval: Callable, bar=None, stop_on_divergence: bool = True,
              checkpoint_every: int = 0, on_checkpoint: Optional[Callable] = None,
              carry: Optional[dict] = None
              ) -> tuple[Any, dict]:
    """Runs one cell (``comp.batched`` False) or a group of cells (True) to ``rounds``.

    Args:
      comp: :func:`compiled` round.
      hparams, data: the cell's (or the stacked cells') hyperparameters and the
        shared data.
      seeds: one seed per cell.
      state: a restored state to continue from (None: initialise); over
        devices, a batched state keeps the padded cell axis it was saved with.
      on_eval: ``on_eval(state, round, records)`` with one metrics dict per cell;
        round 0 is evaluated when ``state`` starts there (a restored state
        is past it: checkpoints follow a round).
      bar: a tqdm bar advanced by one per cell-round.
      stop_on_divergence: stop once every cell's model is non-finite.
      checkpoint_every: call ``on_checkpoint`` every this many rounds (0: after
        every evaluation), and after the last round.
      on_checkpoint: ``on_checkpoint(state, round, carry)``; ``carry`` (JSON)
        is what the loop needs to continue exactly (the per-round scalars
        summed since the last evaluation, the divergence record): pass it
        back as ``carry`` with the restored state.
      carry: a checkpoint's ``carry``.

    Returns:
      ``(state, stats)`` with ``client_updates_per_s`` (rounds after the first,
      which compiles), ``diverged`` (per cell: the round, or None),
      ``peak_memory_bytes`` (the largest per-round peak, None where the
      platform reports none) and ``round_peaks`` (per round run now).
    """
    cells = len(seeds)
    width = cells
    if comp.batched and comp.mesh is not None:  # the cell axis splits evenly over the devices
        width = -(-cells // comp.devices) * comp.devices
        hparams = _pad_cells(hparams, width)
        seeds = list(seeds) + [seeds[-1]] * (width - cells)
    keys = [run_keys(s) for s in seeds]
    if comp.batched:
        k_init = comp.put(jnp.stack([k[0] for k in keys]), cells=True)
        k_rounds = comp.put(jnp.stack([k[1] for k in keys]), cells=True)
    else:
        k_init, k_rounds = (comp.put(k) for k in keys[0])
    hparams = comp.put(hparams, cells=comp.batched)
    data = comp.put(data)
    if state is None:
        state = comp.init(hparams, data, k_init)
    buf = comp.new_buffer(width if comp.batched else 0)
    start = int(to_host(state.round).reshape(-1)[0])
    acc = _Accumulator(cells)
    diverged: list = [None] * cells
    names: list = []
    peak_since_eval: Optional[int] = None
    peak_all: Optional[int] = None
    train_time, updates = 0.0, 0
    if carry:
        acc.sums, acc.counts = carry["sums"], carry["counts"]
        diverged, names = list(carry["diverged"]), list(carry["names"])
        peak_since_eval, peak_all = carry.get("peak_since_eval"), carry.get("peak_all")
    tracker = memory_lib.PeakTracker(list(comp.mesh.devices.flat) if comp.mesh is not None
                                     else None)
    round_peaks: list = []

    def evaluate(r):
        nonlocal peak_since_eval
        ev = to_host(comp.evaluate(hparams, state, data))
        records = []
        for c in range(cells):
            rec = {"round": r}
            for name, v in ev.items():
                v = np.asarray(v).reshape(width, *np.shape(v)[1:])[c] if comp.batched \
                    else np.asarray(v)
                rec[MAIN_METRICS.get(name, name)] = v.tolist()
            rec.update(acc.means(c, names))
            rec["peak_memory_gb"] = memory_lib.gb(peak_since_eval)
            loss = rec.get("main_loss")
            if diverged[c] is None and (loss is None or not np.isfinite(loss)):
                diverged[c] = r
            rec["diverged"] = diverged[c] is not None
            records.append(rec)
        acc.reset()
        peak_since_eval = None
        on_eval(state, r, records)

    def checkpoint(r):
        if on_checkpoint is not None:
            on_checkpoint(state, r, {"sums": acc.sums, "counts": acc.counts,
                                     "diverged": diverged, "names": names,
                                     "peak_since_eval": peak_since_eval, "peak_all": peak_all})

    if start == 0:  # a restored state is past round 0 (checkpoints follow a round)
        evaluate(0)
    for r in range(start, rounds):
        t = time.perf_counter()
        tracker.reset()
        state, info, buf = comp.step(hparams, state, data, k_rounds, buf)
        scalars = to_host(_round_scalars(info, bool(comp.spec.attack)))  # blocks: the round is done
        peak = tracker.read()
        if r > start:  # the first round includes compilation
            train_time += time.perf_counter() - t
            updates += cells * comp.spec.clients_per_round
        if peak is not None:
            round_peaks.append(peak)
            peak_since_eval = max(peak_since_eval or 0, peak)
            peak_all = max(peak_all or 0, peak)
        if comp.batched:
            scalars = {k: np.asarray(v).reshape(width)[:cells] for k, v in scalars.items()}
        names = sorted(set(names) | set(scalars))
        acc.add(scalars)
        if bar is not None:
            bar.update(cells)
        last = r + 1 == rounds
        evaluated = (r + 1) % eval_every == 0 or last
        if evaluated:
            evaluate(r + 1)
        stop = evaluated and stop_on_divergence and all(d is not None for d in diverged)
        if last or stop or (checkpoint_every and (r + 1) % checkpoint_every == 0) or \
                (not checkpoint_every and evaluated):
            checkpoint(r + 1)
        if stop:
            if bar is not None:
                bar.update(cells * (rounds - r - 1))
            break
    return state, {"client_updates_per_s": updates / train_time if train_time > 0 else None,
                   "diverged": diverged, "peak_memory_bytes": peak_all,
                   "round_peaks": round_peaks}


class RunResult(NamedTuple):
    history: list  # one dict per evaluation
    state: SimState
    summary: dict


def _resume(out_dir: str, comp: Compiled, plan, cfg: dict, log):
    """``(state, carry, elapsed)`` from ``out_dir``'s checkpoint (orbax, or an
    earlier version's ``checkpoint.msgpack``); ``(None, None, 0)`` if none."""
    k_init, _ = run_keys(cfg["seed"])
    shapes = jax.eval_shape(comp.round.init, plan.hparams, plan.data, k_init)
    directory = os.path.join(out_dir, "checkpoints")
    if ckpt_lib.latest(directory) is not None:
        meta = ckpt_lib.read_meta(directory)
        ckpt_lib.check_config(meta.get("config"), cfg, directory)
        state, meta = ckpt_lib.restore(directory, ckpt_lib.abstract(shapes, comp.sharding()))
        return state, meta.get("carry"), float(meta.get("elapsed", 0.0))
    legacy = os.path.join(out_dir, "checkpoint.msgpack")
    if os.path.exists(legacy):
        template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        state, elapsed = ckpt_lib.load_msgpack(legacy, template, cfg)
        return comp.put(jax.tree_util.tree_map(jnp.asarray, state)), None, elapsed
    return None, None, 0.0


def _refuse_a_used_folder(out_dir: str) -> None:
    """A run without ``resume`` does not write over another run's results:
    its metrics, its checkpoints (orbax or msgpack) stay as they are."""
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    held = [name for name, there in (
        ("checkpoints", ckpt_lib.latest(os.path.join(out_dir, "checkpoints")) is not None),
        ("checkpoint.msgpack", os.path.exists(os.path.join(out_dir, "checkpoint.msgpack"))),
        ("metrics.jsonl", os.path.exists(metrics_path) and os.path.getsize(metrics_path) > 0))
        if there]
    if held:
        raise ConfigError(f"--out {out_dir!r} already holds a run ({', '.join(held)}); pass "
                          "--resume (resume=True) to continue it, or another --out; nothing "
                          "was changed")


def run(cfg: dict, out_dir: Optional[str] = None, progress: bool = True,
        resume: bool = False, log: Callable[[str], None] | None = print) -> RunResult:
    """Runs a resolved config: the Python entry point behind ``fljax run``.

    Args:
      cfg: a resolved config (``fljax.config.resolve(DEFAULTS, get_config())``).
      out_dir: where to write the files listed in the module docstring; None
        writes nothing.
      progress: draw a progress bar over rounds.
      resume: continue from ``out_dir``'s last checkpoint if there is one (the
        config must be the same but for ``rounds``).
      log: called with one line per evaluation (None: silent).

    Returns:
      ``RunResult(history, state, summary)``.
    """
    from tqdm.auto import tqdm

    primary = jax.process_index() == 0
    if out_dir is not None:
        prepare_out_dir(out_dir)
        if not resume:
            _refuse_a_used_folder(out_dir)
    plan = prepare(cfg)
    comp = compiled(plan.spec, False)
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    history: list = []
    state, carry, elapsed_before = None, None, 0.0
    if resume and out_dir:
        state, carry, elapsed_before = _resume(out_dir, comp, plan, cfg, log)
    if state is not None:
        done = int(to_host(state.round))
        history = [h for h in results_lib.read_jsonl(metrics_path) if h["round"] <= done]
        if primary:
            with open(metrics_path, "w") as f:  # drop lines past the checkpoint
                f.writelines(results_lib.dumps(h) + "\n" for h in history)
        if log:
            log(f"resuming from round {done}")
    elif out_dir and primary:
        open(metrics_path, "w").close()
    if out_dir and primary:
        results_lib.write_json(os.path.join(out_dir, "config.json"), cfg)
    mgr = ckpt_lib.manager(os.path.join(out_dir, "checkpoints")) if out_dir else None

    rounds = int(cfg["rounds"])
    start_round = int(to_host(state.round)) if state is not None else 0
    t0 = time.perf_counter()
    bar = tqdm(total=rounds, initial=start_round, desc="rounds",
               disable=not progress or not primary, dynamic_ncols=True, leave=False)
    elapsed = lambda: elapsed_before + time.perf_counter() - t0  # noqa: E731

    def on_eval(st, r, records):
        rec = records[0]
        rec["elapsed"] = elapsed()
        history.append(rec)
        if metrics_path and primary:
            results_lib.append_jsonl(metrics_path, rec)
        if log and primary:
            extra = "".join(f"  {k.replace('_accuracy', '')} acc {rec[k]:.4f}" for k in sorted(rec)
                            if k.endswith("_accuracy") and k != "main_accuracy"
                            and isinstance(rec[k], float))
            acc, loss = rec.get("main_accuracy"), rec.get("main_loss")
            line = (f"round {r:5d}  accuracy {acc:.4f}  loss {loss:.4f}{extra}  "
                    f"({rec['elapsed']:.1f}s)")
            (tqdm.write if progress else log)(line)
        if rec["diverged"] and log and primary:
            (tqdm.write if progress else log)(
                f"fljax: warning: the model turned non-finite by round {r} (loss "
                f"{rec.get('main_loss')}); "
                + ("stopping (execution.stop_on_divergence=False goes on)"
                   if cfg["execution"]["stop_on_divergence"] else "going on"))

    def on_checkpoint(st, r, loop_carry):
        if mgr is not None:
            ckpt_lib.save(mgr, r, st, {"config": cfg, "round": r, "elapsed": elapsed(),
                                       "carry": loop_carry})

    try:
        state, stats = run_cells(
            comp, plan.hparams, plan.data, [cfg["seed"]], rounds, cfg["eval_every"],
            state=state, on_eval=on_eval, bar=bar,
            stop_on_divergence=cfg["execution"]["stop_on_divergence"],
            checkpoint_every=cfg["execution"]["checkpoint_every"],
            on_checkpoint=on_checkpoint, carry=carry)
    finally:
        bar.close()
        if mgr is not None:
            mgr.close()

    wall = elapsed()
    final = history[-1] if history else {}
    # The first evaluation that found the model non-finite, from the whole history: a
    # resumed run's record from before its checkpoint counts (an earlier version's
    # msgpack checkpoint keeps no divergence record of its own).
    diverged_round = next((h["round"] for h in history if h.get("diverged")), None)
    summary = {
        "final_round": int(to_host(state.round)),
        **{f"final_{k}": v for k, v in final.items()
           if k not in ("round", "elapsed", "diverged", "peak_memory_gb")},
        "diverged": diverged_round is not None,
        "diverged_round": diverged_round,
        "wall_time_s": wall,
        "client_updates_per_s": stats["client_updates_per_s"],
        "strategy": plan.spec.strategy,
        "client_chunk": plan.spec.chunk,
        "aggregation": plan.spec.aggregation,
        "devices": plan.spec.devices,
        "processes": jax.process_count(),
        "device": jax.devices()[0].device_kind,
        "num_params": comp.round.dim,
        "local_steps": plan.spec.steps,
        "peak_memory_gb": memory_lib.gb(stats["peak_memory_bytes"]),
        "memory_estimate_gb": memory_lib.gb(plan.memory.total),
        "memory_budget_gb": memory_lib.gb(plan.memory.budget),
    }
    summary = results_lib.clean(summary)
    if out_dir and primary:
        from flax import serialization

        results_lib.write_json(os.path.join(out_dir, "summary.json"), summary)
        with open(os.path.join(out_dir, "params.msgpack"), "wb") as f:
            f.write(serialization.to_bytes(to_host(state.params)))
        results_lib.plot_history(history, os.path.join(out_dir, "accuracy.png"),
                                 title=f"{cfg['data']['name']} / {cfg['model']['name']} / "
                                       f"{cfg['aggregator']['name']}")
    return RunResult(history, state, summary)
