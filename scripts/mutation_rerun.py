"""Re-runs chosen mutmut mutants without mutmut's baseline run.

``mutmut run ID`` first runs the whole unmutated selection (40-80 s for the
round's); after adding tests, re-checking a list of survivors that way costs
more than the mutants themselves. This applies each mutant (``mutmut
apply``), runs ``mutmut_config.py`` on the selection for the mutated line,
restores the module with ``git checkout`` and prints one line per mutant.
It does not update mutmut's cache: ``mutmut results`` still lists them as
survivors.

Run it from the repository root of a scratch worktree (it edits the module
in place; never in the checkout you work in, never beside a running
``mutmut run`` on the same tree)::

    python scripts/mutation_rerun.py fljax/round.py 40 71 81
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.getcwd())
import mutmut_config  # noqa: E402


def main(module: str, ids: list[str]) -> None:
    mutmut = os.path.join(os.path.dirname(sys.executable), "mutmut")
    for i in ids:
        subprocess.run([mutmut, "apply", i], check=True, capture_output=True)
        diff = subprocess.run(["git", "diff", "-U0", module], capture_output=True,
                              text=True).stdout
        hunk = next(l for l in diff.splitlines() if l.startswith("@@"))
        line = int(hunk.split("+")[1].split(",")[0].split(" ")[0])
        key = mutmut_config._selection(module, line)
        start = time.time()
        rc = subprocess.run([sys.executable, "mutmut_config.py", key],
                            capture_output=True).returncode
        subprocess.run(["git", "checkout", "-q", module], check=True)
        verdict = "killed" if rc == 1 else "SURVIVED"
        print(f"{i} line {line} {verdict} {time.time() - start:.0f}s selection={key}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
