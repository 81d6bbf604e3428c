"""Partitioners: split example indices among clients.

Every partitioner is a pure NumPy function of the labels and a seed that
returns a list of ``int64`` index arrays, one per client, that together hold
every example exactly once.

References:
  Dirichlet label skew: Hsu, Qi, Brown, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification", 2019.
  Shards: McMahan et al., "Communication-Efficient Learning of Deep Networks
  from Decentralized Data", AISTATS 2017.
  Bias-q grouping: Fang, Cao, Jia, Gong, "Local Model Poisoning Attacks to
  Byzantine-Robust Federated Learning", USENIX Security 2020.
"""

from __future__ import annotations

import numpy as np


def _check(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_examples < num_clients:
        raise ValueError(
            f"the data set has {num_examples} examples but {num_clients} clients were asked "
            f"for; use at most {num_examples} clients (data.num_clients) or a larger data set")


def iid(labels: np.ndarray, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffles the examples and deals them out in near-equal parts."""
    n = len(labels)
    _check(n, num_clients)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float = 0.5, seed: int = 0,
              min_size: int = 1) -> list[np.ndarray]:
    """Label skew: each class is split among clients in Dirichlet(alpha) proportions.

    Redraws (up to 100 times) until every client has at least ``min_size``
    examples; smaller ``alpha`` means more skew.
    """
    n = len(labels)
    _check(n, num_clients)
    if alpha <= 0:
        raise ValueError(f"dirichlet: alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(100):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].append(chunk)
        out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    # Fall back: move examples from the largest clients to empty ones.
    for client in range(num_clients):
        while len(out[client]) < min_size:
            donor = int(np.argmax([len(p) for p in out]))
            out[client] = np.sort(np.append(out[client], out[donor][-1]))
            out[donor] = out[donor][:-1]
    return out


def shards(labels: np.ndarray, num_clients: int, classes_per_client: int = 2,
           seed: int = 0) -> list[np.ndarray]:
    """McMahan et al.'s pathological split: sort by label, cut into
    ``num_clients * classes_per_client`` shards, give each client that many
    shards at random (so most clients see about ``classes_per_client`` classes)."""
    n = len(labels)
    _check(n, num_clients * classes_per_client)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels + rng.random(n) * 0.5, kind="stable")  # shuffle within class
    pieces = np.array_split(order, num_clients * classes_per_client)
    assignment = rng.permutation(len(pieces)).reshape(num_clients, classes_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])).astype(np.int64)
            for row in assignment]


def fang(labels: np.ndarray, num_clients: int, bias: float = 0.5, num_groups: int | None = None,
         seed: int = 0) -> list[np.ndarray]:
    """Fang et al.'s grouping with bias ``q``.

    Clients are split evenly into one group per label. An example with label
    ``l`` goes to group ``l`` with probability ``q`` and otherwise to one of the
    other groups chosen uniformly; within a group it goes to a uniformly chosen
    client. ``q = 1/num_groups`` is IID; larger ``q`` is more non-IID.
    """
    n = len(labels)
    _check(n, num_clients)
    classes = np.unique(labels)
    g = len(classes) if num_groups is None else int(num_groups)
    if g > num_clients:
        raise ValueError(f"fang: needs at least one client per group ({g} groups), "
                         f"got {num_clients} clients")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"fang: bias must be in [0, 1], got {bias}")
    rng = np.random.default_rng(seed)
    groups = np.array_split(np.arange(num_clients), g)
    label_pos = {c: i for i, c in enumerate(classes)}
    owner = np.empty(n, np.int64)
    for i, lab in enumerate(labels):
        home = label_pos[lab] % g
        if g > 1 and rng.random() >= bias:
            other = rng.integers(g - 1)
            home = other if other < home else other + 1
        owner[i] = rng.choice(groups[home])
    return _from_owner(owner, num_clients, rng)


def natural(ids: np.ndarray, num_clients: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """One client per distinct value of ``ids`` (e.g. a writer id column).

    With ``num_clients`` given, keeps that many ids chosen at random (their
    examples only) — the other examples are dropped, which is the one case
    where not every example is used.
    """
    uniq = np.unique(ids)
    if num_clients is not None:
        if num_clients > len(uniq):
            raise ValueError(f"natural: {num_clients} clients asked for but only {len(uniq)} "
                             "distinct ids exist")
        uniq = np.random.default_rng(seed).choice(uniq, num_clients, replace=False)
    return [np.flatnonzero(ids == u).astype(np.int64) for u in uniq]


def _from_owner(owner: np.ndarray, num_clients: int, rng) -> list[np.ndarray]:
    parts = [np.flatnonzero(owner == c).astype(np.int64) for c in range(num_clients)]
    # Every client needs at least one example: take from the largest.
    for c in range(num_clients):
        if len(parts[c]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            take = rng.integers(len(parts[donor]))
            parts[c] = parts[donor][take:take + 1]
            parts[donor] = np.delete(parts[donor], take)
    return parts


PARTITIONERS = {"iid": iid, "dirichlet": dirichlet, "shards": shards, "fang": fang}
