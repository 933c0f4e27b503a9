"""Peak memory per rank of a distributed run against one process (issue: the per-rank peak must fall as
ranks are added, because each rank holds only its shard of the counts).

Simulated counts (``scsc.simulate``, planted types) are written to an .h5ad file; then for each number of
ranks W one whole ``scsc cluster DATA --n-clusters K --distributed`` runs (W = 1: a plain process; W > 1:
``torchrun --nproc-per-node W``), each rank under ``benchmarks/peak_rss.py``, which records its own peak RSS.

    python -m benchmarks.ranks --cells 200000 --ranks 1 2 4 --out benchmarks/results/ranks.csv

Threads: the machine's cores divided among the ranks (at least one each). Extra ``--set`` options go to every
run (for example shorter schedules: the peak is reached in the clustering stage and does not depend on the
number of epochs). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def run_ranks(data: Path, world: int, k: int, sets: list[str], work: Path, timeout: float) -> dict:
    """One run on ``world`` ranks → seconds, peak RSS per rank (GB), ARI against the planted types."""
    folder = work / f"w{world}"
    rss = folder / "rss"
    rss.mkdir(parents=True, exist_ok=True)
    args = [
        "scsc",
        "cluster",
        str(data),
        "--out",
        str(folder / "run"),
        "--n-clusters",
        str(k),
        "--no-plots",
        "-q",
        "--distributed",
        *[x for s in sets for x in ("--set", s)],
    ]
    launch = (
        [sys.executable]
        if world == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
    )
    threads = max(1, (os.cpu_count() or 1) // world)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*launch, str(HERE / "peak_rss.py"), str(rss), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ranks": world, "seconds": seconds, "error": proc.stderr[-2000:]}
    peaks = [float((rss / f"rank{r}.txt").read_text()) for r in range(world)]
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    return {
        "ranks": world,
        "threads_per_rank": threads,
        "seconds": round(seconds, 1),
        "peak_gb_max": round(max(peaks), 3),
        "peak_gb_mean": round(sum(peaks) / world, 3),
        "peak_gb_per_rank": " ".join(f"{p:.2f}" for p in peaks),
        "ari": metrics.get("scsc", {}).get("ari"),
    }


def main(argv: list[str] | None = None) -> None:
    import scsc

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--types", type=int, default=10)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ranks.csv")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / f"sim{a.cells}.h5ad"
        scsc.write_h5ad(scsc.simulate(n_cells=a.cells, n_types=a.types, seed=0).to_anndata(), data)
        rows = []
        for world in a.ranks:
            rows.append(run_ranks(data, world, a.types, a.sets, work, a.timeout))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    base = df.loc[df.ranks == min(a.ranks), "peak_gb_max"].iloc[0] if "peak_gb_max" in df else float("nan")
    if "peak_gb_max" in df:
        df["fall_vs_fewest"] = (base / df["peak_gb_max"]).round(2)
    df.insert(0, "cells", a.cells)
    df["sets"] = " ".join(a.sets)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out, index=False)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
