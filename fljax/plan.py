"""``prepare(cfg) -> Plan(spec, hparams, data)``: every check and all host work.

A resolved config (see :data:`DEFAULTS`) becomes three things:

* ``spec`` (:class:`Spec`, frozen and hashable): only what fixes shapes and
  code: the client counts, local steps, batch size, the model, the names of
  the optimizers, the rule, the transforms and the attack parts with their
  *static* arguments (``num_byzantine``, trim counts, flags), the execution
  strategy. Two configs with the same spec run as one compiled program.
* ``hparams`` (a pytree of NumPy scalars and arrays): every value a sweep may
  vary without recompiling: learning rates and optimizer values, the *value*
  arguments (annotated ``float``, :mod:`fljax.registry`) of the rule, the
  transforms and the attack, the attack schedule, the malicious mask
  ``bool[num_clients]`` and the server's root / validation example indices.
* ``data`` (:class:`RoundData`): the arrays every cell shares: all training
  examples grouped by client with their offsets and counts, and the test set
  in padded batches.

:func:`prepare` fails with one :class:`~fljax.config.ConfigError` line naming
the field, the value and what is allowed, before any training.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import typing
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fljax import execution, registry
from fljax.attacks.attacker import TestSet
from fljax.config import ConfigError

OPEN = {"*": True}

DEFAULTS: dict = {
    "seed": 0,
    "rounds": 50,
    "eval_every": 5,
    "clients_per_round": 10,
    "data": {
        "name": "digits",
        "num_clients": 100,
        "partition": "dirichlet",
        "partition_kwargs": dict(OPEN),
        "dataset_kwargs": dict(OPEN),
        "seed": 0,
    },
    "model": {"name": "mlp", "kwargs": dict(OPEN)},
    "client": {
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "optimizer_kwargs": dict(OPEN),
        "batch_size": 32,
        "epochs": 1,
        "steps": 0,  # > 0: fixed number of local steps instead of epochs
    },
    "server": {
        "optimizer": "sgd",  # sgd with learning_rate 1 is plain FedAvg
        "learning_rate": 1.0,
        "optimizer_kwargs": dict(OPEN),
    },
    "aggregator": {"name": "mean", "kwargs": dict(OPEN)},
    # Pre-aggregators that see all rows and return rows, run in front of the
    # rule (after the server transforms): [{'name': 'nnm', 'kwargs': {...}}]
    "pre_aggregation": [],
    # Per-client transforms of the update, applied by the client before it
    # sends it (clipping, noise, leakage defences): [{'name': ..., 'kwargs': {...}}]
    "client_transforms": [],
    # Server-side transforms applied to every received update before the rule.
    "server_transforms": [],
    "attack": {
        "name": "none",  # an attack from fljax.attacks.ATTACKS (update, data or backdoor)
        "kwargs": dict(OPEN),
        # Further attack parts acting together with it (e.g. a trigger and
        # boosting): [{'name': ..., 'kwargs': {...}}]
        "combine": [],
        "num_malicious": 0,  # clients 0..num_malicious-1 of the population are malicious
        # When the attackers act: rounds start <= r < stop (stop < 0: no end),
        # every `every` rounds, each with probability `probability`.
        "schedule": {"start": 0, "stop": -1, "every": 1, "probability": 1.0},
    },
    # Server-side clean data for rules that need it (FLTrust's root set,
    # ERR / LFR validation), carved from the training examples.
    "server_data": {"root_size": 100, "validation_size": 200},
    "execution": {
        "strategy": "auto",  # auto | vmap | map
        "client_chunk": 0,  # clients per chunk for map (0: what fits, see memory_gb)
        "eval_batch": 1024,
        # lax.scan unrolling of the local steps (0: all when <= 16 steps, else 8);
        # XLA:CPU runs convolutions inside loops much slower than unrolled.
        "unroll": 0,
        # A run whose model turns non-finite stops there (False: go on).
        "stop_on_divergence": True,
        # Sweeps: cells per compiled program (0: as many as fit in memory).
        "cells_per_program": 0,
        # Memory budget per device in GB (0: the device's own; for CPU devices
        # the host's available memory). The client chunk and a sweep's cells per
        # program are picked to fit it; a round that cannot fit fails before
        # training, with the figure (fljax/memory.py).
        "memory_gb": 0.0,
        # Devices the client axis (a sweep: the cell axis) is split over
        # (0: all devices, over every process of a multi-host run).
        "devices": 0,
        # auto: rules linear in the updates (mean, norm_clipping, weak_dp) stream
        # (never hold all K updates) unless an attack rewrites the matrix;
        # stream: require it; dense: always build the [K, d] matrix.
        "aggregation": "auto",
        # Save a checkpoint every N rounds (0: at every evaluation), for --resume.
        "checkpoint_every": 0,
    },
}


class RoundData(NamedTuple):
    """Device arrays shared by every cell of a run or sweep."""

    x: jax.Array  # float[N, ...] all training examples, grouped by client
    y: jax.Array  # int32[N]
    offsets: jax.Array  # int32[C]
    counts: jax.Array  # int32[C]
    test: TestSet  # padded test batches
    # One entry per attack part: the Subset a subset backdoor trains on and is
    # measured on (fljax.attacks.SUBSETS), None for the other parts.
    attack: tuple = ()


Part = tuple  # (name, frozen static kwargs, sorted value names)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What fixes shapes and code (hashable; see the module docstring)."""

    num_clients: int
    clients_per_round: int
    steps: int
    epochs: int
    batch_size: int
    max_count: int
    full_batches: bool
    unroll: int
    input_shape: tuple
    num_classes: int
    model: Part
    client_optimizer: Part
    server_optimizer: Part
    aggregator: Part
    pre_aggregation: tuple  # of Parts
    client_transforms: tuple
    server_transforms: tuple
    attack: tuple  # of Parts; () = no attack
    strategy: str
    chunk: int
    root_size: int
    validation_size: int
    aggregation: str = "dense"  # 'stream' | 'dense' (resolved)
    devices: int = 1  # devices of the run (resolved; the client or cell axis is split over them)

    def kwargs(self, part: Part) -> dict:
        """The static keyword arguments of a part, as a dict again."""
        return _thaw(part[1])


class Plan(NamedTuple):
    spec: Spec
    hparams: dict
    data: RoundData
    cfg: dict
    federated: Any  # the host FederatedData (names, sizes, for reports)
    memory: Any = None  # fljax.memory.Estimate of one round (per device)


def _thaw(frozen):
    if isinstance(frozen, tuple) and all(isinstance(t, tuple) and len(t) == 2 and
                                         isinstance(t[0], str) for t in frozen):
        return {k: _thaw(v) for k, v in frozen}
    if isinstance(frozen, tuple):
        return [_thaw(v) for v in frozen]
    return frozen


# ----------------------------------------------------------------------------
# Checks


def _fail(path: str, value, allowed: str):
    raise ConfigError(f"config field '{path}' = {value!r} is not allowed: {allowed}")


def _int_at_least(cfg_value, path: str, low: int) -> int:
    if isinstance(cfg_value, bool) or not isinstance(cfg_value, (int, np.integer)) \
            or cfg_value < low:
        _fail(path, cfg_value, f"it must be an integer >= {low}")
    return int(cfg_value)


def _number_at_least(value, path: str, low: float, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > low if strict else value >= low)
    if not ok:
        _fail(path, value, f"it must be a finite number {'>' if strict else '>='} {low}")
    return float(value)


def _annotation_check(factory: Callable, kwargs: dict, path: str) -> None:
    """Unknown keyword arguments and values of the wrong type, by annotation."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(factory)
    except Exception:
        hints = {}
    for k, v in kwargs.items():
        if k not in params and not takes_any:
            known = ", ".join(n for n, p in params.items()
                              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) or "none"
            raise ConfigError(f"config field '{path}.{k}' is not an argument of "
                              f"{getattr(factory, '__name__', factory)!r}; its arguments: {known}")
        hint = hints.get(k)
        if hint is int and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool)):
            if not (isinstance(v, float) and float(v).is_integer()):
                _fail(f"{path}.{k}", v, "it must be an integer")
        if hint is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            _fail(f"{path}.{k}", v, "it must be a number")
        if hint is bool and not isinstance(v, bool):
            _fail(f"{path}.{k}", v, "it must be true or false")
        if hint is str and not isinstance(v, str):
            _fail(f"{path}.{k}", v, "it must be a string")


def _normalise_ints(factory: Callable, kwargs: dict) -> dict:
    """``num_trim=4.0`` (from ``--set``) -> 4 for arguments annotated ``int``."""
    try:
        hints = typing.get_type_hints(factory)
    except Exception:
        return kwargs
    return {k: (int(v) if hints.get(k) is int and isinstance(v, float) else v)
            for k, v in kwargs.items()}


def call_factory(factory: Callable, path: str, *args, **kwargs):
    """Calls a factory with a config's arguments; errors become one ConfigError line."""
    _annotation_check(factory, kwargs, path)
    try:
        return factory(*args, **_normalise_ints(factory, kwargs))
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_kernel(spec: str, path: str):
    """``'module:function'`` (e.g. ``'kernels.order_stats:rank_weighted_sum'``) -> the function.

    Imported by name; if the module has ``available()``, it is asked first, so
    a kernel that cannot be built here fails before any work.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"{path} must be 'module:function', got {spec!r} "
                          "(e.g. 'kernels.order_stats:rank_weighted_sum')")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{path}={spec!r}: {e}") from None
    if hasattr(module, "available"):
        ok, why = module.available()
        if not ok:
            raise ConfigError(f"{path}={spec!r} cannot be used here: {why} "
                              "(drop the kernel to use the jnp path)")
    return fn


# ----------------------------------------------------------------------------
# Parts: (name, static kwargs, value names), and their values


def _value_defaults(factory: Callable) -> dict:
    """Signature defaults of the value arguments that are numbers."""
    out = {}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return out
    for name in registry.value_params(factory):
        p = params.get(name)
        if p is not None and isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
            out[name] = float(p.default)
    return out


def _part(factory: Callable, name: str, kwargs: dict) -> tuple[Part, dict]:
    """Splits a component's kwargs into its static part and its values (with
    the factory's numeric defaults filled in, so every cell has every value)."""
    static, values = registry.split_kwargs(factory, _normalise_ints(factory, kwargs))
    full = {**_value_defaults(factory), **values}
    static = {k: v for k, v in static.items() if k not in full}
    return (name, registry.freeze(static), tuple(sorted(full))), full


def _f32(values: dict) -> dict:
    return {k: np.float32(v) for k, v in values.items()}


def optimizer_part(section: dict, path: str) -> tuple[Part, dict]:
    name = section["optimizer"]
    registry.get("optimizer", name, f"{path}.optimizer")
    _number_at_least(section["learning_rate"], f"{path}.learning_rate", 0.0)
    static, values = {}, {"learning_rate": float(section["learning_rate"])}
    for k, v in section["optimizer_kwargs"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[k] = float(v)
        else:
            static[k] = v
    # Build once with Python values: bad keyword arguments fail here.
    from fljax.round import make_optimizer

    make_optimizer(name, values, static, path)
    return (name, registry.freeze(static), tuple(sorted(values))), values


# ----------------------------------------------------------------------------
# prepare


_DATA_CACHE: dict = {}


def load_data(dc: dict):
    """The host ``FederatedData`` of a config's ``data`` section (cached per section)."""
    from fljax import data as data_lib

    key = json.dumps(dc, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        registry.get("dataset", dc["name"], "data.name")
        registry.get("partition", dc["partition"], "data.partition") \
            if dc["partition"] != "natural" else None
        _int_at_least(dc["num_clients"], "data.num_clients", 1)
        try:
            fed = data_lib.build(dc["name"], dc["num_clients"], dc["partition"], dc["seed"],
                                 dc["partition_kwargs"], dc["dataset_kwargs"])
        except ConfigError:
            raise
        except (ValueError, TypeError, OSError) as e:
            raise ConfigError(f"data: {e}") from None
        if len(_DATA_CACHE) > 8:
            _DATA_CACHE.clear()
        _DATA_CACHE[key] = fed
    return _DATA_CACHE[key]


def _check_scalars(cfg: dict) -> None:
    _int_at_least(cfg["rounds"], "rounds", 0)
    _int_at_least(cfg["eval_every"], "eval_every", 1)
    _int_at_least(cfg["seed"], "seed", 0)
    _int_at_least(cfg["data"]["seed"], "data.seed", 0)
    cc = cfg["client"]
    _int_at_least(cc["batch_size"], "client.batch_size", 1)
    _int_at_least(cc["epochs"], "client.epochs", 0)
    _int_at_least(cc["steps"], "client.steps", 0)
    if cc["epochs"] < 1 and cc["steps"] < 1:
        raise ConfigError(f"client.epochs = {cc['epochs']} and client.steps = {cc['steps']}: "
                          "one of them must be >= 1")
    ex = cfg["execution"]
    if ex["strategy"] not in execution.STRATEGIES:
        _fail("execution.strategy", ex["strategy"], "one of " + ", ".join(execution.STRATEGIES))
    _int_at_least(ex["client_chunk"], "execution.client_chunk", 0)
    _int_at_least(ex["eval_batch"], "execution.eval_batch", 1)
    _int_at_least(ex["unroll"], "execution.unroll", 0)
    _int_at_least(ex["cells_per_program"], "execution.cells_per_program", 0)
    _int_at_least(ex["devices"], "execution.devices", 0)
    _int_at_least(ex["checkpoint_every"], "execution.checkpoint_every", 0)
    _number_at_least(ex["memory_gb"], "execution.memory_gb", 0.0)
    if ex["aggregation"] not in ("auto", "stream", "dense"):
        _fail("execution.aggregation", ex["aggregation"], "one of auto, stream, dense")
    sd = cfg["server_data"]
    _int_at_least(sd["root_size"], "server_data.root_size", 0)
    _int_at_least(sd["validation_size"], "server_data.validation_size", 0)
    sch = cfg["attack"]["schedule"]
    _int_at_least(sch["start"], "attack.schedule.start", 0)
    if isinstance(sch["stop"], bool) or not isinstance(sch["stop"], int):
        _fail("attack.schedule.stop", sch["stop"], "it must be an integer (< 0: no end)")
    _int_at_least(sch["every"], "attack.schedule.every", 1)
    p = sch["probability"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        _fail("attack.schedule.probability", p, "it must be a number in (0, 1]")


def _transform_parts(specs, path: str, shapes,
                     kind: str = "transform") -> tuple[tuple, list, list]:
    """The parts of a list of ``{'name', 'kwargs'}`` stages (transforms or
    pre-aggregators), their values, and the stages built once with the
    config's Python values (which checks them)."""
    parts, values, built = [], [], []
    if not isinstance(specs, list):
        _fail(path, specs, "it must be a list of {'name': ..., 'kwargs': {...}}")
    for i, spec in enumerate(specs):
        p = f"{path}[{i}]"
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{p} must be a dict with 'name' and optional 'kwargs', got {spec!r}")
        extra = set(spec) - {"name", "kwargs"}
        if extra:
            raise ConfigError(f"{p} has unknown fields {sorted(extra)}; use 'name' and 'kwargs'")
        factory = registry.get(kind, spec["name"], f"{p}.name")
        kwargs = dict(spec.get("kwargs") or {})
        full = dict(kwargs)
        if "shapes" in inspect.signature(factory).parameters:
            full.setdefault("shapes", shapes)
        built.append(call_factory(factory, f"{p}.kwargs", **full))
        part, vals = _part(factory, spec["name"], kwargs)
        parts.append(part)
        values.append(_f32(vals))
    return tuple(parts), values, built


def _attack_parts(ac: dict, fed, eval_batch: int = 1024,
                  model=None) -> tuple[tuple, list, tuple, list, Any]:
    """The attack parts, their values, their subsets (host arrays, None for
    parts without one), the built attacks and the data (without the examples a
    subset holds out)."""
    from fljax import attacks as attacks_lib

    entries = []
    if ac["name"] != "none":
        entries.append(("attack", {"name": ac["name"], "kwargs": ac["kwargs"]}))
    elif ac["kwargs"]:
        raise ConfigError(f"attack.kwargs = {ac['kwargs']!r} is given but attack.name is 'none'; "
                          "name an attack or drop the kwargs (--set attack.kwargs={})")
    if not isinstance(ac["combine"], list):
        _fail("attack.combine", ac["combine"], "it must be a list of {'name': ..., 'kwargs': {...}}")
    for i, spec in enumerate(ac["combine"]):
        if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "kwargs"}:
            raise ConfigError(f"attack.combine[{i}] must be a dict with 'name' and optional "
                              f"'kwargs', got {spec!r}")
        entries.append((f"attack.combine[{i}]", spec))
    parts, values, subsets, built = [], [], [], []
    for path, spec in entries:
        name = spec["name"]
        factory = registry.get("attack", name, f"{path}.name" if path != "attack" else "attack.name")
        kwargs = dict(spec.get("kwargs") or {})
        data_args = attacks_lib.data_arguments(factory, fed.num_classes, fed.input_shape)
        selector = attacks_lib.subset_selector(factory)
        extra, subset = {}, None
        if selector is not None:
            if "subset" in kwargs:
                raise ConfigError(f"{path}.kwargs.subset is chosen by the simulator; drop it")
            _annotation_check(factory, kwargs, f"{path}.kwargs")
            chosen = {k: p.default for k, p in inspect.signature(factory).parameters.items()
                      if p.default is not inspect.Parameter.empty}
            try:
                subset, fed = selector(fed, batch=eval_batch,
                                       **{**chosen, **_normalise_ints(factory, kwargs)})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}.kwargs: {e}") from None
            extra = {"subset": subset}
        if attacks_lib.needs_model(factory):
            if "model" in kwargs:
                raise ConfigError(f"{path}.kwargs.model is supplied by the simulator (the "
                                  "config's model); drop it")
            extra["model"] = model
        built.append(call_factory(factory, f"{path}.kwargs", *data_args, **kwargs, **extra))
        part, vals = _part(factory, name, kwargs)
        parts.append(part)
        values.append(_f32(vals))
        subsets.append(subset)
    return tuple(parts), values, tuple(subsets), built, fed


def build_rule(name: str, kwargs: dict, resources: dict, path: str = "aggregator",
               check: bool = False):
    """Builds a rule by name: kernel names resolved, nested rules (a kwarg that
    is a dict with ``name``, e.g. ERR's ``base``) built recursively, and the
    server resources the factory names (:data:`fljax.aggregators.RESOURCES`)
    filled in from ``resources``. ``check`` turns errors into one
    :class:`ConfigError` naming ``path``."""
    from fljax import aggregators as aggregators_lib

    factory = registry.get("aggregator", name, f"{path}.name")
    kwargs = dict(kwargs)
    needs = aggregators_lib.resource_arguments(factory)
    for r in needs:
        if r in kwargs and r != "num_clients":
            raise ConfigError(f"{path}.kwargs.{r} is supplied by the simulator; drop it")
    for k_, v in list(kwargs.items()):
        if k_ == "kernel" and isinstance(v, str) and ":" in v:
            kwargs[k_] = resolve_kernel(v, f"{path}.kwargs.kernel")
        elif isinstance(v, dict) and "name" in v:
            extra = set(v) - {"name", "kwargs"}
            if extra:
                raise ConfigError(f"{path}.kwargs.{k_} has unknown fields {sorted(extra)}; use "
                                  "'name' and 'kwargs'")
            kwargs[k_] = build_rule(v["name"], v.get("kwargs") or {}, resources,
                                    f"{path}.kwargs.{k_}", check)
    for r in needs:
        kwargs.setdefault(r, resources[r])
    if check:
        return call_factory(factory, f"{path}.kwargs", **kwargs)
    return factory(**kwargs)


def _aggregator_part(ac: dict, fed, k: int):
    from fljax import aggregators as aggregators_lib

    name = ac["name"]
    factory = registry.get("aggregator", name, "aggregator.name")
    kwargs = dict(ac["kwargs"])
    placeholders = {"server_update_fn": _placeholder_resource, "eval_fn": _placeholder_resource,
                    "num_clients": fed.num_clients}
    rule = build_rule(name, kwargs, placeholders, "aggregator", check=True)
    resources = aggregators_lib.resource_arguments(factory)
    value_kwargs = {k_: v for k_, v in kwargs.items() if k_ not in resources}
    part, vals = _part(factory, name, value_kwargs)
    return part, _f32(vals), rule


def _rule_resources(ac: dict) -> set:
    """The server resources a rule (and the rules nested in its kwargs) take."""
    from fljax import aggregators as aggregators_lib

    factory = registry.get("aggregator", ac["name"], "aggregator.name")
    out = set(aggregators_lib.resource_arguments(factory))
    for v in (ac.get("kwargs") or {}).values():
        if isinstance(v, dict) and "name" in v:
            out |= _rule_resources(v)
    return out


def _placeholder_resource(*args, **kwargs):  # stands in for a server resource at check time
    raise AssertionError("placeholder resource called")


_TRACE_CACHE: dict = {}


def _trace_rule(spec: Spec, hparams: dict, data) -> None:
    """Traces the rule on ``[K, d]`` (with the real resources) so that its
    shape-dependent checks (Krum's n > 2f + 2, Bulyan's n >= 4f + 3, trimming
    2b < n) fail before training. Cached per (rule part, K, d)."""
    from fljax import round as round_lib

    key = (spec.aggregator, spec.pre_aggregation, spec.clients_per_round, spec.model,
           spec.input_shape, spec.num_classes, spec.root_size, spec.validation_size)
    if key in _TRACE_CACHE:
        if _TRACE_CACHE[key] is not None:
            raise ConfigError(_TRACE_CACHE[key])
        return
    try:
        round_lib.trace_aggregator(spec, hparams, data)
        _TRACE_CACHE[key] = None
    except ValueError as e:
        msg = f"aggregator with clients_per_round = {spec.clients_per_round}: {e}"
        _TRACE_CACHE[key] = msg
        raise ConfigError(msg) from None
    if spec.attack:
        akey = ("attack", spec.attack, spec.aggregator, spec.clients_per_round, spec.model,
                spec.input_shape, spec.num_classes)
        if akey not in _TRACE_CACHE:
            try:
                round_lib.trace_attack(spec, hparams, data)
                _TRACE_CACHE[akey] = None
            except ValueError as e:
                _TRACE_CACHE[akey] = f"attack with clients_per_round = {spec.clients_per_round}: {e}"
        if _TRACE_CACHE[akey] is not None:
            raise ConfigError(_TRACE_CACHE[akey])


def prepare(cfg: dict, check: bool = True) -> Plan:
    """Checks a resolved config and does all host work (see the module docstring).

    Args:
      cfg: a resolved config (``fljax.config.resolve(DEFAULTS, get_config())``).
      check: trace the rule on the round's shapes (False skips it: callers
        that already checked a config with the same spec).
    """
    from fljax import data as data_lib
    from fljax import models as models_lib
    from fljax import transforms as transforms_lib
    from fljax import metrics as metrics_lib

    from fljax import memory as memory_lib

    memory_lib.host_available()  # read before this run's data exists (once per process)
    _check_scalars(cfg)
    dc = cfg["data"]
    k = cfg["clients_per_round"]
    _int_at_least(dc["num_clients"], "data.num_clients", 1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= dc["num_clients"]:
        raise ConfigError(f"clients_per_round = {k!r} must be between 1 and data.num_clients = "
                          f"{dc['num_clients']}; lower clients_per_round or add clients")
    registry.get("model", cfg["model"]["name"], "model.name")
    c_part, c_values = optimizer_part(cfg["client"], "client")
    s_part, s_values = optimizer_part(cfg["server"], "server")
    ac = cfg["attack"]
    nm = ac["num_malicious"]
    if isinstance(nm, bool) or not isinstance(nm, int) or not 0 <= nm <= dc["num_clients"]:
        raise ConfigError(f"attack.num_malicious = {nm!r} must be between 0 and "
                          f"data.num_clients = {dc['num_clients']}")
    if ac["name"] == "none" and not ac["combine"] and nm > 0:
        raise ConfigError(f"attack.num_malicious = {nm} but attack.name is 'none': name an "
                          "attack (attack.name=...) or set attack.num_malicious=0")

    fed = load_data(dc)
    model_factory = registry.get("model", cfg["model"]["name"], "model.name")
    model = call_factory(model_factory, "model.kwargs", fed.input_shape, fed.num_classes,
                         **cfg["model"]["kwargs"])
    param_shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    shapes = transforms_lib.tensor_shapes(param_shapes)

    ct_parts, ct_values, _ = _transform_parts(cfg["client_transforms"], "client_transforms",
                                              shapes)
    st_parts, st_values, _ = _transform_parts(cfg["server_transforms"], "server_transforms",
                                              shapes)
    pa_parts, pa_values, stages = _transform_parts(cfg["pre_aggregation"], "pre_aggregation",
                                                   shapes, "pre_aggregator")
    a_parts, a_values, a_subsets, a_built, fed = _attack_parts(ac, fed,
                                                               cfg["execution"]["eval_batch"],
                                                               model)
    groups = max([getattr(b, "groups", 1) for b in a_built] or [1])
    if 0 < nm < groups:
        raise ConfigError(f"attack.num_malicious = {nm} is fewer than the attack's {groups} "
                          f"attacker groups (one target each); raise attack.num_malicious to "
                          f"at least {groups} or give fewer targets (0 runs without attackers)")
    agg_part, agg_values, rule = _aggregator_part(cfg["aggregator"], fed, k)
    if stages:  # the rule as the round runs it (pre-aggregators see all rows: never streamed)
        from fljax import aggregators as aggregators_lib

        rule = aggregators_lib.compose(*stages, aggregator=rule)

    cc = cfg["client"]
    steps = data_lib.num_local_steps(fed.max_client_size, cc["batch_size"], cc["epochs"],
                                     cc["steps"])
    epochs = 0 if cc["steps"] else cc["epochs"]
    full_batches = bool(cc["steps"] or (fed.counts.min() == fed.counts.max() and
                                        (cc["epochs"] * fed.max_client_size) % cc["batch_size"]
                                        == 0))
    unroll = cfg["execution"]["unroll"] or (steps if steps <= 16 else 8)
    from fljax.attacks.attacker import as_attacker, combine

    crafts = bool(a_built) and combine(*map(as_attacker, a_built)).craft is not None
    aggregation = _aggregation(cfg, rule, crafts)
    devices = _devices(cfg["execution"]["devices"])

    # Server-side clean data: indices into the training examples, by seed.
    sd = cfg["server_data"]
    n_train = len(fed.y)
    from fljax import aggregators as aggregators_lib

    needs = _rule_resources(cfg["aggregator"])
    if "server_update_fn" in needs and sd["root_size"] < 1:
        _fail("server_data.root_size", sd["root_size"],
              f"{cfg['aggregator']['name']} trains on the server's root set: it must be >= 1")
    if "eval_fn" in needs and sd["validation_size"] < 1:
        _fail("server_data.validation_size", sd["validation_size"],
              f"{cfg['aggregator']['name']} evaluates on the server's validation set: "
              "it must be >= 1")
    # Only what the rule uses is carved out (and must fit in the training data).
    root_size = sd["root_size"] if "server_update_fn" in needs else 0
    val_size = sd["validation_size"] if "eval_fn" in needs else 0
    if root_size + val_size > n_train:
        raise ConfigError(f"server_data.root_size + server_data.validation_size = "
                          f"{root_size + val_size} exceeds the {n_train} training examples of "
                          f"{fed.name}; lower them")
    rng = np.random.default_rng(cfg["seed"] + 7)
    pick = rng.permutation(n_train)
    root = pick[:root_size].astype(np.int32)
    val = pick[root_size:root_size + val_size].astype(np.int32)

    malicious = np.zeros(fed.num_clients, bool)
    malicious[:nm] = True
    sch = ac["schedule"]

    spec = Spec(
        num_clients=fed.num_clients, clients_per_round=k, steps=steps, epochs=epochs,
        batch_size=cc["batch_size"], max_count=fed.max_client_size, full_batches=full_batches,
        unroll=unroll, input_shape=tuple(fed.input_shape), num_classes=fed.num_classes,
        model=(cfg["model"]["name"], registry.freeze(cfg["model"]["kwargs"]), ()),
        client_optimizer=c_part, server_optimizer=s_part, aggregator=agg_part,
        pre_aggregation=pa_parts, client_transforms=ct_parts, server_transforms=st_parts,
        attack=a_parts, strategy="map", chunk=1, root_size=int(root_size),
        validation_size=int(val_size), aggregation=aggregation, devices=len(devices))
    hparams = {
        "client": _f32(c_values),
        "server": _f32(s_values),
        "aggregator": agg_values,
        "pre_aggregation": pa_values,
        "client_transforms": ct_values,
        "server_transforms": st_values,
        "attack": a_values,
        "schedule": {"start": np.int32(sch["start"]), "stop": np.int32(sch["stop"]),
                     "every": np.int32(sch["every"]),
                     "probability": np.float32(sch["probability"])},
        "malicious": malicious,
        "root_idx": root,
        "val_idx": val,
    }
    test = metrics_lib.test_set(fed.x_test, fed.y_test, cfg["execution"]["eval_batch"])
    data = RoundData(jnp.asarray(fed.x), jnp.asarray(fed.y), jnp.asarray(fed.offsets),
                     jnp.asarray(fed.counts), TestSet(*(jnp.asarray(a) for a in test)),
                     attack=tuple(None if sub is None else jax.tree_util.tree_map(jnp.asarray, sub)
                                  for sub in a_subsets))
    host = sum(np.asarray(a).nbytes for a in (fed.x, fed.y, fed.x_test, fed.y_test))
    spec, estimate = fit_memory(cfg, spec, hparams, data, rule, crafts, devices, host=host)
    if check:
        _trace_rule(spec, hparams, data)
    return Plan(spec, hparams, data, cfg, fed, estimate)


def _aggregation(cfg: dict, rule, crafts: bool) -> str:
    """``'stream'`` or ``'dense'`` (``execution.aggregation``; see DEFAULTS)."""
    mode = cfg["execution"]["aggregation"]
    if mode == "dense":
        return "dense"
    why = None
    if rule.stream is None:
        why = (f"aggregator {cfg['aggregator']['name']!r} has no streaming form (only rules "
               "linear in the updates do: mean, norm_clipping, weak_dp)")
    elif crafts:
        why = (f"attack {cfg['attack']['name']!r} rewrites rows seeing the whole update matrix, "
               "which a streamed round never holds")
    if why is None:
        return "stream"
    if mode == "stream":
        _fail("execution.aggregation", mode, why + "; use 'auto' or 'dense'")
    return "dense"


def _devices(requested: int) -> list:
    """The run's devices: ``requested`` of them (0: all, over every process)."""
    devices = jax.devices()
    if requested > len(devices):
        kinds = sorted({f"{d.platform}" for d in devices})
        _fail("execution.devices", requested,
              f"only {len(devices)} {'/'.join(kinds)} device(s) exist "
              f"({jax.process_count()} process(es)); use 0 (all) or at most {len(devices)}"
              + (" (XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N CPU devices)"
                 if kinds == ["cpu"] else ""))
    return devices[:requested] if requested else devices


def fit_memory(cfg: dict, spec: Spec, hparams: dict, data, rule, crafts: bool,
               devices: list, cells: int = 1, host: int = 0):
    """Picks the client chunk (and strategy) that fits the memory budget.

    ``execution.strategy`` / ``client_chunk`` as given are kept when they fit
    (else one :class:`ConfigError` line with the figure); ``auto`` is ``map``
    one client at a time on CPU (the fastest there) and elsewhere the largest
    chunk that fits (``vmap`` when all K do). A budget too small for one
    client, or for a rule that needs all K updates at once, fails here.

    Returns:
      ``(spec with strategy and chunk, fljax.memory.Estimate)``.
    """
    from fljax import memory as memory_lib
    from fljax import round as round_lib
    from fljax.aggregators.base import rule_memory

    ex = cfg["execution"]
    k = spec.clients_per_round
    budget, sharing = memory_lib.device_budget(devices, ex["memory_gb"])
    shards = len(devices)
    template = jax.eval_shape(lambda: round_lib.make_round(spec).init(
        hparams, data, jax.random.PRNGKey(0)))
    dim = memory_lib.nbytes(template.params) // 4
    fixed = dict(
        k=k, dim=dim, shards=shards, stream=spec.aggregation == "stream",
        columns=bool(rule.columns), crafts=crafts, server_tf=bool(spec.server_transforms),
        rule_bytes=lambda n, d: rule_memory(rule, n, d),
        data=memory_lib.nbytes(data), state=memory_lib.nbytes(template),
        client=memory_lib.client_bytes(spec, hparams["client"]),
        evaluate=memory_lib.evaluate_bytes(spec, ex["eval_batch"]),
        cells=cells, budget=budget, sharing=sharing,
        host=host if devices[0].platform == "cpu" else 0, cpu=devices[0].platform == "cpu")
    est = lambda c: memory_lib.estimate(chunk=c, **fixed)  # noqa: E731
    per_device = -(-k // shards)
    strategy, chunk = ex["strategy"], ex["client_chunk"]
    if strategy == "auto" and chunk:
        strategy = "map"  # a chunk given: chunks of it
    where = (f"execution.memory_gb = {ex['memory_gb']}" if ex["memory_gb"] > 0 else
             f"the {budget / memory_lib.GB:.2f} GB this device has")
    if strategy == "vmap" or (strategy == "map" and chunk):
        c = per_device if strategy == "vmap" else min(chunk, per_device)
        e = est(c)
        if not e.fits:
            raise ConfigError(
                f"execution.strategy = {strategy!r}"
                + (f" with client_chunk = {chunk}" if strategy == "map" else "")
                + f" needs {e.describe()}, more than {where}; use strategy 'auto' (it picks a "
                "chunk that fits), a smaller client_chunk or fewer clients_per_round")
        strategy = "vmap" if strategy == "vmap" else "map"
    else:
        auto = execution.default_strategy(devices[0].platform)
        e = est(1)
        if not e.fits:
            rows = e.parts.get("updates", 0) + e.parts.get("rule", 0)
            if not fixed["stream"] and e.total - rows <= budget:
                raise ConfigError(
                    f"aggregator {cfg['aggregator']['name']!r} needs all {k} updates of a round "
                    f"at once: {e.describe()}, more than {where}; lower clients_per_round, "
                    "use more devices (execution.devices), raise execution.memory_gb, or a "
                    "streaming rule (mean, norm_clipping, weak_dp)")
            raise ConfigError(
                f"{where[0].lower() + where[1:]} is too small for one client: a round with one "
                f"client at a time needs {e.describe()}; raise execution.memory_gb")
        if strategy == "map" or auto == "map":
            c = 1 if strategy == "auto" else per_device
            while c > 1 and not est(c).fits:
                c = -(-c // 2)
            strategy = "map"
        else:  # accelerators: the largest chunk that fits (all K at once: vmap)
            c = per_device
            while c > 1 and not est(c).fits:
                c = -(-c // 2)
            strategy = "vmap" if c >= per_device and shards == 1 else "map"
        e = est(c)
    chunk = per_device if strategy == "vmap" else c
    if shards == 1:
        chunk = min(chunk, k)
    return dataclasses.replace(spec, strategy=strategy, chunk=chunk), e


def fingerprint(cfg: dict, ignore: tuple = ("rounds",)) -> str:
    """A short hash of a config (without ``ignore`` keys) for checkpoints and sweeps."""
    c = {k: v for k, v in cfg.items() if k not in ignore}
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """The dotted path of the first field where two configs differ (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}{k}"
            d = first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        return None
    if a != b:
        return path.rstrip(".") or "(root)"
    return None
