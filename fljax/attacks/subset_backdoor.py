"""Backdoors without a trigger: a natural subset of the data relabelled to a target.

* :func:`targeted_task` (Sun et al. 2019): the targeted task is a natural
  subset of the training data, e.g. the images of class ``source`` written
  by a few chosen writers, which the attackers want classified as ``target``.
  The writers themselves stay benign clients holding those images correctly
  labelled, the setting that distinguishes Sun et al. from earlier work.
  How hard the task is ("complexity") grows with the subset: a few writers'
  sevens are easy, every seven is hard.
* :func:`edge_case` (Wang et al. 2020, "attack of the tails"): the subset is
  the tail of class ``source`` (the examples farthest from the class mean),
  *held out*: taken out of every client's data, half of it given to the
  attackers, half kept to measure the attack. Benign clients never see such
  examples, which is what makes the backdoor hard to remove.

Both are chosen on the host when the experiment is prepared, by
:func:`select_targeted_task` / :func:`select_edge_case` (``prepare`` calls
them, the simulator passes the result to the factory as ``subset``), and
travel with the round's shared data. In a malicious client's batches the
first ``round(poison_fraction * B)`` examples are replaced by examples drawn
from the subset, labelled ``target``. Backdoor accuracy is measured on the
subset's test examples (:class:`~fljax.attacks.attacker.Subset`).

References:
  Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
  Learning?", NeurIPS FL workshop 2019 (arXiv 1911.07963; code: TFF
  ``research/targeted_attack``);
  Wang et al., "Attack of the Tails: Yes, You Really Can Backdoor Federated
  Learning", NeurIPS 2020.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker, Subset, TestSet


def _test_set(x: np.ndarray, y: np.ndarray, batch: int) -> TestSet:
    from fljax.metrics import test_set

    return TestSet(*test_set(x, y, batch))


def _check_int(attack: str, field: str, v, low: int) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
        raise ValueError(f"{attack}: {field}={v!r} must be an integer >= {low}")
    return int(v)


def select_targeted_task(fed, source: int = 7, writers: int = 0, batch: int = 1024, **_):
    """Sun et al.'s targeted task on a :class:`~fljax.data.FederatedData` (host).

    Args:
      fed: the federated data.
      source: the class whose images are targeted.
      writers: ``0``: every training image of ``source`` is the subset, and the
        attack is measured on the test images of ``source``; ``w > 0``: the
        images of ``source`` held by the last ``w`` clients (with the
        ``natural`` partition, ``w`` writers), measured on those same images
        as TFF's code does (the attackers want exactly those misclassified).
        The attackers are clients ``0..m-1``, so the writers stay benign when
        ``m + w <= num_clients``.
      batch: evaluation batch size.

    Returns:
      ``(Subset, fed)`` (the data unchanged).
    """
    name = "targeted_task"
    bd.check_class(name, "source", source, fed.num_classes)
    w = _check_int(name, "writers", writers, 0)
    if w > fed.num_clients:
        raise ValueError(f"{name}: writers={w} exceeds the {fed.num_clients} clients")
    if w == 0:
        rows = np.flatnonzero(fed.y == source)
        test_x, test_y = fed.x_test[fed.y_test == source], fed.y_test[fed.y_test == source]
    else:
        first = int(fed.offsets[fed.num_clients - w])
        rows = first + np.flatnonzero(fed.y[first:] == source)
        test_x, test_y = fed.x[rows], fed.y[rows]
    if len(rows) == 0 or len(test_y) == 0:
        where = f"the last {w} clients" if w else "the data"
        raise ValueError(f"{name}: no image of class source={source} among {where}; choose "
                         "another source or more writers")
    return Subset(fed.x[rows], fed.y[rows], _test_set(test_x, test_y, batch)), fed


def select_edge_case(fed, source: int = 7, num_examples: int = 40, batch: int = 1024, **_):
    """The tail of class ``source``, held out of every client's data (host).

    The training examples of ``source`` are ranked by their L2 distance to the
    class mean, farthest first; the first ``num_examples`` are taken out of
    their clients' data (an example that is its client's last stays, and the
    next one is taken instead), the even ranks go to the attackers and the odd
    ranks measure the attack, so the two halves are equally far in the tail.

    Returns:
      ``(Subset, fed without the held-out examples)``.
    """
    from fljax.data.federated import FederatedData

    name = "edge_case"
    bd.check_class(name, "source", source, fed.num_classes)
    n = _check_int(name, "num_examples", num_examples, 2)
    rows = np.flatnonzero(fed.y == source)
    if len(rows) < n:
        raise ValueError(f"{name}: num_examples={n} but the data has only {len(rows)} training "
                         f"examples of class {source}")
    x = fed.x[rows].reshape(len(rows), -1).astype(np.float64)
    order = rows[np.argsort(-np.linalg.norm(x - x.mean(0), axis=1), kind="stable")]
    owner = np.searchsorted(fed.offsets, np.arange(len(fed.y)), side="right") - 1
    left = fed.counts.astype(np.int64).copy()
    held = []
    for r in order:
        if len(held) == n:
            break
        if left[owner[r]] > 1:
            left[owner[r]] -= 1
            held.append(r)
    if len(held) < n:
        raise ValueError(f"{name}: could hold out only {len(held)} of num_examples={n} examples "
                         "without emptying a client; lower num_examples")
    held = np.asarray(held)
    pool, judge = held[0::2], held[1::2]
    keep = np.ones(len(fed.y), bool)
    keep[held] = False
    kept = FederatedData(
        x=fed.x[keep], y=fed.y[keep],
        offsets=np.concatenate([[0], np.cumsum(left)[:-1]]).astype(np.int32),
        counts=left.astype(np.int32), x_test=fed.x_test, y_test=fed.y_test,
        num_classes=fed.num_classes, name=f"{fed.name} - {n} held out")
    subset = Subset(fed.x[pool], fed.y[pool], _test_set(fed.x[judge], fed.y[judge], batch))
    return subset, kept


def subset_attacker(subset: Subset, target: int, poison_fraction) -> Attacker:
    """Replaces part of each malicious batch by subset examples labelled ``target``.

    Args:
      subset: the :class:`~fljax.attacks.attacker.Subset` (host or device arrays).
      target: the target label (static).
      poison_fraction: share of each batch replaced (may be traced).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` (``poison``, ``metrics``:
      ``backdoor_accuracy`` on ``subset.test``).
    """
    pool = subset.x  # float[P, ...]
    size = int(np.shape(subset.y)[0])

    def poison(x, y, mask, key, view):
        del view
        slots = bd.poisoned_slots(y.shape, poison_fraction)  # bool[S, B]
        pick = jax.random.randint(key, y.shape, 0, size)  # int[S, B]
        drawn = jnp.asarray(pool)[pick].astype(x.dtype)  # float[S, B, ...]
        px = jnp.where(bd.expand(slots, x.ndim), drawn, x)
        py = jnp.where(slots, target, y).astype(y.dtype)
        return px, py, mask

    def metrics(params, state, test, predict):
        del state, test
        judge = TestSet(*(jnp.asarray(a) for a in subset.test))
        return {"backdoor_accuracy": bd.success_rate(params, judge, predict, target)}

    return Attacker(poison=poison, metrics=metrics)


def _check(name: str, num_classes: int, subset, source, target, poison_fraction) -> int:
    bd.check_class(name, "source", source, num_classes)
    t = bd.check_class(name, "target", target, num_classes)
    if t == source:
        raise ValueError(f"{name}: target={t} equals source: the backdoor would change nothing")
    bd.check_fraction(name, "poison_fraction", poison_fraction)
    if subset is None:
        raise ValueError(f"{name} needs its subset: build it with select_{name}(federated_data, "
                         "...) and pass subset= (the simulator does this)")
    return t


def targeted_task(num_classes: int, input_shape: tuple, subset: Optional[Subset] = None,
                  source: int = 7, target: int = 1, writers: int = 0,
                  poison_fraction: float = 0.3) -> Attacker:
    """Sun et al.'s targeted task: a natural subset (class ``source``, optionally
    of a few writers) relabelled ``target``.

    The subset is chosen by :func:`select_targeted_task` (``source``,
    ``writers``). Malicious clients replace ``round(poison_fraction * B)``
    examples of every batch by subset images labelled ``target``; the writers
    who own those images train on them correctly labelled. Combine with
    ``model_replacement`` (Sun et al.'s boosting) and ``pgd`` (their
    norm-bounded attack) through ``attack.combine``.

    Args:
      num_classes, input_shape: passed by the simulator.
      subset: the :class:`~fljax.attacks.attacker.Subset` (the simulator
        passes it).
      source: the targeted class (static).
      target: the label the attackers want (static, != ``source``).
      writers: how many writers' images form the subset (static; 0: all).
      poison_fraction: share of each malicious batch replaced, in ``(0, 1]``
        (a value).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker`.

    References:
      Sun et al., "Can You Really Backdoor Federated Learning?", 2019.
    """
    del input_shape, writers  # used by select_targeted_task
    t = _check("targeted_task", num_classes, subset, source, target, poison_fraction)
    return subset_attacker(subset, t, poison_fraction)


def edge_case(num_classes: int, input_shape: tuple, subset: Optional[Subset] = None,
              source: int = 7, target: int = 1, num_examples: int = 40,
              poison_fraction: float = 0.3) -> Attacker:
    """Edge-case backdoor: the held-out tail of class ``source`` labelled ``target``.

    The subset is chosen and held out by :func:`select_edge_case` (the
    ``num_examples`` examples of ``source`` farthest from the class mean leave
    every client's data; half train the attack, half measure it). Malicious
    clients replace ``round(poison_fraction * B)`` examples of every batch by
    held-out examples labelled ``target``. Wang et al.'s images come from
    another data set (ARDIS sevens, Southwest airliners); here the tail of the
    same data set stands in for them.

    Args:
      num_classes, input_shape: passed by the simulator.
      subset: passed by the simulator.
      source: the class whose tail is used (static).
      target: the target label (static, != ``source``).
      num_examples: examples held out (static, >= 2).
      poison_fraction: share of each malicious batch replaced (a value).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker`.

    References:
      Wang et al., "Attack of the Tails", NeurIPS 2020.
    """
    del input_shape, num_examples  # used by select_edge_case
    t = _check("edge_case", num_classes, subset, source, target, poison_fraction)
    return subset_attacker(subset, t, poison_fraction)
