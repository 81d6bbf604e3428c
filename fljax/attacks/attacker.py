"""The attacker protocol: what a malicious client may do in a round.

An attacker is a NamedTuple of optional pure functions, one per thing the
threat model lets it touch (the simulator skips the ones that are None):

(a) ``poison(x, y, mask, key, view) -> (x, y, mask)``: rewrite ONE malicious
    client's local batches (``x: float[S, B, ...]``, ``y: int[S, B]``,
    ``mask: bool[S, B]``) before it trains: label flips, triggers. The
    simulator applies it to every client and keeps the result only where
    ``view.malicious`` (so it must be cheap: elementwise work on the batch).
(b) ``train``: a :class:`LocalTraining` that changes how a client trains:
    ``loss(params, logits, y, mask, view) -> scalar`` (replaces the
    cross-entropy), ``grads(grads, view) -> grads`` (e.g. a coordinate mask)
    and ``project(params, view) -> params`` (after each local step, e.g. onto
    an L2 ball around the global model). The hooks run for every client and
    must be the identity where ``view.malicious`` is False.
(c) ``craft(updates, malicious, key, context) -> (updates, info)``: rewrite
    the malicious rows of the round's ``float[K, d]`` update matrix, seeing
    every row, the global parameters, the round and the server's rule
    (:class:`~fljax.attacks.base.AttackContext`). An
    :class:`~fljax.attacks.base.UpdateAttack` is exactly this.
(d) state across rounds: ``init(AttackerInit) -> state``, then
    ``begin_round(state, view, key) -> state`` before local training (e.g.
    re-optimise a trigger against the current global model) and
    ``end_round(state, view) -> state`` after aggregation (e.g. remember the
    global update). The state lives in the simulation state: it is
    checkpointed and vmapped over a sweep's cells like everything else.
(e) ``metrics(params, state, test) -> {name: scalar}``: what the attack
    achieved, evaluated with the main metrics (e.g. ``backdoor_accuracy``).

Which clients are malicious is a traced ``bool[num_clients]`` and every
attack value is a traced scalar, so neither recompiles. A
:class:`Schedule` says in which rounds the attackers act; in other rounds
malicious clients behave honestly. :func:`combine` joins several attackers
into one (a backdoor trigger plus boosting is one attacker with two parts).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from fljax.attacks.base import AttackContext, UpdateAttack


class AttackerInit(NamedTuple):
    """What an attacker's ``init`` may use to build its state (static shapes)."""

    params: Any  # a template of the global parameters (arrays)
    dim: int  # d, the length of a flat update
    num_clients: int
    input_shape: tuple
    num_classes: int
    key: jax.Array


class ClientView(NamedTuple):
    """One client's view inside local training (all traced)."""

    client_id: jax.Array  # int32[]
    malicious: jax.Array  # bool[]: malicious AND its attacker acts this round
    round: jax.Array  # int32[]
    global_params: Any  # the parameters the client started from
    state: Any  # the attacker's state


class RoundView(NamedTuple):
    """The round as the attacker sees it before training or after aggregation."""

    round: jax.Array  # int32[]
    params: Any  # global parameters at the start of the round
    client_ids: jax.Array  # int32[K]
    malicious: jax.Array  # bool[K]: the round's acting malicious rows
    new_params: Any = None  # after aggregation (end_round only)
    aggregate: Optional[jax.Array] = None  # float[d], the rule's output (end_round only)


class TestSet(NamedTuple):
    """The server's test set in padded batches (jit-friendly)."""

    x: jax.Array  # float[nb, B, ...]
    y: jax.Array  # int32[nb, B]
    mask: jax.Array  # bool[nb, B]: False on padding


class Subset(NamedTuple):
    """A natural subset of the data that an attack trains on and is judged on
    (e.g. the sevens of a few writers, or held-out tail examples).

    Chosen on the host when the experiment is prepared (see
    ``fljax.attacks.subset_backdoor``), it travels with the round's shared
    data (``RoundData.attack``), so every cell of a sweep sees the same arrays
    and none of it is host work per round.
    """

    x: Any  # float[P, ...]: the examples the attackers inject into their batches
    y: Any  # int32[P]: their true labels
    test: TestSet  # where the attack's success is measured


class LocalTraining(NamedTuple):
    """Changes to a client's local training (identity where not malicious)."""

    loss: Optional[Callable] = None  # (params, logits, y, mask, view) -> scalar
    grads: Optional[Callable] = None  # (grads, view) -> grads
    project: Optional[Callable] = None  # (params, view) -> params


def init_none(init: AttackerInit):
    del init
    return ()


class Attacker(NamedTuple):
    """An attacker: see the module docstring for each field."""

    init: Callable[[AttackerInit], Any] = init_none
    begin_round: Optional[Callable] = None  # (state, RoundView, key) -> state
    poison: Optional[Callable] = None  # (x, y, mask, key, ClientView) -> (x, y, mask)
    train: Optional[LocalTraining] = None
    craft: Optional[Callable] = None  # (updates, malicious, key, AttackContext) -> (updates, info)
    end_round: Optional[Callable] = None  # (state, RoundView) -> state
    metrics: Optional[Callable] = None  # (params, state, TestSet, predict) -> dict
    # predict(params, x[nb, B, ...]) -> int32[nb, B] predicted labels


NONE = Attacker()


def from_update_attack(attack: UpdateAttack) -> Attacker:
    """An :class:`UpdateAttack` as an attacker that only crafts rows."""
    return Attacker(craft=attack.craft)


def from_poison(poison: Callable) -> Attacker:
    """A batch transform ``poison(x, y, key) -> (x, y)`` as a data attacker."""

    def poison_batches(x, y, mask, key, view):
        del view
        px, py = poison(x, y, key)
        return px, py, mask

    return Attacker(poison=poison_batches)


def as_attacker(obj) -> Attacker:
    """An :class:`Attacker` from an attacker, an update attack or a batch poison."""
    if isinstance(obj, Attacker):
        return obj
    if isinstance(obj, UpdateAttack):
        return from_update_attack(obj)
    if callable(obj):
        return from_poison(obj)
    raise TypeError(f"not an attacker: {obj!r}")


def combine(*attackers: Attacker) -> Attacker:
    """One attacker doing what each of ``attackers`` does, in order.

    Poisons chain (the second sees the first's batches), training hooks
    compose, crafts chain (the second sees the first's crafted rows), each
    part keeps its own state (the combined state is a tuple), and the metrics
    are merged (a later part's name wins).
    """
    parts = tuple(as_attacker(a) for a in attackers)
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return NONE

    def sub(view, state, i):
        return view._replace(state=state[i])

    def init(spec):
        keys = jax.random.split(spec.key, len(parts))
        return tuple(p.init(spec._replace(key=k)) for p, k in zip(parts, keys))

    def begin_round(state, view, key):
        keys = jax.random.split(key, len(parts))
        return tuple(p.begin_round(s, view, k) if p.begin_round else s
                     for p, s, k in zip(parts, state, keys))

    def poison(x, y, mask, key, view):
        keys = jax.random.split(key, len(parts))
        for i, (p, k) in enumerate(zip(parts, keys)):
            if p.poison is not None:
                x, y, mask = p.poison(x, y, mask, k, sub(view, view.state, i))
        return x, y, mask

    hooks = [(i, p.train) for i, p in enumerate(parts) if p.train is not None]

    def loss(params, logits, y, mask, view):
        fns = [(i, t.loss) for i, t in hooks if t.loss is not None]
        if len(fns) > 1:
            raise ValueError("combine: two attack parts both replace the local loss")
        i, fn = fns[0]
        return fn(params, logits, y, mask, sub(view, view.state, i))

    def grads(g, view):
        for i, t in hooks:
            if t.grads is not None:
                g = t.grads(g, sub(view, view.state, i))
        return g

    def project(params, view):
        for i, t in hooks:
            if t.project is not None:
                params = t.project(params, sub(view, view.state, i))
        return params

    train = None
    if hooks:
        train = LocalTraining(
            loss=loss if any(t.loss for _, t in hooks) else None,
            grads=grads if any(t.grads for _, t in hooks) else None,
            project=project if any(t.project for _, t in hooks) else None)

    def craft(updates, malicious, key, context):
        keys = jax.random.split(key, len(parts))
        info = {}
        state = context.state if context is not None else None
        for i, (p, k) in enumerate(zip(parts, keys)):
            if p.craft is not None:
                ctx = (context._replace(state=state[i]) if context is not None
                       else AttackContext())
                updates, part_info = p.craft(updates, malicious, k, ctx)
                info.update(part_info)
        return updates, info

    def end_round(state, view):
        return tuple(p.end_round(s, view) if p.end_round else s for p, s in zip(parts, state))

    def metrics(params, state, test, predict):
        out = {}
        for p, s in zip(parts, state):
            if p.metrics is not None:
                out.update(p.metrics(params, s, test, predict))
        return out

    return Attacker(
        init=init,
        begin_round=begin_round if any(p.begin_round for p in parts) else None,
        poison=poison if any(p.poison for p in parts) else None,
        train=train,
        craft=craft if any(p.craft for p in parts) else None,
        end_round=end_round if any(p.end_round for p in parts) else None,
        metrics=metrics if any(p.metrics for p in parts) else None,
    )


class Schedule(NamedTuple):
    """When attackers act: rounds ``start <= r < stop`` (``stop < 0``: no end)
    with ``(r - start) % every == 0``, each with probability ``probability``.

    All four are values (traced): a sweep over them does not recompile.
    Every round is the default; ``start=r, stop=r+1`` is a one-shot attack;
    ``every=k`` a fixed frequency; ``probability=p`` random participation.
    """

    start: Any = 0
    stop: Any = -1
    every: Any = 1
    probability: Any = 1.0

    def active(self, round_: jax.Array, key: jax.Array) -> jax.Array:
        """``bool[]``: do the attackers act in round ``round_``?"""
        r = jnp.asarray(round_, jnp.int32)
        start = jnp.asarray(self.start, jnp.int32)
        stop = jnp.asarray(self.stop, jnp.int32)
        every = jnp.maximum(jnp.asarray(self.every, jnp.int32), 1)
        in_window = (r >= start) & ((stop < 0) | (r < stop))
        on_beat = jnp.mod(r - start, every) == 0
        lucky = jax.random.uniform(key) < jnp.asarray(self.probability, jnp.float32)
        return in_window & on_beat & lucky
