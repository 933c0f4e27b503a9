"""The same `scsc cluster` run alone and beside a second one, under two OpenMP wait policies.

For each policy — libgomp's default spinning (``GOMP_SPINCOUNT=300000``) and scsc's own (the value
scsc/threads.py sets on import) — the run is timed alone, then twice at once on the same cores. Labels and
embeddings are compared with the run alone: they must be equal whatever the load.

    python -m benchmarks.under_load [--data ../shared/tuning/Zheng_sortedPBMC_MUDAN.h5] [--k 9]
        [--out benchmarks/results/under_load.csv]

Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "tuning" / "Zheng_sortedPBMC_MUDAN.h5"
POLICIES = {"libgomp default (300,000 spins)": {"GOMP_SPINCOUNT": "300000"}, "scsc (3,000 spins)": {}}


def _start(data: Path, k: int, out: Path, env: dict) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "scsc",
        "cluster",
        str(data),
        "-k",
        str(k),
        "--out",
        str(out),
        "--seed",
        "0",
        "--no-plots",
        "-q",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"scsc cluster failed:\n{err}")


def _result(out: Path) -> tuple[np.ndarray, np.ndarray]:
    import anndata as ad

    a = ad.read_h5ad(out / "result.h5ad")
    return a.obs["scsc_cluster"].astype(str).to_numpy(), np.asarray(a.obsm["X_scsc"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "under_load.csv")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = None
        for policy, extra in POLICIES.items():
            env = {**base, **extra}
            for run, n in (("alone", 1), ("two at once", 2)):
                outs = [tmp / f"{len(rows)}_{i}" for i in range(n)]
                t0 = time.perf_counter()
                _wait([_start(args.data, args.k, o, env) for o in outs])
                secs = time.perf_counter() - t0
                results = [_result(o) for o in outs]
                ref = ref or results[0]
                rows.append(
                    {
                        "policy": policy,
                        "run": run,
                        "seconds": secs,
                        "same_labels": all(np.array_equal(lab, ref[0]) for lab, _ in results),
                        "same_embedding": all(np.array_equal(emb, ref[1]) for _, emb in results),
                    }
                )
                print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
