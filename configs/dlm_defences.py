"""Reproduction 2: client-side defences against DLM+ (and DLG), leakage side.

Run:
  fljax leak configs/dlm_defences.py --out results/dlm_defences
  python benchmarks/leakage_defences.py --leak results/dlm_defences \
      --out results/dlm_defences   # adds the FL-training accuracy of each defence

Setup: the sigmoid MLP of ``configs/dlm_digits.py`` (uniform(-0.5, 0.5) init),
16 digits victims, batch 1, one local SGD step with lr 0.1 (unknown to the
attacker); each victim's weight difference goes through one defence before
the server sees it. DLM+ (Adam, 2000 steps, 2 restarts, learned labels)
attacks every setting. Defences (fljax.transforms, the DLM paper's family):

* ``row_noise``: Gaussian or Laplace noise of scale s after the per-row norm
  factor with threshold 0.2 (``defense.py::dp_defense``), s in 1e-4 .. 1e-1;
* ``prune``: zero the p % smallest-magnitude entries of every tensor,
  p in 0 .. 90;
* ``quantize``: 16 (fp16), 8, 4 and 2 bits per tensor.

For the DLG literature's pruning claim (> 20 % stops DLG) the same pruning
sweep is also run with DLG (L-BFGS) against the victims' *gradients*.

Expected: see docs/leakage.md for the measured curves (where DLM+ falls to
the baselines). About 15 minutes on a 2-core CPU.
"""

LR = 0.1
MODEL = {"name": "mlp", "kwargs": {"hidden": [32], "activation": "sigmoid"}}
DLM_PLUS = {"name": "dlm_plus", "kwargs": {"num_steps": 2000, "restarts": 2}}
DLG = {"name": "dlg", "kwargs": {"optimizer": "lbfgs", "num_steps": 100, "restarts": 2}}

NOISE_SCALES = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
PRUNE_PERCENTS = [10.0, 20.0, 30.0, 50.0, 70.0, 90.0]
QUANT_BITS = [16, 8, 4, 2]


def defence_grid():
    """(label, family, strength, defences) for every defence setting (strength 0 first)."""
    grid = [("none", "none", 0.0, [])]
    for dist in ("gaussian", "laplace"):
        for s in NOISE_SCALES:
            grid.append((f"{dist} s={s:g}", f"row_noise_{dist}", s,
                         [{"name": "row_noise",
                           "kwargs": {"scale": s, "distribution": dist, "clip": 0.2}}]))
    for p in PRUNE_PERCENTS:
        grid.append((f"prune {p:g}%", "prune", p,
                     [{"name": "prune", "kwargs": {"percent": p}}]))
    for b in QUANT_BITS:
        grid.append((f"quantize {b} bits", "quantize", float(b),
                     [{"name": "quantize", "kwargs": {"bits": b}}]))
    return grid


def get_config():
    runs = []
    for label, _, _, defences in defence_grid():
        runs.append({"name": f"DLM+ | {label}", "defences": defences,
                     "victim": {"observe": "delta", "lr": LR, "local_steps": 1},
                     "attack": DLM_PLUS})
    for p in [0.0] + PRUNE_PERCENTS:
        runs.append({"name": f"DLG grad | prune {p:g}%",
                     "defences": [{"name": "prune", "kwargs": {"percent": p}}],
                     "victim": {"observe": "gradient"}, "attack": DLG})
    return {
        "seed": 0,
        "data": {"name": "digits", "num_victims": 16, "batch_size": 1},
        "model": MODEL,
        "runs": runs,
        "grid": {"max_images": 16},
    }
