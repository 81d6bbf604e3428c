"""A gradient-matching reconstruction attack, the shared engine of DLG, iDLG, IG,
DLM and DLM+.

An attack is built for one model by a factory and returns an :class:`Attack`
whose ``reconstruct(params, observed, key, labels)`` handles ONE victim: it
runs ``restarts`` random restarts (vmapped) and keeps the one with the lowest
matching loss (never chosen by ground truth). Call sites ``vmap`` it over
victims and ``jit`` the result, e.g. :func:`reconstruct_many`.

The variables optimised are the dummy images ``x`` (``float[B, *input_shape]``),
optionally soft-label logits ``y`` (``float[B, C]``, DLG-style) and a scale
``k`` (DLM). The dummy update is the gradient of the cross-entropy at the
server weights ``W0``, or (``unroll_steps > 0``) the weight difference after
unrolling a known number of local SGD steps of a known size (Inverting
Gradients' FedAvg attack).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from fljax.attacks.leakage import objectives as objectives_lib
from fljax.attacks.leakage import observe as observe_lib
from fljax.attacks.leakage.optimize import make_optimizer, minimize
from fljax.models import Model
from fljax.types import Params, PRNGKey, PyTree


class Reconstruction(NamedTuple):
    """The result for one victim.

    Attributes:
      x: ``float[B, *input_shape]`` reconstructed images (clipped to [0, 1]).
      labels: ``int[B]`` the labels used or recovered.
      loss: ``float[]`` matching loss of the chosen restart.
      k: ``float[]`` the learned scale (DLM) or 1.
      restart_losses: ``float[R]`` the final loss of every restart.
      num_resets: ``int[]`` non-finite steps undone in the chosen restart.
      losses: ``float[num_steps]`` the loss curve of the chosen restart.
    """

    x: jax.Array
    labels: jax.Array
    loss: jax.Array
    k: jax.Array
    restart_losses: jax.Array
    num_resets: jax.Array
    losses: jax.Array


class Attack(NamedTuple):
    """A leakage attack for one model.

    Attributes:
      name: the attack's name.
      reconstruct: ``reconstruct(params, observed, key, labels) -> Reconstruction``
        for ONE victim; ``labels: int[B]`` is used only when the attack is
        configured with ``label="known"`` (pass the true labels or zeros).
      batch_size: number of images reconstructed per victim.
    """

    name: str
    reconstruct: Callable[[Params, PyTree, PRNGKey, jax.Array], Reconstruction]
    batch_size: int


def last_layer_name(params: Params, num_classes: int) -> str:
    """The top-level name of the output Dense layer in a flax params dict.

    It is the layer with a 2-D ``kernel`` of width ``num_classes`` and the
    highest trailing index in its name (``dense_2`` in LeNet-5).
    """
    def index(name):
        digits = "".join(c for c in name.split("_")[-1] if c.isdigit())
        return int(digits) if digits else -1

    candidates = [name for name, layer in params.items()
                  if isinstance(layer, dict) and "kernel" in layer
                  and layer["kernel"].ndim == 2 and layer["kernel"].shape[-1] == num_classes]
    if not candidates:
        raise ValueError("no output Dense layer with kernel [*, num_classes] found")
    return max(candidates, key=index)


def infer_labels(observed: Params, num_classes: int, num_labels: int = 1,
                 sign: float = 1.0) -> jax.Array:
    """iDLG's label rule on a gradient or a weight difference.

    For one example and cross-entropy, the output layer's gradient is
    ``dL/dW[:, i] = (p_i - y_i) * h`` (flax kernels are ``[in, out]``). With
    non-negative features ``h`` (sigmoid, ReLU) only the true class's column
    sums to a negative number, so ``label = argmin_i sum_j dL/dW[j, i]``. A
    weight difference ``dW = W0 - W_T = lr * sum_t g_t`` keeps that sign for
    every local step on the same example, so the rule applies unchanged; pass
    ``sign=-1`` for updates shared as ``W_T - W0``. For ``num_labels > 1`` the
    ``num_labels`` most negative columns are returned (Yin et al.'s extension,
    which assumes distinct labels).

    Args:
      observed: gradient-like pytree (flax params layout).
      num_classes: number of classes ``C``.
      num_labels: ``B``, the labels to return.
      sign: +1 for gradients / ``W0 - W_T``, -1 for ``W_T - W0``.

    Returns:
      ``int[num_labels]``.

    References:
      Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients",
      arXiv 2001.02610; Yin et al., "See through Gradients", CVPR 2021.
    """
    kernel = observed[last_layer_name(observed, num_classes)]["kernel"]  # float[h, C]
    column = sign * jnp.sum(kernel, axis=0)  # float[C]
    if num_labels == 1:
        return jnp.argmin(column)[None].astype(jnp.int32)
    return jnp.argsort(column)[:num_labels].astype(jnp.int32)


def gradient_matching(model: Model, *, name: str = "gradient_matching",
                      batch_size: int = 1,
                      objective: str = "l2",
                      label: str = "learn",
                      optimizer: str = "adam",
                      learning_rate: float = 0.1,
                      num_steps: int = 1000,
                      restarts: int = 1,
                      tv: float = 0.0,
                      box: bool = False,
                      signed: bool = False,
                      decay: bool = False,
                      learn_scale: bool = False,
                      k_init: float = 1.0,
                      scale_param: str = "linear",
                      assumed_lr: Optional[float] = None,
                      init: str = "randn",
                      unroll_steps: int = 0,
                      unroll_lr: float = 0.1,
                      label_sign: float = 1.0,
                      memory_size: int = 20,
                      linesearch_steps: int = 10) -> Attack:
    """Builds a gradient-matching attack (the common engine).

    Args:
      model: the shared model (its ``apply`` must be twice differentiable).
      name: reported name.
      batch_size: images per victim ``B``.
      objective: one of :data:`objectives.OBJECTIVES` (``l2``, ``scaled_l2``,
        ``mean_norm_l2``, ``cosine``).
      label: ``"learn"`` (soft-label logits optimised jointly, DLG), ``"idlg"``
        (inferred from the output layer's sign pattern, then fixed) or
        ``"known"`` (the labels passed to ``reconstruct``).
      optimizer: ``"adam"`` or ``"lbfgs"``.
      learning_rate: Adam's step size.
      num_steps: optimisation steps (L-BFGS: outer iterations, each with at most
        ``linesearch_steps`` extra evaluations).
      restarts: random restarts per victim (vmapped), best by final loss.
      tv: weight of the total-variation prior.
      box: project the images into [0, 1] after every step.
      signed: signed gradients (IG).
      decay: step decay x0.1 at 3/8, 5/8, 7/8 (IG).
      learn_scale: learn a scale ``k`` (DLM); the observed update is
        multiplied by ``k`` in ``scaled_l2``.
      k_init: the initial guess of ``k`` (DLM: ~1/lr).
      scale_param: ``"linear"`` (``k`` itself is optimised, as in the official
        DLM code, so Adam moves it by about ``learning_rate`` per step) or
        ``"log"`` (``k = k_init * exp(s)``, scale-free steps; converges faster
        but falls more easily into the trivial optimum ``k = 0, g = 0``).
      assumed_lr: if set, the observed update is divided by it before matching
        (the FedSGD attacker's conversion of a weight difference to a gradient,
        ``g = dW / lr``; a wrong value is DLG with the wrong learning rate).
      init: dummy image init: ``"randn"`` (N(0, 1), DLG/DLM), ``"uniform"``
        (U(0, 1)) or ``"grey"`` (0.5 + small noise).
      unroll_steps: if > 0, the dummy update is ``W0 - W_T`` from that many
        unrolled SGD steps of size ``unroll_lr`` (known hyper-parameters).
      unroll_lr: the victim's learning rate assumed when unrolling.
      label_sign: sign convention for the iDLG rule (+1 for ``W0 - W_T``).
      memory_size: L-BFGS history.
      linesearch_steps: L-BFGS line-search budget per step.

    Returns:
      An :class:`Attack`.
    """
    if objective not in objectives_lib.OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of "
                         f"{sorted(objectives_lib.OBJECTIVES)}")
    for arg, value, low in (("batch_size", batch_size, 1), ("num_steps", num_steps, 1),
                            ("restarts", restarts, 1), ("unroll_steps", unroll_steps, 0),
                            ("memory_size", memory_size, 1),
                            ("linesearch_steps", linesearch_steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{arg}={value!r} must be an int >= {low}")
    if isinstance(learning_rate, (int, float)) and not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r} must be > 0")
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer={optimizer!r} must be 'adam' or 'lbfgs'")
    if init not in ("randn", "uniform", "grey"):
        raise ValueError(f"init={init!r} must be 'randn', 'uniform' or 'grey'")
    if scale_param not in ("linear", "log"):
        raise ValueError(f"scale_param must be 'linear' or 'log', got {scale_param!r}")
    if label not in ("learn", "idlg", "known"):
        raise ValueError(f"label must be 'learn', 'idlg' or 'known', got {label!r}")
    objective_fn = objectives_lib.OBJECTIVES[objective]
    opt = make_optimizer(optimizer, learning_rate, num_steps, signed=signed, decay=decay,
                         memory_size=memory_size, linesearch_steps=linesearch_steps)
    shape = (batch_size,) + tuple(model.input_shape)
    num_classes = model.num_classes

    def dummy_update(params, x, target):
        if unroll_steps > 0:
            return observe_lib.weight_delta(model, params, x, target,
                                            jnp.float32(unroll_lr), unroll_steps)
        return observe_lib.gradient(model, params, x, target)

    def init_vars(key):
        kx, ky = jax.random.split(key)
        if init == "randn":
            x = jax.random.normal(kx, shape)
        elif init == "uniform":
            x = jax.random.uniform(kx, shape)
        elif init == "grey":
            x = 0.5 + 0.1 * jax.random.normal(kx, shape)
        else:
            raise ValueError(f"unknown init {init!r}")
        v = {"x": x}
        if label == "learn":
            v["y"] = jax.random.normal(ky, (batch_size, num_classes))
        if learn_scale:
            v["k"] = jnp.zeros((), jnp.float32) if scale_param == "log" else jnp.float32(k_init)
        return v

    def scale(v):
        if not learn_scale:
            return jnp.float32(1.0)
        return k_init * jnp.exp(v["k"]) if scale_param == "log" else v["k"]

    def project(v):
        if box:
            return {**v, "x": jnp.clip(v["x"], 0.0, 1.0)}
        return v

    def reconstruct(params: Params, observed: PyTree, key: PRNGKey,
                    labels: jax.Array) -> Reconstruction:
        if assumed_lr is not None:
            observed = jax.tree_util.tree_map(lambda o: o / assumed_lr, observed)
        if label == "idlg":
            fixed = infer_labels(observed, num_classes, batch_size, label_sign)
        else:
            fixed = labels.astype(jnp.int32)
        fixed_target = jax.nn.one_hot(fixed, num_classes)

        def loss_fn(v):
            target = jax.nn.softmax(v["y"], -1) if label == "learn" else fixed_target
            g = dummy_update(params, v["x"], target)
            loss = objective_fn(g, observed, scale(v))
            if tv:
                loss = loss + tv * objectives_lib.total_variation(v["x"])
            return loss

        def one_restart(k):
            return minimize(loss_fn, init_vars(k), opt, num_steps, project)

        res = jax.vmap(one_restart)(jax.random.split(key, restarts))
        best = jnp.argmin(jnp.where(jnp.isfinite(res.loss), res.loss, jnp.inf))
        v = jax.tree_util.tree_map(lambda a: a[best], res.params)
        out_labels = jnp.argmax(v["y"], -1).astype(jnp.int32) if label == "learn" else fixed
        return Reconstruction(jnp.clip(v["x"], 0.0, 1.0), out_labels, res.loss[best], scale(v),
                              res.loss, res.num_resets[best], res.losses[best])

    return Attack(name, reconstruct, batch_size)


def reconstruct_many(attack: Attack) -> Callable:
    """``jit(vmap(attack.reconstruct))`` over victims: shared ``params``;
    ``observed``, ``keys`` and ``labels`` carry a leading victim axis."""
    return jax.jit(jax.vmap(attack.reconstruct, in_axes=(None, 0, 0, 0)))
