"""The gradient-matching engine against a hand-written loss and first step,
and the five attacks' settings against their papers'.

The end-to-end tests (``attacks_test.py``) check that reconstructions beat
the baselines; these check what the engine computes: the dummy variables it
draws, the loss it builds from them (labels, scale, objective, prior,
learning-rate guess, unrolled update) and the first Adam step on it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax.attacks import leakage
from fljax.attacks.leakage import objectives, observe
from fljax.models import mlp

C, B = 10, 2


@pytest.fixture(scope="module")
def setup():
    model = mlp((8, 8, 1), C, hidden=(16,), activation="sigmoid")
    params = observe.uniform_init(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    x = jax.random.uniform(jax.random.PRNGKey(2), (B, 8, 8, 1))
    y = jnp.array([3, 7])
    obs = jax.jit(lambda p, a: observe.observe(model, p, a, y, kind="delta", lr=0.5))(params, x)
    return model, params, obs, y


def _init(key, cfg):
    """The dummy variables by hand: images from ``kx`` (N(0, 1), U(0, 1) or
    0.5 + 0.1 N(0, 1)), soft-label logits N(0, 1) from ``ky``, the scale."""
    kx, ky = jax.random.split(key)
    shape = (B, 8, 8, 1)
    init = cfg.get("init", "randn")
    x = {"randn": lambda: jax.random.normal(kx, shape),
         "uniform": lambda: jax.random.uniform(kx, shape),
         "grey": lambda: 0.5 + 0.1 * jax.random.normal(kx, shape)}[init]()
    if cfg.get("box"):
        x = jnp.clip(x, 0.0, 1.0)
    v = {"x": x}
    if cfg.get("label", "learn") == "learn":
        v["y"] = jax.random.normal(ky, (B, C))
    if cfg.get("learn_scale"):
        v["k"] = jnp.float32(0.0 if cfg.get("scale_param") == "log" else cfg.get("k_init", 1.0))
    return v


def _loss(model, params, observed, v, cfg, fixed):
    """The matching loss by hand."""
    if cfg.get("assumed_lr") is not None:
        observed = jax.tree_util.tree_map(lambda o: o / cfg["assumed_lr"], observed)
    if cfg.get("label", "learn") == "learn":
        target = jax.nn.softmax(v["y"], -1)
    else:
        target = jax.nn.one_hot(fixed, C)
    if cfg.get("unroll_steps", 0):
        after = params
        for _ in range(cfg["unroll_steps"]):
            g = jax.grad(lambda p: observe.soft_cross_entropy(model.apply(p, v["x"]), target))(after)
            after = jax.tree_util.tree_map(lambda w, d: w - cfg["unroll_lr"] * d, after, g)
        g = jax.tree_util.tree_map(jnp.subtract, params, after)
    else:
        g = jax.grad(lambda p: observe.soft_cross_entropy(model.apply(p, v["x"]), target))(params)
    k = 1.0
    if cfg.get("learn_scale"):
        k = cfg.get("k_init", 1.0) * jnp.exp(v["k"]) if cfg.get("scale_param") == "log" else v["k"]
    loss = objectives.OBJECTIVES[cfg.get("objective", "l2")](g, observed, k)
    return loss + cfg.get("tv", 0.0) * objectives.total_variation(v["x"])


CASES = {
    "dlm-like": dict(objective="scaled_l2", label="learn", learn_scale=True, k_init=3.0,
                     init="uniform", restarts=2),
    "ig-like": dict(objective="cosine", label="known", init="randn", tv=0.3, box=True,
                    signed=True, restarts=2),
    "idlg-unrolled-log-scale": dict(objective="scaled_l2", label="idlg", init="grey",
                                    learn_scale=True, k_init=2.0, scale_param="log",
                                    unroll_steps=2, unroll_lr=0.05, assumed_lr=0.5),
    "one-unrolled-step": dict(objective="l2", label="known", unroll_steps=1, unroll_lr=0.3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_first_loss_and_first_step_match_the_hand_loop(setup, case):
    """One Adam step (learning rate 0.05) per restart: the loss the engine
    records before the step is the hand loss at the hand-drawn start of the
    chosen restart; each restart's final loss is the smaller of that and the
    loss after one hand step (Adam's first step is ``-lr g / (|g| + eps)``,
    on ``sign(g)`` when signed), projected into [0, 1] with ``box``. The
    labels are the known ones, the iDLG rule's on the observation divided by
    the learning-rate guess, or the argmax of the learned logits.

    Catches: an init mode's distribution or key, soft labels not softmaxed,
    the wrong labels (known / inferred), the scale (``k_init``, its log
    form, not learned), another objective, the prior's weight or sign, the
    box not applied to the start, the guess not dividing the observation,
    the unrolled update's steps, sign or learning rate (one unrolled step is
    ``lr g``, not the gradient: ``unroll_steps > 1``), the best restart."""
    model, params, obs, y = setup
    cfg = CASES[case]
    restarts = cfg.get("restarts", 1)
    kw = {k: v for k, v in cfg.items() if k != "restarts"}
    attack = leakage.gradient_matching(model, batch_size=B, optimizer="adam",
                                       learning_rate=0.05, num_steps=1, restarts=restarts, **kw)
    key = jax.random.PRNGKey(11)
    known = jnp.array([5, 0])  # not the victims' labels, nor what iDLG's rule infers
    rec = jax.jit(attack.reconstruct)(params, obs, key, known)

    guessed = obs if cfg.get("assumed_lr") is None else jax.tree_util.tree_map(
        lambda o: o / cfg["assumed_lr"], obs)
    fixed = {"known": known, "learn": jnp.zeros(B, jnp.int32),
             "idlg": leakage.infer_labels(guessed, C, B, 1.0)}[cfg.get("label", "learn")]
    loss = lambda v: _loss(model, params, obs, v, cfg, fixed)  # noqa: E731

    @jax.jit
    def hand_step(k):
        v0 = _init(k, cfg)
        l0, g = jax.value_and_grad(loss)(v0)
        if cfg.get("signed"):
            g = jax.tree_util.tree_map(jnp.sign, g)
        v1 = jax.tree_util.tree_map(lambda p, d: p - 0.05 * d / (jnp.abs(d) + 1e-8), v0, g)
        if cfg.get("box"):
            v1 = {**v1, "x": jnp.clip(v1["x"], 0.0, 1.0)}
        return l0, loss(v1), v0, v1

    starts, finals, ends = [], [], []
    for k in jax.random.split(key, restarts):
        l0, l1, v0, v1 = hand_step(k)
        starts.append(float(l0))
        finals.append(min(float(l0), float(l1)))
        ends.append(v1 if l1 < l0 else v0)
    np.testing.assert_allclose(np.asarray(rec.restart_losses), finals, rtol=2e-4)
    best = int(np.argmin(finals))
    assert float(rec.losses[0]) == pytest.approx(starts[best], rel=2e-5)
    np.testing.assert_allclose(np.asarray(rec.x), np.clip(np.asarray(ends[best]["x"]), 0, 1),
                               atol=2e-5)
    if cfg.get("label", "learn") == "learn":
        np.testing.assert_array_equal(np.asarray(rec.labels), np.argmax(ends[best]["y"], -1))
    else:
        np.testing.assert_array_equal(np.asarray(rec.labels), np.asarray(fixed))
    if cfg.get("learn_scale"):
        end_k = ends[best]["k"]
        want_k = cfg["k_init"] * np.exp(end_k) if cfg.get("scale_param") == "log" else end_k
        assert float(rec.k) == pytest.approx(float(want_k), rel=1e-5)
    else:
        assert float(rec.k) == 1.0


PAPERS = {
    # name -> the settings its factory passes to gradient_matching by default
    "dlg": dict(name="dlg", batch_size=1, objective="l2", label="learn", optimizer="lbfgs",
                learning_rate=0.1, num_steps=300, restarts=1, assumed_lr=None),
    "idlg": dict(name="idlg", batch_size=1, objective="l2", label="idlg", optimizer="lbfgs",
                 learning_rate=0.1, num_steps=300, restarts=1, label_sign=1.0),
    "inverting_gradients": dict(name="inverting_gradients", batch_size=1, objective="cosine",
                                label="idlg", optimizer="adam", learning_rate=0.1,
                                num_steps=2000, restarts=1, tv=1e-2, box=True, signed=True,
                                decay=True, unroll_steps=0, unroll_lr=0.1, init="randn"),
    "dlm": dict(name="dlm", batch_size=1, objective="scaled_l2", label="learn",
                optimizer="adam", learning_rate=0.1, num_steps=2000, restarts=1,
                learn_scale=True, k_init=1.0),
    "dlm_plus": dict(name="dlm_plus", batch_size=1, objective="mean_norm_l2", label="learn",
                     optimizer="adam", learning_rate=0.1, num_steps=2000, restarts=1),
}


@pytest.mark.parametrize("name", list(PAPERS))
def test_each_attack_passes_its_papers_settings(monkeypatch, name):
    """``get_attack(name)`` builds the engine with the paper's objective,
    labels, optimizer and schedule (docs/leakage.md's table), and passes
    extra keywords and a changed name through. Catches: a factory's
    objective, label rule, optimizer, box / sign / decay flags or defaults
    changed; the registry's names."""
    import importlib

    module = importlib.import_module(leakage.ATTACKS[name].__module__)
    seen = {}

    def spy(model, **kwargs):
        seen.update(kwargs)
        return "built"

    monkeypatch.setattr(module, "gradient_matching", spy)
    assert leakage.get_attack(name, None) == "built"
    assert seen == PAPERS[name]
    seen.clear()
    leakage.ATTACKS[name](None, name="mine", memory_size=7, restarts=3)
    assert seen["name"] == "mine" and seen["restarts"] == 3 and seen["memory_size"] == 7
    if name != "idlg":  # iDLG's labels are its rule's
        seen.clear()
        leakage.ATTACKS[name](None, label="known")
        assert seen["label"] == "known"


def test_gradient_matching_defaults(monkeypatch):
    """The engine's documented defaults (its docstring and docs/leakage.md):
    one image, L2, learned labels, Adam at 0.1 for 1,000 steps (L-BFGS: 20
    pairs, 10 line-search evaluations), one restart, no prior, box, sign,
    decay or scale, ``k_init`` 1 (linear), no learning-rate guess, N(0, 1)
    images, no unrolling (0.1 if on), iDLG sign +1. The optimizer is built
    from them. Catches: any default changed."""
    import inspect

    from fljax.attacks.leakage import base

    want = dict(name="gradient_matching", batch_size=1, objective="l2", label="learn",
                optimizer="adam", learning_rate=0.1, num_steps=1000, restarts=1, tv=0.0,
                box=False, signed=False, decay=False, learn_scale=False, k_init=1.0,
                scale_param="linear", assumed_lr=None, init="randn", unroll_steps=0,
                unroll_lr=0.1, label_sign=1.0, memory_size=20, linesearch_steps=10)
    assert leakage.ATTACKS["gradient_matching"] is base.gradient_matching  # the CLI's name
    assert set(leakage.ATTACKS) == set(PAPERS) | {"gradient_matching"}
    params = inspect.signature(base.gradient_matching).parameters
    assert {k: p.default for k, p in params.items() if k != "model"} == want
    seen = []
    monkeypatch.setattr(base, "make_optimizer", lambda *a, **kw: seen.append((a, kw)))
    attack = base.gradient_matching(mlp((8, 8, 1), C, hidden=(4,)))
    assert attack.name == "gradient_matching" and attack.batch_size == 1
    assert seen == [(("adam", 0.1, 1000), dict(signed=False, decay=False, memory_size=20,
                                               linesearch_steps=10))]


def test_reconstruct_many_is_each_victim_alone(setup):
    """``reconstruct_many`` over three victims (their own observations, keys
    and labels; shared weights) equals ``reconstruct`` on each. Catches:
    the keys or labels mapped over another axis, the weights mapped."""
    model, params, obs, y = setup
    attack = leakage.gradient_matching(model, batch_size=B, label="known", num_steps=2)
    many_obs = jax.tree_util.tree_map(lambda o: jnp.stack([o, 2 * o, -o]), obs)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    labels = jnp.array([[1, 2], [3, 4], [5, 6]])
    many = leakage.reconstruct_many(attack)(params, many_obs, keys, labels)
    one = jax.jit(attack.reconstruct)
    for v in range(3):
        alone = one(params, jax.tree_util.tree_map(lambda o: o[v], many_obs), keys[v], labels[v])
        np.testing.assert_allclose(np.asarray(many.x[v]), np.asarray(alone.x), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(many.labels[v]), np.asarray(labels[v]))

