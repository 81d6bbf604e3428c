"""Reproduction 1: deep leakage from *weights* with an unknown learning rate.

Run:
  fljax leak configs/dlm_digits.py --out results/dlm_digits
  # or: python -c "from fljax import config, leak; leak.run(config.resolve(
  #       leak.DEFAULTS, config.load_file('configs/dlm_digits.py')), 'results/dlm_digits')"

Setup (Zhao, Luo, Ding, arXiv 2206.04887, on scikit-learn's digits): 16
victims, batch 1, each runs 1 or 5 full-batch SGD steps with lr 0.1 on its one
image from the same uniform(-0.5, 0.5) model and uploads its weights; the
server sees ``dW = W0 - W_T`` and does not know the learning rate. Models: a
sigmoid MLP (64 -> 32 -> 10) attacked with Adam, and a sigmoid LeNet-5 (8x8
padded to 32x32) attacked with L-BFGS (the paper's choices). Attacks:

* DLG with a wrong learning-rate guess (``g = dW / lr_guess`` with
  lr_guess = 1, i.e. treating the weight difference as a gradient, and
  lr_guess = 0.05, half the true value), and DLG with the right one (oracle);
* DLM (learned scale k from a guess k_init = 20, twice the true 1/lr = 10);
* DLM+ (per-side mean-layer-norm normalisation; no learning rate needed).

Expected (docs/leakage.md has the measured table): DLM+ recovers the digits
(PSNR far above the grey and mean-image baselines, ~11-12 dB) for one step and
still well above them after 5 steps; DLM's k converges to ~1/lr = 10 for one
step; DLG degrades with the wrong guess. About 10 minutes on a 2-core CPU.
"""

LR = 0.1
MLP = {"name": "mlp", "kwargs": {"hidden": [32], "activation": "sigmoid"}}
LENET = {"name": "lenet5", "kwargs": {"activation": "sigmoid"}}


def _attacks(optimizer, steps):
    common = {"optimizer": optimizer, "num_steps": steps}
    if optimizer == "adam":
        dlg_common = {"optimizer": "lbfgs", "num_steps": steps // 20}
    else:
        dlg_common = dict(common)
    return [
        ("DLG lr_guess=1", "dlg", {**dlg_common, "assumed_lr": 1.0}),
        ("DLG lr_guess=0.05", "dlg", {**dlg_common, "assumed_lr": 0.05}),
        ("DLG lr known", "dlg", {**dlg_common, "assumed_lr": LR}),
        ("DLM", "dlm", {**common, "k_init": 2.0 / LR}),
        ("DLM+", "dlm_plus", {**common}),
    ]


def get_config():
    runs = []
    for model, tag, optimizer, steps in ((MLP, "MLP", "adam", 2000),
                                         (LENET, "LeNet", "lbfgs", 100)):
        for local_steps in (1, 5):
            for label, attack, kwargs in _attacks(optimizer, steps):
                runs.append({
                    "name": f"{tag} T={local_steps} {label}",
                    "model": model,
                    "victim": {"observe": "delta", "lr": LR, "local_steps": local_steps},
                    "attack": {"name": attack, "kwargs": {**kwargs, "restarts": 2}},
                })
    return {
        "seed": 0,
        "data": {"name": "digits", "num_victims": 16, "batch_size": 1},
        "runs": runs,
        "grid": {"max_images": 16},
    }
