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
* ``accuracy.png``, ``params.msgpack`` and ``checkpoint.msgpack`` (the whole
  simulation state at the last evaluation: ``--resume`` continues with the
  same keys, and the result equals an uninterrupted run).

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

from fljax import plan as plan_lib
from fljax import results as results_lib
from fljax.config import ConfigError
from fljax.plan import DEFAULTS, prepare  # noqa: F401  (the public entry points)
from fljax.round import RoundInfo, SimState, ServerState, make_round  # noqa: F401

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

prepare_out_dir = results_lib.prepare_out_dir
plot_history = results_lib.plot_history


class Compiled(NamedTuple):
    round: Any  # fljax.round.Round
    init: Callable
    step: Callable
    evaluate: Callable
    batched: bool
    spec: Any


@functools.lru_cache(maxsize=16)
def compiled(spec, batched: bool = False) -> Compiled:
    """The jitted round of ``spec`` (vmapped over a leading cell axis if ``batched``).

    The state and the update buffer are donated: every round reuses them.
    """
    rnd = make_round(spec)
    if batched:
        init = jax.jit(jax.vmap(rnd.init, in_axes=(0, None, 0)))
        step = jax.jit(jax.vmap(rnd.step, in_axes=(0, 0, None, 0, 0)), donate_argnums=(1, 4))
        evaluate = jax.jit(jax.vmap(rnd.evaluate, in_axes=(0, 0, None)))
    else:
        init = jax.jit(rnd.init)
        step = jax.jit(rnd.step, donate_argnums=(1, 4))
        evaluate = jax.jit(rnd.evaluate)
    return Compiled(rnd, init, step, evaluate, batched, spec)


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


def run_cells(comp: Compiled, hparams, data, seeds: list[int], rounds: int, eval_every: int, *,
              state=None, on_eval: Callable, bar=None, stop_on_divergence: bool = True,
              skip_first_eval: bool = False) -> tuple[Any, dict]:
    """Runs one cell (``comp.batched`` False) or a group of cells (True) to ``rounds``.

    Args:
      comp: :func:`compiled` round.
      hparams, data: the cell's (or the stacked cells') hyperparameters and the
        shared data.
      seeds: one seed per cell.
      state: a restored state to continue from (None: initialise).
      on_eval: ``on_eval(state, round, records)`` with one metrics dict per cell.
      bar: a tqdm bar advanced by one per cell-round.
      stop_on_divergence: stop once every cell's model is non-finite.
      skip_first_eval: do not evaluate at round 0 (a resumed run has it).

    Returns:
      ``(state, stats)`` with ``client_updates_per_s`` (rounds after the first,
      which compiles) and ``diverged`` (per cell: the round, or None).
    """
    cells = len(seeds)
    keys = [run_keys(s) for s in seeds]
    if comp.batched:
        k_init = jnp.stack([k[0] for k in keys])
        k_rounds = jnp.stack([k[1] for k in keys])
    else:
        k_init, k_rounds = keys[0]
    if state is None:
        state = comp.init(hparams, data, k_init)
    buf = comp.round.new_buffer()
    if comp.batched and buf is not None:
        buf = jnp.broadcast_to(buf, (cells,) + buf.shape).copy()
    start = int(np.asarray(state.round).reshape(-1)[0])
    acc = _Accumulator(cells)
    diverged: list = [None] * cells
    names: list = []

    def evaluate(r):
        ev = jax.device_get(comp.evaluate(hparams, state, data))
        records = []
        for c in range(cells):
            rec = {"round": r}
            for name, v in ev.items():
                v = np.asarray(v).reshape(cells, *np.shape(v)[1:])[c] if comp.batched \
                    else np.asarray(v)
                key = {"accuracy": "main_accuracy", "loss": "main_loss", "error_rate": "main_error_rate"}.get(name, name)
                rec[key] = v.tolist()
            rec.update(acc.means(c, names))
            loss = rec.get("main_loss")
            if diverged[c] is None and (loss is None or not np.isfinite(loss)):
                diverged[c] = r
            rec["diverged"] = diverged[c] is not None
            records.append(rec)
        acc.reset()
        on_eval(state, r, records)

    if start == 0 and not skip_first_eval:
        evaluate(0)
    train_time, updates = 0.0, 0
    for r in range(start, rounds):
        t = time.perf_counter()
        state, info, buf = comp.step(hparams, state, data, k_rounds, buf)
        scalars = jax.device_get(_round_scalars(info, bool(comp.spec.attack)))  # blocks: the round is done
        if r > start:  # the first round includes compilation
            train_time += time.perf_counter() - t
            updates += cells * comp.spec.clients_per_round
        names = sorted(set(names) | set(scalars))
        acc.add(scalars)
        if bar is not None:
            bar.update(cells)
        if (r + 1) % eval_every == 0 or r + 1 == rounds:
            evaluate(r + 1)
            if stop_on_divergence and all(d is not None for d in diverged):
                if bar is not None:
                    bar.update(cells * (rounds - r - 1))
                break
    return state, {"client_updates_per_s": updates / train_time if train_time > 0 else None,
                   "diverged": diverged}


class RunResult(NamedTuple):
    history: list  # one dict per evaluation
    state: SimState
    summary: dict


def _load_checkpoint(path: str, template, cfg: dict):
    from flax import serialization

    with open(path, "rb") as f:
        blob = serialization.msgpack_restore(f.read())
    saved = blob.get("config")
    if saved is not None:
        import json

        saved = json.loads(saved)
        diff = plan_lib.first_difference(
            {k: v for k, v in saved.items() if k != "rounds"},
            {k: v for k, v in cfg.items() if k != "rounds"})
        if diff is not None:
            raise ConfigError(f"cannot resume from {path}: config field '{diff}' differs from "
                              "the checkpoint's; use the same config (only 'rounds' may change) "
                              "or another --out")
    state = serialization.from_state_dict(template, blob["state"])
    return state, float(blob["elapsed"])


def _save_checkpoint(path: str, state, elapsed: float, cfg: dict):
    from flax import serialization

    blob = {"state": serialization.to_state_dict(jax.device_get(state)), "elapsed": elapsed,
            "config": results_lib.dumps(cfg)}
    with open(path + ".tmp", "wb") as f:
        f.write(serialization.msgpack_serialize(blob))
    os.replace(path + ".tmp", path)


def run(cfg: dict, out_dir: Optional[str] = None, progress: bool = True,
        resume: bool = False, log: Callable[[str], None] | None = print) -> RunResult:
    """Runs a resolved config: the Python entry point behind ``fljax run``.

    Args:
      cfg: a resolved config (``fljax.config.resolve(DEFAULTS, get_config())``).
      out_dir: where to write the files listed in the module docstring; None
        writes nothing.
      progress: draw a progress bar over rounds.
      resume: continue from ``out_dir/checkpoint.msgpack`` if it exists (the
        config must be the same but for ``rounds``).
      log: called with one line per evaluation (None: silent).

    Returns:
      ``RunResult(history, state, summary)``.
    """
    from tqdm.auto import tqdm

    if out_dir is not None:
        prepare_out_dir(out_dir)
    plan = prepare(cfg)
    comp = compiled(plan.spec, False)
    ckpt = os.path.join(out_dir, "checkpoint.msgpack") if out_dir else None
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    history: list = []
    elapsed_before = 0.0
    state = None
    if resume and ckpt and os.path.exists(ckpt):
        k_init, _ = run_keys(cfg["seed"])
        template = jax.eval_shape(comp.round.init, plan.hparams, plan.data, k_init)
        template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
        state, elapsed_before = _load_checkpoint(ckpt, template, cfg)
        state = jax.tree_util.tree_map(jnp.asarray, state)
        history = [h for h in results_lib.read_jsonl(metrics_path)
                   if h["round"] <= int(state.round)]
        with open(metrics_path, "w") as f:  # drop lines past the checkpoint
            f.writelines(results_lib.dumps(h) + "\n" for h in history)
        if log:
            log(f"resuming from round {int(state.round)}")
    elif out_dir:
        open(metrics_path, "w").close()
    if out_dir:
        results_lib.write_json(os.path.join(out_dir, "config.json"), cfg)

    rounds = int(cfg["rounds"])
    start_round = int(state.round) if state is not None else 0
    t0 = time.perf_counter()
    bar = tqdm(total=rounds, initial=start_round, desc="rounds", disable=not progress,
               dynamic_ncols=True, leave=False)
    saved_state = {}

    def on_eval(st, r, records):
        rec = records[0]
        rec["elapsed"] = elapsed_before + time.perf_counter() - t0
        history.append(rec)
        if metrics_path:
            results_lib.append_jsonl(metrics_path, rec)
        if log:
            extra = "".join(f"  {k.replace('_accuracy', '')} acc {rec[k]:.4f}" for k in sorted(rec)
                            if k.endswith("_accuracy") and k != "main_accuracy"
                            and isinstance(rec[k], float))
            acc, loss = rec.get("main_accuracy"), rec.get("main_loss")
            line = (f"round {r:5d}  accuracy {acc:.4f}  loss {loss:.4f}{extra}  "
                    f"({rec['elapsed']:.1f}s)")
            (tqdm.write if progress else log)(line)
        if rec["diverged"] and log:
            (tqdm.write if progress else log)(
                f"fljax: warning: the model turned non-finite by round {r} (loss "
                f"{rec.get('main_loss')}); "
                + ("stopping (execution.stop_on_divergence=False goes on)"
                   if cfg["execution"]["stop_on_divergence"] else "going on"))
        if ckpt:
            _save_checkpoint(ckpt, st, rec["elapsed"], cfg)
        saved_state["state"] = st

    state, stats = run_cells(
        comp, plan.hparams, plan.data, [cfg["seed"]], rounds, cfg["eval_every"], state=state,
        on_eval=on_eval, bar=bar, stop_on_divergence=cfg["execution"]["stop_on_divergence"],
        skip_first_eval=bool(history))
    bar.close()

    wall = elapsed_before + time.perf_counter() - t0
    final = history[-1] if history else {}
    diverged_round = stats["diverged"][0]
    if diverged_round is None and history:  # a resumed run that had diverged before
        diverged_round = next((h["round"] for h in history if h.get("diverged")), None)
    summary = {
        "final_round": int(state.round),
        **{f"final_{k}": v for k, v in final.items() if k not in ("round", "elapsed", "diverged")},
        "diverged": diverged_round is not None,
        "diverged_round": diverged_round,
        "wall_time_s": wall,
        "client_updates_per_s": stats["client_updates_per_s"],
        "strategy": plan.spec.strategy,
        "device": jax.devices()[0].device_kind,
        "num_params": comp.round.dim,
        "local_steps": plan.spec.steps,
    }
    summary = results_lib.clean(summary)
    if out_dir:
        from flax import serialization

        results_lib.write_json(os.path.join(out_dir, "summary.json"), summary)
        with open(os.path.join(out_dir, "params.msgpack"), "wb") as f:
            f.write(serialization.to_bytes(jax.device_get(state.params)))
        results_lib.plot_history(history, os.path.join(out_dir, "accuracy.png"),
                                 title=f"{cfg['data']['name']} / {cfg['model']['name']} / "
                                       f"{cfg['aggregator']['name']}")
    return RunResult(history, state, summary)
