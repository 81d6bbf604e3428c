"""The federated round and the loop that runs it.

One round (DESIGN.md):

  sample K clients -> gather their batches [K, S, B, ...] -> local training of
  all K at once -> flat updates float[K, d] -> client transforms (clip / noise /
  leakage defences) -> update-level attack -> aggregator -> server optimizer.

The pieces are pure functions and the execution strategy only decides how
they are composed:

* ``vmap``: the whole round is ONE jitted function; all K clients train in one
  batched computation (the accelerator default).
* ``map``: one jitted round; clients train ``client_chunk`` at a time in a
  ``lax.scan`` that writes their updates into a [K, d] buffer reused across
  rounds (bounded memory; the CPU default).
* ``chunked``: a Python loop over chunks of ``client_chunk`` clients, each chunk
  one jitted vmapped call; the server step is jitted.
* ``sequential``: a Python loop over clients, one jitted local training each.

All strategies compute the same thing with the same keys (tested).
:func:`simulate_reference` is the readable Python-loop version of FedAvg the
tests compare against.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from fljax import aggregators as aggregators_lib
from fljax import data as data_lib
from fljax import models as models_lib
from fljax import transforms as transforms_lib
from fljax.aggregators.base import AggregationContext
from fljax.client import make_client_update
from fljax.config import ConfigError, choice
from fljax.types import Params, PRNGKey

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
    # Per-client transforms of the update, applied by the client before it
    # sends it (clipping, noise, leakage defences): [{'name': ..., 'kwargs': {...}}]
    "client_transforms": [],
    # Server-side transforms applied to every received update before the rule.
    "server_transforms": [],
    "attack": {
        "name": "none",  # an update-level attack from fljax.attacks.UPDATE_ATTACKS
        "num_malicious": 0,  # clients 0..num_malicious-1 of the population are malicious
        "kwargs": dict(OPEN),
    },
    # Server-side clean data for rules that need it (FLTrust's root set,
    # ERR / LFR validation), carved from the training examples.
    "server_data": {"root_size": 100, "validation_size": 200},
    "execution": {
        "strategy": "auto",  # auto | vmap | map | chunked | sequential
        "client_chunk": 0,  # clients per chunk for map / chunked (0: all)
        "eval_batch": 1024,
        # lax.scan unrolling of the local steps (0: all when <= 16 steps, else 8);
        # XLA:CPU runs convolutions inside loops much slower than unrolled.
        "unroll": 0,
    },
}

STRATEGIES = ("auto", "vmap", "map", "chunked", "sequential")
OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "yogi", "rmsprop", "adamw")


class ServerState(NamedTuple):
    """Everything that changes between rounds."""

    params: Params
    opt_state: Any
    agg_state: Any
    round: jax.Array  # int32 scalar: rounds done


class RoundInfo(NamedTuple):
    client_ids: jax.Array  # int32[K]
    train_loss: jax.Array  # mean over clients
    update_norms: jax.Array  # float[K]: L2 norms of the updates the server received
    agg_info: dict


def default_strategy() -> tuple[str, int]:
    """``(strategy, client_chunk)`` for ``strategy='auto'``.

    On CPU: ``map`` one client at a time inside one jitted round. Measured on 2
    cores with 100 clients of the FedJAX dense model (64 examples, batch 32,
    client-updates/s, one process, noisy): ``map`` 920-1,170, chunks of 5
    880-1,160, ``sequential`` 790-1,030, ``chunked`` by 10 ~950, ``vmap`` ~420
    (XLA:CPU runs batched small matmuls badly). Elsewhere: ``vmap`` of all
    clients at once.
    """
    return ("map", 1) if jax.default_backend() == "cpu" else ("vmap", 0)


def make_optimizer(name: str, learning_rate: float, kwargs: dict | None = None,
                   path: str = "client.optimizer") -> optax.GradientTransformation:
    """An optax optimizer by name (``momentum`` is SGD with momentum 0.9 by default)."""
    kwargs = dict(kwargs or {})
    choice(path, name, OPTIMIZERS)
    if name == "momentum":
        kwargs.setdefault("momentum", 0.9)
        name = "sgd"
    try:
        return getattr(optax, name)(learning_rate, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{path}: bad optimizer_kwargs for {name!r}: {e}") from None


def _build_transforms(specs, path: str, shapes=None):
    """Builds a chain of named transforms; per-tensor ones (prune, quantize,
    row noise) get the parameter tensor shapes."""
    out = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{path}[{i}] must be a dict with 'name' and optional 'kwargs'")
        extra = set(spec) - {"name", "kwargs"}
        if extra:
            raise ConfigError(f"{path}[{i}] has unknown fields {sorted(extra)}; use 'name' and "
                              "'kwargs'")
        choice(f"{path}[{i}].name", spec["name"], transforms_lib.TRANSFORMS)
        try:
            out.append(transforms_lib.get_transform(spec["name"], shapes=shapes,
                                                    **spec.get("kwargs", {})))
        except TypeError as e:
            raise ConfigError(f"{path}[{i}]: bad kwargs for {spec['name']!r}: {e}") from None
    return transforms_lib.chain(*out) if out else None


@dataclasses.dataclass
class Experiment:
    """A built experiment: data on the device, the pure pieces, and the round."""

    cfg: dict
    data: data_lib.FederatedData
    model: models_lib.Model
    steps: int
    strategy: str
    init_state: Callable[[PRNGKey], ServerState]
    round_fn: Callable[[ServerState, PRNGKey], tuple[ServerState, RoundInfo]]
    evaluate: Callable[[Params], dict]
    malicious: np.ndarray  # bool[num_clients]
    num_params: int  # d, the length of a flat update


def build(cfg: dict) -> Experiment:
    """Builds an experiment from a resolved config (see :data:`DEFAULTS`).

    Every check that can fail runs here, before any training.
    """
    dc = cfg["data"]
    k = int(cfg["clients_per_round"])
    if dc["num_clients"] < 1:
        raise ConfigError("data.num_clients must be >= 1")
    if k < 1 or k > dc["num_clients"]:
        raise ConfigError(f"clients_per_round = {k} must be between 1 and data.num_clients = "
                          f"{dc['num_clients']}; lower clients_per_round or add clients")
    if cfg["rounds"] < 0 or cfg["eval_every"] < 1:
        raise ConfigError("rounds must be >= 0 and eval_every >= 1")
    choice("data.name", dc["name"], data_lib.DATASETS)
    choice("data.partition", dc["partition"], data_lib.PARTITIONS)
    choice("model.name", cfg["model"]["name"], models_lib.MODELS)
    choice("aggregator.name", cfg["aggregator"]["name"], aggregators_lib.RULES)
    strategy = choice("execution.strategy", cfg["execution"]["strategy"], STRATEGIES)
    chunk = int(cfg["execution"]["client_chunk"])
    if strategy == "auto":
        strategy, auto_chunk = default_strategy()
        chunk = chunk or auto_chunk
    cc = cfg["client"]
    if cc["batch_size"] < 1 or (cc["epochs"] < 1 and cc["steps"] < 1):
        raise ConfigError("client.batch_size must be >= 1, and client.epochs or client.steps "
                          "must be >= 1")
    client_opt = make_optimizer(cc["optimizer"], cc["learning_rate"], cc["optimizer_kwargs"])
    sc = cfg["server"]
    server_opt = make_optimizer(sc["optimizer"], sc["learning_rate"], sc["optimizer_kwargs"],
                                "server.optimizer")
    from fljax import attacks as attacks_lib
    ac = cfg["attack"]
    choice("attack.name", ac["name"], ("none",) + tuple(attacks_lib.UPDATE_ATTACKS)
           + tuple(attacks_lib.DATA_ATTACKS))
    if not 0 <= ac["num_malicious"] <= dc["num_clients"]:
        raise ConfigError(f"attack.num_malicious = {ac['num_malicious']} must be between 0 and "
                          f"data.num_clients = {dc['num_clients']}")

    try:
        data = data_lib.build(dc["name"], dc["num_clients"], dc["partition"], dc["seed"],
                              dc["partition_kwargs"], dc["dataset_kwargs"])
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data: {e}") from None
    try:
        model = models_lib.get_model(cfg["model"]["name"], data.input_shape, data.num_classes,
                                     **cfg["model"]["kwargs"])
    except TypeError as e:
        raise ConfigError(f"model.kwargs: {e}") from None

    param_shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    tensor_shapes = transforms_lib.tensor_shapes(param_shapes)
    client_tf = _build_transforms(cfg["client_transforms"], "client_transforms", tensor_shapes)
    server_tf = _build_transforms(cfg["server_transforms"], "server_transforms", tensor_shapes)
    steps = data_lib.num_local_steps(data.max_client_size, cc["batch_size"], cc["epochs"],
                                     cc["steps"])
    epochs = 0 if cc["steps"] else cc["epochs"]
    malicious = np.zeros(data.num_clients, bool)
    malicious[:ac["num_malicious"]] = True

    # Server-side clean data (FLTrust root set, ERR/LFR validation set).
    rng = np.random.default_rng(cfg["seed"] + 7)
    sd = cfg["server_data"]
    pick = rng.permutation(len(data.y))
    root = pick[:sd["root_size"]]
    val = pick[sd["root_size"]:sd["root_size"] + sd["validation_size"]]

    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), param_shapes)
    flat0, unravel = ravel_pytree(template)
    dim = flat0.shape[0]
    unroll = cfg["execution"]["unroll"] or (steps if steps <= 16 else 8)
    # Equal-size clients cut into whole batches never see a masked position.
    full_batches = bool(cc["steps"] or (data.counts.min() == data.counts.max() and
                                        (cc["epochs"] * data.max_client_size) % cc["batch_size"] == 0))
    client_update = make_client_update(model.apply, client_opt, unroll=unroll,
                                       full_batches=full_batches)

    agg = _build_aggregator(cfg["aggregator"], model, client_opt, unravel, data, root, val,
                            cc["batch_size"])
    # Shape-dependent checks of the rule (Krum's n > 2f + 2, Bulyan's n >= 4f + 3,
    # trimming 2b < n) run when it is traced: trace it now, before any training.
    try:
        jax.eval_shape(
            agg.aggregate, jax.ShapeDtypeStruct((k, dim), jnp.float32), agg.init(dim),
            jax.random.PRNGKey(0),
            AggregationContext(weights=jax.ShapeDtypeStruct((k,), jnp.float32),
                               params=jax.ShapeDtypeStruct((dim,), jnp.float32),
                               client_ids=jax.ShapeDtypeStruct((k,), jnp.int32)))
    except ValueError as e:
        raise ConfigError(f"aggregator with clients_per_round = {k}: {e}") from None
    attack = poison = None
    try:
        if ac["name"] in attacks_lib.UPDATE_ATTACKS:
            attack = attacks_lib.UPDATE_ATTACKS[ac["name"]](**ac["kwargs"])
        elif ac["name"] in attacks_lib.DATA_ATTACKS:
            poison = attacks_lib.DATA_ATTACKS[ac["name"]](data.num_classes, **ac["kwargs"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"attack.kwargs: {e}") from None

    x_dev = jnp.asarray(data.x)
    y_dev = jnp.asarray(data.y)
    offsets = jnp.asarray(data.offsets)
    counts = jnp.asarray(data.counts)
    malicious_dev = jnp.asarray(malicious)
    max_count = data.max_client_size
    bsz = cc["batch_size"]
    n_clients = data.num_clients

    @jax.jit
    def init_state(key):
        params = model.init(key)
        return ServerState(params, server_opt.init(params), agg.init(dim),
                           jnp.zeros((), jnp.int32))

    def sample(state, key):
        """Round keys, sampled client ids and per-client keys."""
        rkey = jax.random.fold_in(key, state.round)
        k_sample, k_clients, k_server = jax.random.split(rkey, 3)
        ids = jax.random.choice(k_sample, n_clients, (k,), replace=False).astype(jnp.int32)
        ckeys = jax.random.split(k_clients, k)
        return ids, ckeys, k_server

    def train_one(params, cid, ckey):
        """Local training of client ``cid``: its update (a pytree like the
        params, or flat float[d] after client transforms) and stats."""
        k_batch, k_train, k_tf = jax.random.split(ckey, 3)
        idx, mask = data_lib.client_batch_indices(
            k_batch, offsets[cid], counts[cid], max_count=max_count, steps=steps,
            batch_size=bsz, epochs=epochs)
        xb, yb = x_dev[idx], y_dev[idx]
        if poison is not None:  # data-level attack, only where the client is malicious
            px, py = poison(xb, yb, k_tf)
            xb = jnp.where(malicious_dev[cid], px, xb)
            yb = jnp.where(malicious_dev[cid], py, yb)
        out = client_update(params, xb, yb, mask, k_train)
        delta = jax.tree_util.tree_map(jnp.subtract, out.params, params)
        if client_tf is not None:
            delta = client_tf(ravel_pytree(delta)[0], k_tf)
        return delta, out.loss, counts[cid].astype(jnp.float32)

    leaf_offsets = [int(o) for o in np.cumsum(
        [0] + [int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(param_shapes)])[:-1]]

    def write_rows(buf, start, delta):
        """Writes c stacked updates (a pytree of [c, ...] leaves, or float[c, d])
        into rows ``start:start + c`` of the float[K, d] update matrix.

        One in-place row-segment write per parameter tensor: fusing the ravel
        (a concatenation) into the write, or building [K, d] from stacked
        outputs, costs XLA:CPU more than the dense model's training itself.
        """
        if not isinstance(delta, (dict, list, tuple)):
            return jax.lax.dynamic_update_slice(buf, delta.astype(buf.dtype), (start, 0))
        for leaf, off in zip(jax.tree_util.tree_leaves(delta), leaf_offsets):
            buf = jax.lax.dynamic_update_slice(
                buf, leaf.reshape(leaf.shape[0], -1).astype(buf.dtype), (start, off))
        return buf

    def train_block(params, ids, ckeys):
        """Trains the clients ``ids`` (int[c]) together: vmapped, or directly when c = 1."""
        if ids.shape[0] == 1:
            out = train_one(params, ids[0], ckeys[0])
            return jax.tree_util.tree_map(lambda z: z[None], out)
        return jax.vmap(train_one, in_axes=(None, 0, 0))(params, ids, ckeys)

    def train_into(params, ids, ckeys, buf):
        """All K clients, ``chunk`` at a time in a ``lax.scan`` whose carry is the
        update matrix (donated by the caller, so no [K, d] buffer is allocated
        or zeroed per round); a last partial chunk runs after the scan."""
        n_full, rem = divmod(k, chunk)

        def body(buf, blk):
            j, i, c = blk
            delta, loss, weight = train_block(params, i, c)
            return write_rows(buf, j * chunk, delta), (loss, weight)

        split = lambda z: z[:n_full * chunk].reshape((n_full, chunk) + z.shape[1:])
        buf, (losses, weights) = jax.lax.scan(
            body, buf, (jnp.arange(n_full), split(ids), split(ckeys)))
        losses, weights = losses.reshape(-1), weights.reshape(-1)
        if rem:
            delta, loss, weight = train_block(params, ids[n_full * chunk:],
                                              ckeys[n_full * chunk:])
            buf = write_rows(buf, n_full * chunk, delta)
            losses = jnp.concatenate([losses, loss])
            weights = jnp.concatenate([weights, weight])
        return buf, losses, weights

    def server_step(state, ids, deltas, losses, weights, k_server):
        """Attack, server transforms, aggregation, server optimizer."""
        k_attack, k_tf, k_agg = jax.random.split(k_server, 3)
        if attack is not None:
            deltas = attack(deltas, malicious_dev[ids], k_attack)
        if server_tf is not None:
            deltas = transforms_lib.apply_rows(server_tf, deltas, k_tf)
        flat_params = ravel_pytree(state.params)[0]
        ctx = AggregationContext(weights=weights, params=flat_params, client_ids=ids)
        agg_delta, agg_state, info = agg.aggregate(deltas, state.agg_state, k_agg, ctx)
        grads = jax.tree_util.tree_map(jnp.negative, unravel(agg_delta))
        updates, opt_state = server_opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = ServerState(params, opt_state, agg_state, state.round + 1)
        return new_state, RoundInfo(ids, jnp.mean(losses), jnp.linalg.norm(deltas, axis=1),
                                    dict(info))

    chunk = min(chunk or k, k)
    if strategy == "sequential":
        chunk = 1

    if strategy == "vmap":
        @jax.jit
        def round_fn(state, key):
            ids, ckeys, k_server = sample(state, key)
            delta, losses, weights = train_block(state.params, ids, ckeys)
            if isinstance(delta, (dict, list, tuple)):
                delta = jnp.concatenate([z.reshape(k, -1) for z in
                                         jax.tree_util.tree_leaves(delta)], axis=1)
            return server_step(state, ids, delta, losses, weights, k_server)
    else:
        # The [K, d] update matrix is a buffer that lives across rounds: every
        # round donates it back and overwrites every row.
        if strategy == "map":
            @functools.partial(jax.jit, donate_argnums=2)
            def round_buf(state, key, buf):
                ids, ckeys, k_server = sample(state, key)
                buf, losses, weights = train_into(state.params, ids, ckeys, buf)
                new_state, info = server_step(state, ids, buf, losses, weights, k_server)
                return new_state, info, buf
        else:  # chunked / sequential: a Python loop over blocks of clients
            sample_j = jax.jit(sample)
            server_j = jax.jit(server_step)

            @functools.partial(jax.jit, donate_argnums=(3, 4, 5))
            def train_block_into(params, ids, ckeys, buf, losses, weights, start):
                # ids / ckeys are the round's K; this block is [start, start + c).
                c = min(chunk, k)
                i = jax.lax.dynamic_slice_in_dim(ids, start, c)
                ck = jax.lax.dynamic_slice_in_dim(ckeys, start, c)
                delta, loss, weight = train_block(params, i, ck)
                return (write_rows(buf, start, delta),
                        jax.lax.dynamic_update_slice(losses, loss, (start,)),
                        jax.lax.dynamic_update_slice(weights, weight, (start,)))

            def round_buf(state, key, buf):
                ids, ckeys, k_server = sample_j(state, key)
                losses = jnp.zeros((k,), jnp.float32)
                weights = jnp.zeros((k,), jnp.float32)
                # Blocks start at multiples of chunk; the last one is shifted back
                # to end at row K (it recomputes a few clients, same values).
                for start in range(0, k, chunk):
                    start = min(start, k - chunk)
                    buf, losses, weights = train_block_into(
                        state.params, ids, ckeys, buf, losses, weights, np.int32(start))
                new_state, info = server_j(state, ids, buf, losses, weights, k_server)
                return new_state, info, buf

        buffers = {}

        def round_fn(state, key):
            buf = buffers.pop("updates", None)
            if buf is None:
                buf = jnp.zeros((k, dim), flat0.dtype)
            new_state, info, buf = round_buf(state, key, buf)
            buffers["updates"] = buf
            return new_state, info

    evaluate = make_evaluate(model.apply, data.x_test, data.y_test,
                             cfg["execution"]["eval_batch"])
    return Experiment(cfg, data, model, steps, strategy, init_state, round_fn, evaluate,
                      malicious, dim)


def _resolve_kernel(spec: str):
    """``'module:function'`` (e.g. ``'kernels.order_stats:rank_weighted_sum'``) -> the function.

    Imported by name, so fljax never imports ``kernels`` itself (DESIGN.md). If
    the module has ``available()``, it is asked first, so a kernel that cannot
    be built here fails before any work.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"aggregator.kwargs.kernel must be 'module:function', got {spec!r} "
                          "(e.g. 'kernels.order_stats:rank_weighted_sum')")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"aggregator.kwargs.kernel={spec!r}: {e}") from None
    if hasattr(module, "available"):
        ok, why = module.available()
        if not ok:
            raise ConfigError(f"aggregator.kwargs.kernel={spec!r} cannot be used here: {why} "
                              "(drop the kernel to use the jnp path)")
    return fn


def _build_aggregator(ac, model, client_opt, unravel, data, root, val, bsz):
    """Builds the rule, handing it the server-side callables its factory asks for."""
    factory = getattr(aggregators_lib, ac["name"])
    kwargs = dict(ac["kwargs"])
    params_of = set(inspect.signature(factory).parameters)
    if "server_update_fn" in params_of and "server_update_fn" not in kwargs:
        xr, yr = jnp.asarray(data.x[root]), jnp.asarray(data.y[root])
        root_update = make_client_update(model.apply, client_opt, unroll=False)
        n_root = xr.shape[0]
        rsteps = max(1, -(-n_root // bsz))

        def server_update_fn(flat_params, key):
            params = unravel(flat_params)
            k_perm, k_train = jax.random.split(key)
            perm = jax.random.permutation(k_perm, rsteps * bsz) % n_root
            m = jnp.ones((rsteps, bsz), bool)
            out = root_update(params, xr[perm].reshape((rsteps, bsz) + xr.shape[1:]),
                              yr[perm].reshape(rsteps, bsz), m, k_train)
            return ravel_pytree(out.params)[0] - flat_params

        kwargs["server_update_fn"] = server_update_fn
    if "num_clients" in params_of and "num_clients" not in kwargs:
        kwargs["num_clients"] = data.num_clients  # FoolsGold's per-client history
    if "eval_fn" in params_of and "eval_fn" not in kwargs:
        xv, yv = jnp.asarray(data.x[val]), jnp.asarray(data.y[val])

        def eval_fn(flat_params):
            logits = model.apply(unravel(flat_params), xv)
            err = 1.0 - jnp.mean((jnp.argmax(logits, -1) == yv).astype(jnp.float32))
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yv))
            return err, loss

        kwargs["eval_fn"] = eval_fn
    if isinstance(kwargs.get("kernel"), str):
        kwargs["kernel"] = _resolve_kernel(kwargs["kernel"])
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"aggregator.kwargs for {ac['name']!r}: {e} (to drop the config's "
                          "kwargs when switching rules: --set aggregator.kwargs={})") from None
    except ValueError as e:
        raise ConfigError(f"aggregator: {e}") from None


def make_evaluate(apply_fn, x, y, batch: int = 1024) -> Callable[[Params], dict]:
    """Accuracy and mean cross-entropy on ``(x, y)`` in fixed-size padded batches."""
    n = len(y)
    batch = max(1, min(batch, n))
    nb = -(-n // batch)
    pad = nb * batch - n
    xp = jnp.asarray(np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]))
    yp = jnp.asarray(np.concatenate([y, np.zeros((pad,), y.dtype)]))
    mp = jnp.asarray(np.arange(nb * batch) < n)

    @jax.jit
    def totals(params, xb, yb, mb):
        logits = apply_fn(params, xb)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        correct = (jnp.argmax(logits, -1) == yb)
        m = mb.astype(jnp.float32)
        return jnp.sum(correct * m), jnp.sum(ce * m)

    def evaluate(params):
        c = l = 0.0
        for b in range(nb):
            s = slice(b * batch, (b + 1) * batch)
            cb, lb = totals(params, xp[s], yp[s], mp[s])
            c += float(cb)
            l += float(lb)
        return {"accuracy": c / n, "loss": l / n}

    return evaluate


# ----------------------------------------------------------------------------
# Running rounds


class RunResult(NamedTuple):
    history: list  # one dict per evaluation
    state: ServerState
    summary: dict


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, (np.generic, jax.Array)):
        return np.asarray(x).tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def prepare_out_dir(out_dir: str) -> str:
    """Creates ``out_dir`` and checks it is writable, with a clear error."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"output folder {out_dir!r} is not writable ({e.strerror}); pass "
                          "--out with a folder you can write to") from None
    return out_dir


def run(cfg: dict, out_dir: Optional[str] = None, progress: bool = True,
        resume: bool = False, log: Callable[[str], None] | None = print) -> RunResult:
    """Runs a resolved config: the Python entry point behind ``fljax run``.

    Args:
      cfg: a resolved config (``fljax.config.resolve(DEFAULTS, get_config())``).
      out_dir: where to write ``config.json``, ``metrics.jsonl`` (a line per
        evaluation, flushed as it is produced), ``summary.json``,
        ``accuracy.png``, ``params.msgpack`` and ``checkpoint.msgpack``. None
        writes nothing.
      progress: draw a progress bar over rounds.
      resume: continue from ``out_dir/checkpoint.msgpack`` if it exists (the
        same keys are used, so the result equals an uninterrupted run).
      log: called with one line per evaluation (None: silent).

    Returns:
      ``RunResult(history, state, summary)``.
    """
    from flax import serialization
    from tqdm.auto import tqdm

    if out_dir is not None:
        prepare_out_dir(out_dir)
    exp = build(cfg)
    key = jax.random.PRNGKey(cfg["seed"])
    k_init, k_rounds = jax.random.split(key)
    state = exp.init_state(k_init)
    history: list = []
    elapsed_before = 0.0
    ckpt = os.path.join(out_dir, "checkpoint.msgpack") if out_dir else None
    metrics_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if resume and ckpt and os.path.exists(ckpt):
        with open(ckpt, "rb") as f:
            blob = serialization.msgpack_restore(f.read())
        state = serialization.from_state_dict(state, blob["state"])
        elapsed_before = float(blob["elapsed"])
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                history = [json.loads(line) for line in f if line.strip()]
            history = [h for h in history if h["round"] <= int(state.round)]
            with open(metrics_path, "w") as f:  # drop lines past the checkpoint
                f.writelines(json.dumps(h) + "\n" for h in history)
        if log:
            log(f"resuming from round {int(state.round)}")
    elif out_dir:
        open(metrics_path, "w").close()
    if out_dir:
        _write_json(os.path.join(out_dir, "config.json"), cfg)

    start_round = int(state.round)
    rounds = int(cfg["rounds"])
    t0 = time.perf_counter()
    train_time = 0.0
    client_updates = 0
    bar = tqdm(total=rounds, initial=start_round, desc="rounds", disable=not progress,
               dynamic_ncols=True, leave=False)

    def evaluate_and_log(state, train_loss):
        ev = exp.evaluate(state.params)
        rec = {"round": int(state.round), "main_accuracy": ev["accuracy"],
               "main_loss": ev["loss"], "train_loss": train_loss,
               "elapsed": elapsed_before + time.perf_counter() - t0}
        history.append(rec)
        if metrics_path:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
                f.flush()
        if log:
            line = (f"round {rec['round']:5d}  accuracy {rec['main_accuracy']:.4f}  "
                    f"loss {rec['main_loss']:.4f}  ({rec['elapsed']:.1f}s)")
            (tqdm.write if progress else log)(line)  # tqdm.write keeps the bar intact
        if ckpt:
            blob = {"state": serialization.to_state_dict(jax.device_get(state)),
                    "elapsed": rec["elapsed"]}
            with open(ckpt + ".tmp", "wb") as f:
                f.write(serialization.msgpack_serialize(blob))
            os.replace(ckpt + ".tmp", ckpt)

    if start_round == 0 and not history:
        evaluate_and_log(state, None)
    info = None
    for r in range(start_round, rounds):
        ts = time.perf_counter()
        state, info = exp.round_fn(state, k_rounds)
        loss = float(info.train_loss)  # blocks: the round is done
        if r > start_round:  # the first round includes compilation
            train_time += time.perf_counter() - ts
            client_updates += cfg["clients_per_round"]
        bar.update(1)
        if (r + 1) % cfg["eval_every"] == 0 or r + 1 == rounds:
            evaluate_and_log(state, loss)
    bar.close()

    wall = elapsed_before + time.perf_counter() - t0
    final = history[-1] if history else {}
    summary = {
        "final_round": int(state.round),
        "final_main_accuracy": final.get("main_accuracy"),
        "final_main_loss": final.get("main_loss"),
        "wall_time_s": wall,
        "client_updates_per_s": client_updates / train_time if train_time > 0 else None,
        "strategy": exp.strategy,
        "device": jax.devices()[0].device_kind,
        "num_params": exp.num_params,
        "local_steps": exp.steps,
    }
    if out_dir:
        _write_json(os.path.join(out_dir, "summary.json"), summary)
        with open(os.path.join(out_dir, "params.msgpack"), "wb") as f:
            f.write(serialization.to_bytes(jax.device_get(state.params)))
        plot_history(history, os.path.join(out_dir, "accuracy.png"),
                     title=f"{cfg['data']['name']} / {cfg['model']['name']} / "
                           f"{cfg['aggregator']['name']}")
    return RunResult(history, state, summary)


def plot_history(history: list, path: str, title: str = "") -> None:
    """Saves test accuracy against rounds as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    rounds = [h["round"] for h in history]
    ax.plot(rounds, [h["main_accuracy"] for h in history], marker="o", ms=3)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def simulate_reference(cfg: dict, rounds: int) -> Params:
    """Plain FedAvg as readable Python loops, for tests.

    Uses the same keys and batches as :func:`build`'s round (so it can be
    compared to every strategy) but trains clients one by one with an explicit
    loop over local steps, averages their new parameters weighted by example
    count, and applies the server learning rate by hand. Supports
    ``aggregator = mean``, server ``sgd``, no attack or transforms.
    """
    exp = build(cfg)
    data = exp.data
    cc = cfg["client"]
    epochs = 0 if cc["steps"] else cc["epochs"]
    key = jax.random.PRNGKey(cfg["seed"])
    k_init, k_rounds = jax.random.split(key)
    params = exp.model.init(k_init)
    opt = make_optimizer(cc["optimizer"], cc["learning_rate"], cc["optimizer_kwargs"])
    from fljax.client import cross_entropy

    grad_fn = jax.jit(jax.grad(
        lambda p, x, y, m, k: cross_entropy(exp.model.apply(p, x, k), y, m)))
    k = cfg["clients_per_round"]
    for r in range(rounds):
        rkey = jax.random.fold_in(k_rounds, r)
        k_sample, k_clients, _ = jax.random.split(rkey, 3)
        ids = jax.random.choice(k_sample, data.num_clients, (k,), replace=False)
        ckeys = jax.random.split(k_clients, k)
        new_params, weights = [], []
        for i in range(k):
            cid = int(ids[i])
            k_batch, k_train, _ = jax.random.split(ckeys[i], 3)
            idx, mask = data_lib.client_batch_indices(
                k_batch, data.offsets[cid], data.counts[cid], max_count=data.max_client_size,
                steps=exp.steps, batch_size=cc["batch_size"], epochs=epochs)
            idx, mask = np.asarray(idx), np.asarray(mask)
            p, s = params, opt.init(params)
            step_keys = jax.random.split(k_train, exp.steps)
            for t in range(exp.steps):
                if not mask[t].any():
                    continue
                g = grad_fn(p, data.x[idx[t]], data.y[idx[t]], mask[t], step_keys[t])
                u, s = opt.update(g, s, p)
                p = optax.apply_updates(p, u)
            new_params.append(p)
            weights.append(float(data.counts[cid]))
        w = np.array(weights) / sum(weights)
        avg = jax.tree_util.tree_map(lambda *xs: sum(wi * x for wi, x in zip(w, xs)), *new_params)
        lr = cfg["server"]["learning_rate"]
        params = jax.tree_util.tree_map(lambda p0, a: p0 + lr * (a - p0), params, avg)
    return params
