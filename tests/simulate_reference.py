"""FedAvg / FedAdam / FedYogi as readable Python loops: the reference the round is checked against.

Written from the definitions, sharing no code with the simulator but the
model (which is not under test here) and JAX's random numbers (which define
the sampling and the batches):

* the round key is ``fold_in(rounds_key, r)``, split into sampling, clients,
  server and attacker keys; ``jax.random.choice`` without replacement picks
  the K clients; each client's key splits into batching, training,
  poisoning and transform keys;
* a client's batches (``fljax.data.client_batch_indices``' documented
  definition, here in NumPy): one permutation per epoch from uniform scores
  (padding slots score 2 and sort last), epochs concatenated and cut into
  ``steps`` batches of ``batch_size``; positions past ``epochs * count`` are
  padding; in fixed-step mode (``client.steps > 0``) the permutations cycle
  and nothing is padding;
* local training: plain SGD on the mean cross-entropy over the batch's real
  examples (written out with ``logsumexp``), a fully padded batch skipped;
* the server: the example-count-weighted mean of the updates, then SGD
  (``p + lr * mean``), Adam or Yogi (as optax defines them: Yogi's moments
  start at 1e-6 and are bias-corrected) written out by hand on the
  pseudo-gradient ``-mean``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _batches(key, offset, count, max_count, steps, batch_size, epochs):
    total = steps * batch_size
    n_perm = epochs if epochs else max(1, -(-total // max_count)) + 1
    scores = np.array(jax.random.uniform(key, (n_perm, max_count)))
    scores[:, count:] = 2.0
    perms = np.argsort(scores, axis=1, kind="stable")
    idx, mask = [], []
    for t in range(total):
        epoch, pos = divmod(t, count)
        idx.append(offset + perms[epoch % n_perm, pos])
        mask.append(epoch < epochs if epochs else True)
    return (np.array(idx).reshape(steps, batch_size),
            np.array(mask).reshape(steps, batch_size))


def _loss(apply, params, x, y, m):
    logits = apply(params, x)
    logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    return jnp.sum(nll * m) / jnp.sum(m)


def fedavg(cfg: dict, data, model, rounds: int):
    """Parameters after ``rounds`` rounds of a config with server
    ``sgd`` / ``adam`` / ``yogi``, client ``sgd``, ``mean``, no attack.

    Args:
      cfg: the resolved config.
      data: its ``FederatedData`` (host arrays).
      model: its ``Model``.
    """
    cc, sc = cfg["client"], cfg["server"]
    assert cfg["aggregator"]["name"] == "mean" and cc["optimizer"] == "sgd"
    epochs = 0 if cc["steps"] else cc["epochs"]
    max_count = int(data.counts.max())
    steps = cc["steps"] or -(-cc["epochs"] * max_count // cc["batch_size"])
    k_init, k_rounds = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    params = jax.tree_util.tree_map(np.asarray, model.init(k_init))
    grad = jax.jit(jax.grad(lambda p, x, y, m: _loss(model.apply, p, x, y, m)))
    lr = cc["learning_rate"]
    k = cfg["clients_per_round"]
    leaves, tree = jax.tree_util.tree_flatten(params)
    m_state = [np.zeros_like(l) for l in leaves]
    v_state = [np.zeros_like(l) for l in leaves]
    if sc["optimizer"] == "yogi":  # optax.yogi starts both moments at 1e-6
        m_state = [np.full_like(l, 1e-6) for l in leaves]
        v_state = [np.full_like(l, 1e-6) for l in leaves]
    for r in range(rounds):
        rkey = jax.random.fold_in(k_rounds, r)
        k_sample, k_clients, _, _ = jax.random.split(rkey, 4)
        ids = np.asarray(jax.random.choice(k_sample, data.num_clients, (k,), replace=False))
        ckeys = jax.random.split(k_clients, k)
        total = [np.zeros_like(l, dtype=np.float64) for l in leaves]
        weight = 0.0
        for i, cid in enumerate(ids):
            k_batch = jax.random.split(ckeys[i], 4)[0]
            idx, mask = _batches(k_batch, int(data.offsets[cid]), int(data.counts[cid]),
                                 max_count, steps, cc["batch_size"], epochs)
            p = params
            for t in range(steps):
                if not mask[t].any():
                    continue
                g = grad(p, data.x[idx[t]], data.y[idx[t]], mask[t].astype(np.float32))
                p = jax.tree_util.tree_map(lambda a, b: np.asarray(a - lr * b), p, g)
            w = float(data.counts[cid])
            for j, (a, b) in enumerate(zip(jax.tree_util.tree_leaves(p), leaves)):
                total[j] += w * (np.asarray(a, np.float64) - b)
            weight += w
        mean = [t / weight for t in total]
        slr = sc["learning_rate"]
        kw = sc["optimizer_kwargs"]
        new = []
        for j, (pj, dj) in enumerate(zip(leaves, mean)):
            g = -dj  # the server's pseudo-gradient
            if sc["optimizer"] == "sgd":
                new.append(pj + slr * dj)
                continue
            b1, b2 = kw.get("b1", 0.9), kw.get("b2", 0.999)
            m_state[j] = b1 * m_state[j] + (1 - b1) * g
            if sc["optimizer"] == "adam":
                eps = kw.get("eps", 1e-8)
                v_state[j] = b2 * v_state[j] + (1 - b2) * g * g
            else:  # yogi
                eps = kw.get("eps", 1e-3)
                v_state[j] = v_state[j] - (1 - b2) * np.sign(v_state[j] - g * g) * g * g
            m_hat = m_state[j] / (1 - b1 ** (r + 1))  # both bias-corrected, as optax does
            v_hat = v_state[j] / (1 - b2 ** (r + 1))
            new.append(pj - slr * m_hat / (np.sqrt(v_hat) + eps))
        leaves = [np.asarray(x, np.float32) for x in new]
        params = jax.tree_util.tree_unflatten(tree, leaves)
    return params
