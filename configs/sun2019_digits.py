"""Sun et al. (2019), "Can You Really Backdoor Federated Learning?", on digits.

A few attackers (a fraction epsilon of 100 clients, sampled like everyone: 10 per round) want
every 7 classified as 1 (a targeted task: benign clients hold correctly labelled 7s). Half of each
of their local batches are 7s labelled 1, and they boost what they send by the clients per round
over the server learning rate (model replacement, gamma = 10). The server averages (FedAvg), or
clips every update to a norm bound M, or clips and adds Gaussian noise (weak DP). Benign update
norms here fall from ~0.4 to ~0.2 over the 100 rounds, so M = 0.3 is "near the benign norm".
The same grid without attackers (epsilon = 0) is the baseline for main accuracy.

Run:
  fljax run configs/sun2019_digits.py                      # one cell: epsilon = 3 %, plain mean
  fljax sweep configs/sun2019_digits.py --out runs/sun2019_digits   # the grid below (84 cells)
  python docs/backdoor_report.py runs/sun2019_digits --img sun2019_digits.png   # tables, curves

Expected (docs/backdoors.md has the tables and curves; 3 seeds): undefended, the test 7s become
1s in the rounds an attacker is sampled (backdoor accuracy after attacked rounds 0.29 / 0.58 /
0.65 at epsilon = 1 / 3 / 5 %) and heal in between (0.06 / 0.22 / 0.39 averaged over the second
half). Clipping at M = 0.3 removes it (<= 0.006) at ~1 point of main accuracy (0.94 against
0.95); M = 1.0 cuts it by ~84 %. Weak DP adds nothing beyond clipping at these noise levels, and
noise on the average costs ~4 points. The grid is 84 cells in 4 compiled programs: ~1.5 minutes
on an idle 2-core machine (259 s under a load average of 12).

The real data (federated EMNIST by writer, Sun et al.'s CNN, 30 clients per round):
configs/sun2019_emnist.py.
"""

RULES = [
    {"name": "mean"},
    {"name": "norm_clipping", "kwargs": {"max_norm": 0.1}},
    {"name": "norm_clipping", "kwargs": {"max_norm": 0.3}},
    {"name": "norm_clipping", "kwargs": {"max_norm": 1.0}},
    # Weak DP at the loose bound, where clipping alone leaves some backdoor for noise to remove.
    # TFF's placement (Sun et al.'s code): N(0, sigma^2) on the sum of the clipped updates.
    {"name": "weak_dp", "kwargs": {"max_norm": 1.0, "sigma": 0.025, "placement": "sum"}},
    {"name": "weak_dp", "kwargs": {"max_norm": 1.0, "sigma": 0.005, "placement": "sum"}},
    # The edge-case code's and BackFed's placement: N(0, sigma^2) on the average.
    {"name": "weak_dp", "kwargs": {"max_norm": 1.0, "sigma": 0.025, "placement": "average"}},
]


def get_config():
    return {
        "seed": 0,
        "rounds": 100,
        "eval_every": 2,
        "clients_per_round": 10,
        "data": {"name": "digits", "num_clients": 100, "partition": "dirichlet",
                 "partition_kwargs": {"alpha": 1.0}},
        "model": {"name": "mlp", "kwargs": {"hidden": [64]}},
        # Sun et al.: 5 local epochs of batch 20, SGD 0.1; server SGD 1.0.
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 20, "epochs": 5},
        "server": {"optimizer": "sgd", "learning_rate": 1.0},
        "aggregator": {"name": "mean"},
        "attack": {
            "name": "targeted_task",
            "kwargs": {"source": 7, "target": 1, "writers": 0, "poison_fraction": 0.5},
            # gamma = clients per round / server learning rate (the default)
            "combine": [{"name": "model_replacement"}],
            "num_malicious": 3,  # epsilon = 3 % of 100 clients
        },
    }


def get_sweep():
    # epsilon = 0, 1, 3, 5 % attackers. epsilon = 0 is the no-attack baseline: the same program
    # with nobody poisoning (bit for bit a clean round, tested), which also gives the backdoor
    # metric's floor (how many test 7s a clean model calls 1).
    return {"attack.num_malicious": [0, 1, 3, 5], "aggregator": RULES, "seed": [0, 1, 2]}
