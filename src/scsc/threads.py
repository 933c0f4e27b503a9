"""How idle OpenMP threads wait: a short spin, then sleep, so that scsc shares busy cores gracefully.

GNU OpenMP (torch's and scikit-learn's ``libgomp``) lets an idle worker spin for 300,000 iterations before it
sleeps. A training epoch is thousands of short parallel regions, so two processes on the same cores spend their
time spinning against each other: a 2,140-cell run that takes 16 s alone took 199 s beside a second one on two
cores. With 3,000 spins it took 18 s alone and 40 s beside another (measured in docs/benchmarks.md, "Under
load"); ``OMP_WAIT_POLICY=passive`` (no spin) took 28 s alone.

The setting only changes when threads wait, never what they compute: labels and embeddings are the same
(tests/test_determinism.py). It must be in the environment before the OpenMP runtime starts, that is before
torch is imported, so :mod:`scsc` applies it on import; a value the user set (``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY``) is kept, and a process that imported torch before scsc keeps its runtime's setting.

The number of threads is not adapted to the load: results depend on it (floating-point sums are split per
thread), and the same seed must give the same labels whatever else runs on the machine.
"""

from __future__ import annotations

import os

#: Spins before an idle OpenMP thread sleeps (libgomp's default: 300,000).
SPIN_COUNT = 3000


def apply_wait_policy(environ: dict | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a wait policy; True when it was set here."""
    env = os.environ if environ is None else environ
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return False
    env["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True
