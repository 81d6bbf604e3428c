"""Inverting Gradients against FedAvg weight updates (unrolled local steps) vs DLM+.

Run:
  fljax leak configs/ig_fedavg_digits.py --out results/ig_fedavg_digits

Setup: the sigmoid MLP of ``configs/dlm_digits.py``, 16 digits victims,
batch 1, T = 5 or 20 full-batch SGD steps with lr 0.1 on the victim's image.
DLM+ does not know lr or T and matches ``dW`` to one gradient at ``W0``;
Inverting Gradients (cosine + TV 1e-4, signed Adam 0.1 with step decay, box
[0, 1], iDLG label) *knows* lr and T and unrolls them on the dummy image.

Expected (docs/leakage.md): unrolling holds up better as T grows.
A few minutes on a 2-core CPU.
"""

LR = 0.1
MODEL = {"name": "mlp", "kwargs": {"hidden": [32], "activation": "sigmoid"}}


def get_config():
    runs = []
    for t in (5, 20):
        victim = {"observe": "delta", "lr": LR, "local_steps": t}
        runs.append({"name": f"MLP T={t} DLM+", "victim": victim,
                     "attack": {"name": "dlm_plus",
                                "kwargs": {"num_steps": 2000, "restarts": 2}}})
        runs.append({"name": f"MLP T={t} IG unrolled (lr, T known)", "victim": victim,
                     "attack": {"name": "inverting_gradients",
                                "kwargs": {"num_steps": 2000, "restarts": 2, "tv": 1e-4,
                                           "unroll_steps": t, "unroll_lr": LR}}})
    return {"seed": 0, "data": {"name": "digits", "num_victims": 16, "batch_size": 1},
            "model": MODEL, "runs": runs}
