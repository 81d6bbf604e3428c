"""The optimisation loop shared by all leakage attacks.

``minimize`` runs a fixed number of optax steps inside one ``lax.scan`` and
keeps the best iterate seen: second-order gradient matching diverges now and
then (L-BFGS without a careful line search, large Adam steps on a sigmoid net),
and a NaN must not throw away a good reconstruction. When the loss or the new
iterate is not finite, the variables fall back to the best iterate and the
optimizer state is re-initialised there.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from fljax.types import PyTree


class Optimizer(NamedTuple):
    """An optax transformation plus how to drive it.

    Attributes:
      tx: the optax ``GradientTransformationExtraArgs``.
      needs_value_fn: True for L-BFGS (its line search re-evaluates the loss).
      evals_per_step: worst-case loss/gradient evaluations per step (the
        function-evaluation budget is ``num_steps * evals_per_step``).
    """

    tx: optax.GradientTransformationExtraArgs
    needs_value_fn: bool
    evals_per_step: int


def make_optimizer(name: str = "adam", learning_rate: float = 0.1, num_steps: int = 1000, *,
                   signed: bool = False, decay: bool = False, memory_size: int = 20,
                   linesearch_steps: int = 10) -> Optimizer:
    """Builds the attack's optimizer.

    Args:
      name: ``"adam"`` or ``"lbfgs"``.
      learning_rate: Adam's step size (L-BFGS uses its zoom line search and
        ignores it).
      num_steps: total steps (used by the decay schedule).
      signed: Adam on the sign of the gradient (Inverting Gradients).
      decay: multiply the step by 0.1 at 3/8, 5/8 and 7/8 of the steps (IG).
      memory_size: L-BFGS history.
      linesearch_steps: cap on the zoom line search's evaluations per step, so
        an L-BFGS run has a fixed function-evaluation budget.

    Returns:
      An :class:`Optimizer`.
    """
    if name == "adam":
        if decay:
            bounds = {int(num_steps * f): 0.1 for f in (3 / 8, 5 / 8, 7 / 8)}
            lr = optax.piecewise_constant_schedule(learning_rate, bounds)
        else:
            lr = learning_rate
        tx = optax.adam(lr)
        if signed:
            tx = optax.chain(optax.scale_by_sign(), tx)
        return Optimizer(optax.with_extra_args_support(tx), False, 1)
    if name == "lbfgs":
        ls = optax.scale_by_zoom_linesearch(max_linesearch_steps=linesearch_steps,
                                            initial_guess_strategy="one")
        return Optimizer(optax.lbfgs(memory_size=memory_size, linesearch=ls), True,
                         1 + linesearch_steps)
    raise ValueError(f"unknown optimizer {name!r}; choose 'adam' or 'lbfgs'")


class MinimizeResult(NamedTuple):
    params: PyTree          # the best iterate
    loss: jax.Array         # float[]: its loss
    losses: jax.Array       # float[num_steps]: the loss at each step
    num_resets: jax.Array   # int[]: how often a non-finite step was undone


def _select(pred, a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(pred, u, v), a, b)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(tree)]))


def minimize(loss_fn: Callable[[PyTree], jax.Array], init: PyTree, optimizer: Optimizer,
             num_steps: int, project: Optional[Callable[[PyTree], PyTree]] = None
             ) -> MinimizeResult:
    """Minimises ``loss_fn`` from ``init`` for ``num_steps`` steps (jit/vmap friendly).

    Args:
      loss_fn: ``loss_fn(params) -> float[]``.
      init: the starting pytree.
      optimizer: from :func:`make_optimizer`.
      num_steps: static number of steps.
      project: optional projection applied after every step (box constraint).

    Returns:
      A :class:`MinimizeResult` holding the best iterate seen (by loss).
    """
    tx = optimizer.tx
    value_and_grad = jax.value_and_grad(loss_fn)
    project = project or (lambda p: p)

    def step(carry, _):
        params, state, best, best_loss, resets = carry
        loss, grads = value_and_grad(params)
        better = loss < best_loss  # False for NaN
        best = _select(better, params, best)
        best_loss = jnp.where(better, loss, best_loss)
        if optimizer.needs_value_fn:
            updates, new_state = tx.update(grads, state, params, value=loss, grad=grads,
                                           value_fn=loss_fn)
        else:
            updates, new_state = tx.update(grads, state, params)
        new_params = project(optax.apply_updates(params, updates))
        ok = jnp.isfinite(loss) & _all_finite(new_params) & _all_finite(grads)
        params = _select(ok, new_params, best)
        state = _select(ok, new_state, tx.init(best))
        return (params, state, best, best_loss, resets + (~ok).astype(jnp.int32)), loss

    init = project(init)
    carry = (init, tx.init(init), init, jnp.asarray(jnp.inf, jnp.float32), jnp.int32(0))
    (params, _, best, best_loss, resets), losses = jax.lax.scan(step, carry, None,
                                                                length=num_steps)
    final = loss_fn(params)
    better = final < best_loss
    return MinimizeResult(_select(better, params, best), jnp.where(better, final, best_loss),
                          losses, resets)
