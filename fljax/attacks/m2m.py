"""M2M (Mirage): in-distribution triggers for several attackers with their own targets.

Several attackers who do not know each other each want their own target
label. With fixed patch triggers their backdoors fight over the same model and
cancel out; M2M makes each attacker optimise its trigger, every round it
takes part, against the current global model so that its triggered inputs
look to that model like clean samples of its target class: the backdoor then
rides on the target class's clean features instead of carving its own path.

Per attacker ``a`` (group ``g``: malicious clients ``c`` with ``c % G == g``),
target ``y_a``, trigger ``t_a`` (kept in the attacker state across rounds),
mask ``m_a`` and blend ``alpha``; ``x (+) t = x + alpha m (t - x)`` inside the
mask and ``x`` outside. In a round where one of its clients is sampled and
the schedule lets it act, with the global model ``f`` (features ``h``, logits
``f``) and the data ``D`` of its first sampled client::

    S   = per class c != y_a: the (<= samples_per_class) examples of D of class c
          with the lowest loss under f; all of class y_a
    repeat outer_steps times:
        discriminator data: (x (+) t, 1) for x in S not of class y_a; (x, 0) for x of y_a
        head = Linear(F, hidden) - ReLU - Linear(hidden, 2), fresh (PyTorch init),
               trained on h(.) for discriminator_epochs epochs of discriminator_batch
               (SGD, discriminator_lr, momentum, weight decay); f stays frozen
        for every batch (x, y) of D (batches of trigger_batch, shuffled) that holds
        an example of y_a, over its examples x_i of other classes:
            L(t) = mean_i [ CE(head(h(x_i (+) t)), 0)         in-distribution
                          + CE(f(x_i (+) t), y_a)             classified as y_a
                          + cos(f(x_i (+) t), f(x_i)) ]        unlike its own clean output
            t <- clip(t - trigger_lr * sign(grad_t L) * m, low, high)
    then poisoned local training: the first round(poison_fraction * B) examples of
    each local batch become (x (+) t, y_a); the client trains as a benign one.

All attackers of a round run at once: the search is one jitted function
vmapped over the ``G`` attackers (an attacker with no sampled client this
round computes and discards its search; a round with no acting attacker
skips it under ``lax.cond``). Backdoor accuracy is measured with each
attacker's current trigger: ``backdoor_accuracy_<g>`` and their mean
``backdoor_accuracy`` (one attacker: ``backdoor_accuracy``, the single-label
backdoor).

Constants (the defaults; ``yamls/Mirage/Mirage_nodefense.yaml`` of the
reproduction github.com/tanikaaaa/Mirage, ``MirageClient.py``):
``trigger_search_no_times 50`` (outer_steps), ``trigger_lr 0.001``, trigger
clamp ``[-2, 2]`` in normalised CIFAR space (here the image range
``[low, high] = [0, 1]``), trigger initialised to 0.5,
``discriminator_train_samples_pre_class 50``, ``discriminator_batch_size 64``,
``discriminator_lr 0.01``, momentum 0.9, weight decay 5e-4,
``discriminator_train_no_times 30``, ``trigger_size 5`` (patch masks inset one
pixel from the corners, then the centre: attacker ``g`` takes place ``g``),
``poisoned_len 8`` of batch 64 (poison_fraction 0.125).

References:
  Li, Zhao, Zhu, Zhang, "Infighting in the Dark: Multi-Labels Backdoor Attack
  in Federated Learning", arXiv 2409.19601 (v1, "M2M"); CVPR 2025 as "Mirage".
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker, AttackerInit


class M2MState(NamedTuple):
    trigger: jax.Array  # float[G, *input_shape]: each attacker's trigger (used inside its mask)
    searches: jax.Array  # int32[G]: rounds in which each attacker re-optimised its trigger


class Head(NamedTuple):
    """The discriminator's head on the global model's features."""

    w1: jax.Array  # float[F, hidden]
    b1: jax.Array  # float[hidden]
    w2: jax.Array  # float[hidden, 2]
    b2: jax.Array  # float[2]


class TriggerSearch(NamedTuple):
    """M2M's trigger search for ONE attacker as pure functions (vmap over attackers).

    ``params`` are the global model's, ``x: float[M, ...]``, ``y: int32[M]``,
    ``valid: bool[M]`` the attacker's data (padded), ``t: float[*input_shape]``
    its trigger, ``m: bool[*input_shape]`` its mask, ``target`` its label.
    """

    stamp: Callable  # (x[..., *shape], t, m) -> x (+) t
    select: Callable  # (params, x, y, valid, target) -> bool[M]: the discriminator's examples
    train_head: Callable  # (params, x, y, keep, t, m, target, key) -> Head
    objective: Callable  # (params, head, x, y, valid, t, m, target) -> (scalar, {term: scalar})
    search: Callable  # (params, x, y, valid, t, m, target, key) -> (t, info)


def _ce(logits, labels):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def _masked_mean(v, w):
    w = w.astype(v.dtype)
    return jnp.sum(v * w) / jnp.maximum(jnp.sum(w), 1.0)


def _cosine(a, b, eps=1e-8):  # torch.nn.CosineSimilarity(dim=1, eps=1e-8)
    na = jnp.maximum(jnp.linalg.norm(a, axis=-1), eps)
    nb = jnp.maximum(jnp.linalg.norm(b, axis=-1), eps)
    return jnp.sum(a * b, axis=-1) / (na * nb)


def _batches(key, valid, first, size: int):
    """``int32[nb, size]`` slot indices and ``bool[nb, size]``: the examples
    where ``first`` in a random order, then the rest (masked off)."""
    m = valid.shape[0]
    nb = -(-m // size)
    score = jax.random.uniform(key, (m,)) + jnp.where(first, 0.0, 2.0)
    order = jnp.argsort(score)
    pad = nb * size - m
    idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(nb, size)
    ok = jnp.concatenate([first[order], jnp.zeros((pad,), bool)]).reshape(nb, size)
    return idx, ok


def blend(x, t, m, alpha=1.0) -> jax.Array:
    """M2M's stamping rule ``x (+) t``: ``x + alpha (t - x)`` where ``m`` (``bool``,
    one example's shape, broadcast over leading axes) is set, ``x`` elsewhere
    (``alpha = 1``: the trigger's pixels replace the image's)."""
    return jnp.where(m, x + alpha * (t - x), x)


def trigger_search(model, *, outer_steps: int = 50, trigger_lr: float = 0.001,
                   low: float = 0.0, high: float = 1.0, blend_alpha: float = 1.0,
                   samples_per_class: int = 50, discriminator_epochs: int = 30,
                   discriminator_batch: int = 64, discriminator_lr: float = 0.01,
                   discriminator_momentum: float = 0.9,
                   discriminator_weight_decay: float = 5e-4, hidden: int = 10,
                   trigger_batch: int = 64) -> TriggerSearch:
    """M2M's per-attacker trigger search on ``model`` (a :class:`~fljax.models.Model`
    with ``features``); see the module docstring for the algorithm.

    Integers fix shapes and loop lengths (static); floats may be traced.
    """
    features = model.features

    def stamp(x, t, m):
        return blend(x, t, m, blend_alpha)

    def select(params, x, y, valid, target):
        loss = _ce(model.apply(params, x), y)  # float[M]: clean loss under the global model
        i = jnp.arange(y.shape[0])
        same = (y[:, None] == y[None, :]) & valid[None, :]
        better = (loss[None, :] < loss[:, None]) | ((loss[None, :] == loss[:, None])
                                                    & (i[None, :] < i[:, None]))
        rank = jnp.sum(same & better, axis=1)  # int[M]: rank of the loss within its class
        return valid & ((y == target) | (rank < samples_per_class))

    def init_head(key, width):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        s1, s2 = 1.0 / np.sqrt(width), 1.0 / np.sqrt(hidden)  # torch.nn.Linear's init
        u = lambda k, shape, s: jax.random.uniform(k, shape, jnp.float32, -s, s)  # noqa: E731
        return Head(u(k1, (width, hidden), s1), u(k2, (hidden,), s1),
                    u(k3, (hidden, 2), s2), u(k4, (2,), s2))

    def head_logits(head, h):
        return jax.nn.relu(h @ head.w1 + head.b1) @ head.w2 + head.b2

    def train_head(params, x, y, keep, t, m, target, key):
        is_bd = y != target  # label 1: triggered non-target; 0: clean target class
        xd = jnp.where(jnp.reshape(is_bd, is_bd.shape + (1,) * (x.ndim - 1)), stamp(x, t, m), x)
        h = jax.lax.stop_gradient(features(params, xd)[0])  # float[M, F]: the model is frozen
        lab = is_bd.astype(jnp.int32)
        k_init, k_epochs = jax.random.split(key)
        head = init_head(k_init, h.shape[1])

        def loss_fn(hd, idx, ok):
            return _masked_mean(_ce(head_logits(hd, h[idx]), lab[idx]), ok)

        def step(carry, batch):
            hd, buf = carry
            idx, ok = batch
            g = jax.grad(loss_fn)(hd, idx, ok)
            # torch.optim.SGD: d = g + wd * p; buf = mom * buf + d; p -= lr * buf
            d = jax.tree_util.tree_map(lambda gi, p: gi + discriminator_weight_decay * p, g, hd)
            nbuf = jax.tree_util.tree_map(lambda b, di: discriminator_momentum * b + di, buf, d)
            nhd = jax.tree_util.tree_map(lambda p, b: p - discriminator_lr * b, hd, nbuf)
            any_ = jnp.any(ok)  # a batch past the selected examples is no batch at all
            pick = lambda a, b: jax.tree_util.tree_map(  # noqa: E731
                lambda u, v: jnp.where(any_, u, v), a, b)
            return (pick(nhd, hd), pick(nbuf, buf)), None

        def epoch(carry, k):
            idx, ok = _batches(k, keep, keep, discriminator_batch)
            return jax.lax.scan(step, carry, (idx, ok))[0], None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, head)
        (head, _), _ = jax.lax.scan(epoch, (head, zeros),
                                    jax.random.split(k_epochs, discriminator_epochs))
        return head

    def terms(params, head, x, t, m, target):
        """Per-example losses of the trigger on ``x: float[B, ...]``."""
        xt = stamp(x, t, m)
        h, logits = features(params, xt)
        clean = model.apply(params, x)
        tgt = jnp.full((x.shape[0],), target, jnp.int32)
        return {"discriminator": _ce(head_logits(head, h), jnp.zeros_like(tgt)),
                "target": _ce(logits, tgt),
                "similarity": _cosine(logits, clean)}

    def objective(params, head, x, y, valid, t, m, target):
        """The search's loss ``L(t)`` on ``x`` (one trigger batch in the search):
        its total and its three terms, over the valid examples not of ``target``."""
        w = valid & (y != target)
        parts = {k: _masked_mean(v, w) for k, v in terms(params, head, x, t, m, target).items()}
        return sum(parts.values()), parts

    def search(params, x, y, valid, t, m, target, key):
        keep = select(params, x, y, valid, target)
        m = m.astype(bool)

        def outer(t, k):
            k_head, k_batch = jax.random.split(k)
            head = train_head(params, x, y, keep, t, m, target, k_head)
            idx, ok = _batches(k_batch, valid, valid, trigger_batch)

            def sign_step(t, batch):
                bi, bo = batch
                xb, yb = x[bi], y[bi]
                acts = jnp.any(bo & (yb == target)) & jnp.any(bo & (yb != target))
                g = jax.grad(lambda tt: objective(params, head, xb, yb, bo, tt, m, target)[0])(t)
                new = jnp.clip(t - trigger_lr * jnp.sign(g) * m, low, high)
                return jnp.where(acts, new, t), None

            t, _ = jax.lax.scan(sign_step, t, (idx, ok))
            return t, None

        t0 = jnp.clip(t, low, high)
        t, _ = jax.lax.scan(outer, t0, jax.random.split(key, outer_steps))
        return t, {"selected": jnp.sum(keep)}

    return TriggerSearch(stamp, select, train_head, objective, search)


def default_locations(input_shape, num_attackers: int, size: int) -> list:
    """M2M's patch places: one pixel in from the top-left, bottom-left,
    bottom-right and top-right corners, then the centre (attacker ``g`` takes
    place ``g``)."""
    h, w, _ = bd.image_shape("m2m", input_shape)
    places = [(1, 1), (-2, 1), (-2, -2), (1, -2), ((h - size) // 2, (w - size) // 2)]
    if num_attackers > len(places):
        raise ValueError(f"m2m: num_attackers={num_attackers} is more than the {len(places)} "
                         "default trigger places; give location as one (row, col) per attacker")
    return places[:num_attackers]


def masks(input_shape, num_attackers: int, size: int, location=None) -> np.ndarray:
    """``bool[G, *input_shape]``: the attackers' ``size x size`` trigger masks at
    ``location`` (one pair for all, one per attacker, or None: the paper's
    places, :func:`default_locations`)."""
    if location is None:
        location = default_locations(input_shape, num_attackers, size)
    return bd.group_masks("m2m", input_shape, num_attackers, location, size)


def m2m(num_classes: int, input_shape: tuple, model=None, num_attackers: int = 1,
        targets=None, size: int = 5, location=None, init_value: float = 0.5,
        low: float = 0.0, high: float = 1.0, blend_alpha: float = 1.0,
        poison_fraction: float = 0.125, outer_steps: int = 50, trigger_lr: float = 0.001,
        samples_per_class: int = 50, discriminator_epochs: int = 30,
        discriminator_batch: int = 64, discriminator_lr: float = 0.01,
        discriminator_momentum: float = 0.9, discriminator_weight_decay: float = 5e-4,
        hidden: int = 10, trigger_batch: int = 64) -> Attacker:
    """M2M / Mirage: each attacker's trigger re-optimised against the global model.

    Args:
      num_classes, input_shape, model: passed by the simulator (the model must
        have ``features``).
      num_attackers: attacker groups ``G`` (static; needs >= ``G`` malicious
        clients; client ``c`` is attacker ``c % G``).
      targets: one target class per attacker, all different (static); None:
        attacker ``g`` targets class ``g`` (the paper's ``[0, 1, 2, 3, 4]``).
      size: the trigger patch's side (static; the paper's 5).
      location: ``(row, col)`` of every attacker's patch or one pair per
        attacker (static); None: the paper's places (:func:`default_locations`).
        A patch the size of the image with ``blend_alpha < 1`` is the paper's
        blended whole-image trigger.
      init_value: the triggers' first pixels (a value; the paper's 0.5).
      low, high: the trigger's bounds (values; the image range).
      blend_alpha: ``x (+) t = x + alpha (t - x)`` inside the mask (a value;
        1.0: the patch replaces the pixels).
      poison_fraction: share of each malicious batch poisoned (a value).
      outer_steps, samples_per_class, discriminator_epochs,
        discriminator_batch, hidden, trigger_batch: the search's loop lengths
        and sizes (static).
      trigger_lr, discriminator_lr, discriminator_momentum,
        discriminator_weight_decay: the search's step sizes (values).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` with state
      (:class:`M2MState`), ``begin_round`` (the search), ``poison`` and
      ``metrics``; ``groups = G``.

    Raises:
      ValueError: two attackers with one target, a target outside the
        classes, a mask outside the image, bad bounds or sizes; naming the field.
    """
    name = "m2m"
    tg = bd.check_targets(name, num_attackers, targets, num_classes)
    G = len(tg)
    for field, v in (("outer_steps", outer_steps), ("samples_per_class", samples_per_class),
                     ("discriminator_epochs", discriminator_epochs),
                     ("discriminator_batch", discriminator_batch), ("hidden", hidden),
                     ("trigger_batch", trigger_batch)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {field}={v!r} must be an integer >= 1")
    bd.check_fraction(name, "poison_fraction", poison_fraction)
    bd.check_fraction(name, "blend_alpha", blend_alpha)
    for field, v in (("init_value", init_value), ("low", low), ("high", high)):
        bd.check_finite(name, field, v)
    if bd.is_number(low) and bd.is_number(high) and not float(low) < float(high):
        raise ValueError(f"{name}: low={low!r} must be below high={high!r}")
    for field, v in (("trigger_lr", trigger_lr), ("discriminator_lr", discriminator_lr)):
        bd.check_positive(name, field, v)
    group_masks = masks(input_shape, G, size, location)  # bool[G, *shape]
    if model is None or getattr(model, "features", None) is None:
        raise ValueError(f"{name}: needs the model's features (fljax.models.Model.features); "
                         "the simulator passes the config's model")
    search = trigger_search(
        model, outer_steps=outer_steps, trigger_lr=trigger_lr, low=low, high=high,
        blend_alpha=blend_alpha, samples_per_class=samples_per_class,
        discriminator_epochs=discriminator_epochs, discriminator_batch=discriminator_batch,
        discriminator_lr=discriminator_lr, discriminator_momentum=discriminator_momentum,
        discriminator_weight_decay=discriminator_weight_decay, hidden=hidden,
        trigger_batch=trigger_batch)
    mask_arr = jnp.asarray(group_masks)
    target_of = jnp.asarray(np.asarray(tg, np.int32))  # int32[G]
    evals = bd.group_evals(group_masks, tg)

    def init(spec: AttackerInit) -> M2MState:
        start = jnp.clip(jnp.asarray(init_value, jnp.float32), low, high)
        return M2MState(jnp.full((G,) + tuple(spec.input_shape), start, jnp.float32),
                        jnp.zeros((G,), jnp.int32))

    def begin_round(state: M2MState, view, key) -> M2MState:
        group = bd.group_of(view.client_ids, G)  # int32[K]

        def one(t, m, target, g, k):  # ONE attacker: its first sampled acting client's data
            rows = view.malicious & (group == g)  # bool[K]
            x, y, valid = view.examples(view.client_ids[jnp.argmax(rows)])
            new, _ = search.search(view.params, x, y, valid, t, m, target, k)
            acts = jnp.any(rows)
            return jnp.where(acts, new.astype(t.dtype), t), acts

        def run(_):
            return jax.vmap(one)(state.trigger, mask_arr, target_of, jnp.arange(G),
                                 jax.random.split(key, G))

        def skip(_):
            return state.trigger, jnp.zeros((G,), bool)

        trigger, acted = jax.lax.cond(jnp.any(view.malicious), run, skip, None)
        return M2MState(trigger, state.searches + acted.astype(jnp.int32))

    def poison(x, y, mask, key, view):
        del key
        g = bd.group_of(view.client_id, G)
        slots = bd.poisoned_slots(y.shape, poison_fraction)  # bool[S, B]
        t = view.state.trigger[g].astype(x.dtype)
        px = jnp.where(bd.expand(slots, x.ndim), search.stamp(x, t, mask_arr[g]), x)
        py = jnp.where(slots, target_of[g], y).astype(y.dtype)
        return px, py, mask

    def metrics(params, state, test, predict):
        out = {}
        for i, (suffix, _, t) in enumerate(evals):
            trig, m = state.trigger[i], mask_arr[i]
            out["backdoor_accuracy" + suffix] = bd.success_rate(
                params, test, predict, t,
                lambda xb, trig=trig, m=m: search.stamp(xb, trig.astype(xb.dtype), m))
        if "backdoor_accuracy" not in out:
            out["backdoor_accuracy"] = jnp.nanmean(jnp.stack(list(out.values())))
        return out

    return Attacker(init=init, begin_round=begin_round, poison=poison, metrics=metrics,
                    groups=G)

