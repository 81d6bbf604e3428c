"""Memory: what a round needs, what a device has, and what a round used.

A round's working set per device is estimated in :func:`estimate` from
figures known before anything compiles:

* ``data``: the shared arrays (all training examples, offsets, the padded
  test set), on every device; on CPU also the host copy the loader keeps
  (``host``);
* ``state``: the simulation state (parameters, server optimizer, rule and
  attacker states), twice (the old and the new one during a step);
* ``clients``: ``chunk`` clients training at once, each needing its gathered
  batches plus the peak of live arrays of its local training
  (:func:`jaxpr_peak_bytes` over the traced local update: no compilation;
  within 2x of XLA's own figure for the MLP, the EMNIST dense model and the
  CNN);
* ``updates``: a dense round's ``[K, d]`` matrix (over ``D`` devices a
  ``[K_pad, d_pad / D]`` column block each), the attack's and the server
  transforms' copies of it; a streamed round holds one chunk's rows and the
  rule's accumulators instead;
* ``rule``: the working memory the rule declares (``Aggregator.memory``,
  from XLA's memory analysis of each rule) at the shapes it runs on;
* ``evaluate``: one evaluation batch through the model;
* ``runtime`` (CPU only, where the devices' memory is the process's):
  :data:`CPU_RUNTIME`, what compiling and holding a round's programs costs
  the process (measured: ~0.2 GB for the EMNIST dense model's round).

The budget (``execution.memory_gb``) is per device; 0 means the device's
own memory: an accelerator's ``bytes_limit``, or for CPU devices the host's
available memory (``MemAvailable`` when this process first prepared a run),
shared by however many CPU devices the run uses.

:class:`PeakTracker` measures what a round used: on CPU the process's peak
resident memory during the round (``VmHWM``, reset before each round
through ``/proc/self/clear_refs``), on accelerators the devices'
``peak_bytes_in_use``.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import jax
import numpy as np

GB = 1 << 30
# What compiling a round's programs and holding them costs a CPU process beyond
# its arrays (XLA's compiler heap and the generated code): 0.20 GB measured for
# the EMNIST dense model's round (tests/scale_test.py's memory test).
CPU_RUNTIME = 256 << 20


class Estimate(NamedTuple):
    """A round's memory per device, in bytes, by part (see the module docstring)."""

    parts: dict  # name -> bytes
    budget: int  # bytes per device
    devices: int  # devices sharing the budget's host (CPU) or 1
    inputs: Optional[dict] = None  # the arguments of estimate() (to re-estimate for sweeps)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def describe(self) -> str:
        """``'3.20 GB per device (data 0.50, updates 2.40, ...)'`` for messages."""
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in self.parts.items() if v > 0)
        return f"{_fmt(self.total)} per device ({parts})"


def _fmt(b: int) -> str:
    return f"{b / GB:.2f} GB" if b >= GB / 10 else f"{b / (1 << 20):.1f} MB"


def nbytes(tree) -> int:
    """Bytes of every array (or shape-dtype struct) in a pytree."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is not None and dtype is not None:
            total += int(np.prod(shape)) * np.dtype(dtype).itemsize
    return total


# ----------------------------------------------------------------------------
# What a device has


_HOST_AVAILABLE: list = []


def host_available() -> int:
    """The host memory this process may still allocate: ``MemAvailable``, read
    once per process (so every cell of a sweep sees the same budget;
    :func:`fljax.plan.prepare` reads it before it loads any data)."""
    if not _HOST_AVAILABLE:
        avail = None
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            pass
        if avail is None:
            avail = 8 * GB
        _HOST_AVAILABLE.append(avail)
    return _HOST_AVAILABLE[0]


def rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    return _rss()


def _rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def device_budget(devices: list, memory_gb: float = 0.0) -> tuple[int, int]:
    """``(bytes per device, devices sharing one host's memory)``.

    Args:
      devices: the run's devices.
      memory_gb: ``execution.memory_gb`` (per device; 0: the device's own).
    """
    cpu = all(d.platform == "cpu" for d in devices)
    local = [d for d in devices if d.process_index == jax.process_index()]
    sharing = len(local) if cpu else 1
    if memory_gb > 0:
        return int(memory_gb * GB), sharing
    if cpu:
        return host_available() // max(sharing, 1), sharing
    limits = []
    for d in local:
        try:
            stats = d.memory_stats() or {}
        except Exception:  # some backends have none
            stats = {}
        if "bytes_limit" in stats:
            limits.append(int(stats["bytes_limit"]))
    return (min(limits) if limits else 16 * GB), 1


# ----------------------------------------------------------------------------
# What a computation needs, from its jaxpr


def sub_jaxprs(eqn):
    """The jaxprs an equation holds (the bodies of ``jit``, ``cond``, ``while``,
    ``scan``, custom derivatives)."""
    for p in eqn.params.values():
        for q in (p if isinstance(p, (list, tuple)) else [p]):
            if hasattr(q, "jaxpr") and hasattr(q, "consts"):
                yield q.jaxpr
            elif hasattr(q, "eqns"):
                yield q


def _aval_bytes(v) -> int:
    aval = getattr(v, "aval", None)
    try:
        return int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
    except Exception:
        return 0


def jaxpr_peak_bytes(jaxpr) -> int:
    """The peak of live intermediate arrays of a jaxpr (inputs not counted).

    Each equation's outputs become live and an array dies at its last use;
    nested jaxprs (scan, cond, pjit, custom derivatives) add their own peak
    while they run. XLA fuses elementwise chains, so this over-counts
    somewhat: 1.8x XLA's figure for the EMNIST dense model's local training,
    0.8-0.9x for the MLP and the CNN (measured with ``memory_analysis()``).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    is_var = lambda v: not hasattr(v, "val")  # noqa: E731  (Literals carry .val)
    last: dict = {}
    n = len(jaxpr.eqns)
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if is_var(v):
                last[v] = i
    for v in jaxpr.outvars:
        if is_var(v):
            last[v] = n
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    live = top = 0
    for i, eqn in enumerate(jaxpr.eqns):
        inner = max((jaxpr_peak_bytes(s) for s in sub_jaxprs(eqn)), default=0)
        out = sum(_aval_bytes(v) for v in eqn.outvars if v in last)
        top = max(top, live + out + inner)
        live += out
        for v in {v for v in eqn.invars if is_var(v)}:
            if v not in inputs and last.get(v) == i:
                live -= _aval_bytes(v)
    return top


_CLIENT_CACHE: dict = {}


def client_bytes(spec, client_values: dict) -> int:
    """Bytes ONE client's local training needs beyond the global parameters:
    its gathered batches, the peak of its local update's live arrays
    (:func:`jaxpr_peak_bytes`, one local step traced), its flat update row
    and a transformed copy of it. Cached per model, optimizer and batch."""
    key = (spec.model, spec.client_optimizer, spec.steps, spec.batch_size, spec.input_shape,
           spec.num_classes, spec.full_batches, tuple(sorted(client_values.items())))
    if key not in _CLIENT_CACHE:
        import jax.numpy as jnp

        from fljax import models as models_lib
        from fljax.client import make_client_update
        from fljax.plan import _thaw
        from fljax.round import make_optimizer

        model = models_lib.get_model(spec.model[0], spec.input_shape, spec.num_classes,
                                     **_thaw(spec.model[1]))
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
        opt = make_optimizer(spec.client_optimizer[0], client_values,
                             _thaw(spec.client_optimizer[1]), "client")
        update = make_client_update(model.apply, opt, unroll=1, full_batches=spec.full_batches)
        b = spec.batch_size
        one_step = jax.make_jaxpr(update)(
            params, jax.ShapeDtypeStruct((1, b) + tuple(spec.input_shape), jnp.float32),
            jax.ShapeDtypeStruct((1, b), jnp.int32), jax.ShapeDtypeStruct((1, b), bool),
            jax.random.PRNGKey(0))
        batches = spec.steps * b * (4 * int(np.prod(spec.input_shape)) + 4 + 1 + 4)
        row = 2 * nbytes(params)  # the flat update and a transformed / padded copy
        _CLIENT_CACHE[key] = int(jaxpr_peak_bytes(one_step) + batches + row)
    return _CLIENT_CACHE[key]


_EVAL_CACHE: dict = {}


def evaluate_bytes(spec, eval_batch: int) -> int:
    """The peak of one evaluation batch through the model (forward only)."""
    key = (spec.model, spec.input_shape, spec.num_classes, eval_batch)
    if key not in _EVAL_CACHE:
        import jax.numpy as jnp

        from fljax import models as models_lib
        from fljax.plan import _thaw

        model = models_lib.get_model(spec.model[0], spec.input_shape, spec.num_classes,
                                     **_thaw(spec.model[1]))
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
        jx = jax.make_jaxpr(model.apply)(
            params, jax.ShapeDtypeStruct((eval_batch,) + tuple(spec.input_shape), jnp.float32))
        _EVAL_CACHE[key] = int(jaxpr_peak_bytes(jx))
    return _EVAL_CACHE[key]


# ----------------------------------------------------------------------------
# The estimate


def estimate(*, k: int, dim: int, chunk: int, shards: int, stream: bool, columns: bool,
             crafts: bool, server_tf: bool, rule_bytes, data: int, state: int, client: int,
             evaluate: int, cells: int = 1, budget: int = 0, sharing: int = 1,
             host: int = 0, cpu: bool = False, itemsize: int = 4) -> Estimate:
    """A round's memory per device (see the module docstring).

    Args:
      k: clients per round; dim: ``d``; chunk: clients training at once per
        device; shards: devices the client axis is split over.
      stream: the round streams into the rule's accumulator.
      columns: the rule runs on column blocks (dense rounds over devices).
      crafts / server_tf: an attack rewrites the matrix / server transforms
        copy it.
      rule_bytes: ``(n, d) -> bytes`` of the rule's working memory.
      data, state, client, evaluate: bytes of the shared data, of one cell's
        state, of one training client (:func:`client_bytes`) and of one
        evaluation batch.
      cells: cells per device (sweeps).
      budget, sharing: from :func:`device_budget`.
      host: bytes of host arrays in the same memory (CPU: the loader's copy
        of the data, shared by the devices: counted once per device's share).
      cpu: CPU devices (the process's own memory): add :data:`CPU_RUNTIME`.
    """
    parts = {"data": data, "host": -(-host // max(sharing, 1)), "state": 2 * state * cells,
             "clients": chunk * client * cells}
    if stream:
        parts["updates"] = (3 * dim * itemsize) * cells  # accumulators and one row's copies
    else:
        whole = k * dim * itemsize
        if shards > 1:
            k_pad = -(-k // (shards * chunk)) * shards * chunk
            block = k_pad * (-(-dim // shards)) * itemsize
            gathered = (not columns) or crafts or server_tf
            parts["updates"] = (block + (whole if gathered else 0)
                                + (whole if crafts else 0) + (whole if server_tf else 0)) * cells
            n_cols = dim if gathered else -(-dim // shards)
        else:
            parts["updates"] = (whole + (whole if crafts else 0)
                                + (whole if server_tf else 0)) * cells
            n_cols = dim
        parts["rule"] = int(rule_bytes(k, n_cols)) * cells
    parts["evaluate"] = evaluate * cells
    if cpu:
        parts["runtime"] = -(-CPU_RUNTIME // max(sharing, 1))
    inputs = dict(k=k, dim=dim, chunk=chunk, shards=shards, stream=stream, columns=columns,
                  crafts=crafts, server_tf=server_tf, rule_bytes=rule_bytes, data=data,
                  state=state, client=client, evaluate=evaluate, cells=cells, budget=budget,
                  sharing=sharing, host=host, cpu=cpu, itemsize=itemsize)
    return Estimate(parts, int(budget), sharing, inputs)


# ----------------------------------------------------------------------------
# What a round used


class PeakTracker:
    """Peak memory per round: ``reset()`` before a round, ``read()`` after it.

    CPU: the process's peak resident memory since the reset (``VmHWM`` after
    writing ``5`` to ``/proc/self/clear_refs``; where that is not allowed, the
    process's lifetime peak). Accelerators: the largest ``peak_bytes_in_use``
    of the local devices (their peak since the process started).
    """

    def __init__(self, devices: Optional[list] = None):
        devices = devices if devices is not None else jax.local_devices()
        self.devices = [d for d in devices if d.process_index == jax.process_index()]
        self.cpu = all(d.platform == "cpu" for d in self.devices)
        self.resettable = self.cpu and os.access("/proc/self/clear_refs", os.W_OK)

    def reset(self) -> None:
        if self.resettable:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.resettable = False

    def read(self) -> Optional[int]:
        """Bytes, or None where the platform reports nothing."""
        if self.cpu:
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) * 1024
            except OSError:
                pass
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peaks = []
        for d in self.devices:
            try:
                stats = d.memory_stats() or {}
            except Exception:
                stats = {}
            if "peak_bytes_in_use" in stats:
                peaks.append(int(stats["peak_bytes_in_use"]))
        return max(peaks) if peaks else None


def gb(x: Optional[float]) -> Optional[float]:
    """Bytes -> GB (None stays None), rounded to MB."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x / GB, 3)
