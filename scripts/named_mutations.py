"""Issue 17's named mutations: apply one deliberate bug, run the test meant to
catch it, restore the file, say whether it was caught.

    python scripts/named_mutations.py 1 2 3

1: a resume that restores only the parameters and the round (the server
   optimizer's and the rule's state re-initialised);
2: the loss divided by the batch size instead of the number of real examples;
3: the malicious mask indexed with ``[:K]`` instead of the sampled ids.

Run it from the repository root on a clean tree (it edits fljax/ in place and
restores it); niced, one at a time, like the mutation runs (docs/testing.md).
"""
import os
import subprocess
import sys
ITEMS = {
 "1": ("fljax/simulate.py",
       '        return state, meta.get("carry"), float(meta.get("elapsed", 0.0))',
       '        fresh = comp.round.init(plan.hparams, plan.data, k_init)\n'
       '        state = state._replace(opt_state=fresh.opt_state, agg_state=fresh.agg_state)\n'
       '        return state, meta.get("carry"), float(meta.get("elapsed", 0.0))',
       ["tests/simulate_test.py::test_resume_is_exact"]),
 "2": ("fljax/client.py",
       "return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)",
       "return jnp.sum(ce * m) / m.size",
       ["tests/simulate_test.py::test_round_matches_independent_reference[uneven-padded]"]),
 "3": ("fljax/round.py",
       "        malicious = acting[ids]  # bool[K]",
       "        malicious = acting[:k]  # bool[K]",
       ["tests/simulate_test.py::test_attack_changes_exactly_the_sampled_malicious_rows"]),
}


def check(item: str) -> bool:
    path, old, new, tests = ITEMS[item]
    src = open(path).read()
    assert src.count(old) == 1, (item, src.count(old))
    open(path, "w").write(src.replace(old, new))
    try:
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   JAX_COMPILATION_CACHE_DIR="/tmp/fljax-mutation-jax-cache",
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        rc = subprocess.call([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                              "--no-header", *tests], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    finally:
        open(path, "w").write(src)
    print(f"item {item}: {'caught' if rc else 'NOT CAUGHT'} by {' '.join(tests)}")
    return rc != 0


if __name__ == "__main__":
    sys.exit(0 if all([check(i) for i in sys.argv[1:] or sorted(ITEMS)]) else 1)
