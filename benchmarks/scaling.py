"""How scsc's time and memory grow with the number of cells, against the scanpy Leiden pipeline (same run).

For each size N, simulated counts (``scsc simulate``: negative binomial, planted types) are written to an
.h5 file; then both whole commands run in fresh processes under ``/usr/bin/time -v``:

- ``scsc cluster DATA --n-clusters K`` (default config, pretraining included), with its per-stage seconds
  read back from ``result.h5ad`` (``uns["scsc"]["timings"]``);
- the scanpy pipeline of ``peers.py`` (normalise, log1p, 2000 HVG, scale, 50 PCs, 15-NN, Leiden,
  UMAP).

    python -m benchmarks.scaling --sizes 2000 10000 30000 100000 --out benchmarks/results/scaling.csv

Run it with nothing else on the machine. Growth exponents (slope of log time and log peak RSS against log N
between consecutive sizes, and from the second size to the last) are printed and written beside the CSV;
``benchmarks/report.py --scaling`` puts them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def measure(cmd: list[str], timeout: float) -> dict:
    """Wall seconds and peak RSS (GB) of ``cmd`` in a fresh process; ``error`` when it fails or times out."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {
            "seconds": time.perf_counter() - t0,
            "peak_gb": np.nan,
            "error": f"timeout after {timeout:.0f} s",
        }
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    row = {"seconds": wall, "peak_gb": int(rss.group(1)) / 1024**2 if rss else np.nan}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    return row


def stage_seconds(result: Path) -> dict:
    """Per-stage seconds stored by ``scsc cluster`` in ``result.h5ad``."""
    import anndata as ad

    if not result.exists():
        return {}
    timings = ad.read_h5ad(result, backed="r").uns["scsc"]["timings"]
    return {f"stage_{k}": float(v) for k, v in timings.items()}


def resample(source: Path, n: int, out: Path, seed: int = 0) -> None:
    """``n`` cells drawn with replacement from a real data set, each with noise, written as .h5ad with labels.

    Every drawn cell keeps its non-zero genes; their counts are redrawn as Poisson(count · g) with a per-cell
    library factor g ~ Gamma(10, 1/10), so no two copies of a cell are equal and the data stay sparse.
    """
    import anndata as ad
    import scipy.sparse as sp

    import scsc

    real = scsc.read(source)
    x = sp.csr_matrix(real.X)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, real.n_obs, size=n)
    rows = x[pick]
    factor = rng.gamma(10.0, 0.1, size=n)
    rows.data = rng.poisson(rows.data * np.repeat(factor, np.diff(rows.indptr))).astype(np.float32)
    rows.eliminate_zeros()
    a = ad.AnnData(X=rows, var=real.var[[]].copy())
    a.obs_names = [f"c{i}" for i in range(n)]
    if "label" in real.obs:
        a.obs["label"] = real.obs["label"].to_numpy()[pick].astype(str)
    a.write_h5ad(out)


def batch_info(result: Path) -> dict:
    """Batch size and the share of kNN edges inside a batch, and ARI against the planted types."""
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    if not result.exists():
        return {}
    a = ad.read_h5ad(result, backed="r")
    info = dict(a.uns["scsc"].get("minibatch", {}))
    out = {"batch_size": info.get("batch_size", 0), "edges_in_batch": info.get("edges_in_batch", np.nan)}
    if "label" in a.obs:
        out["ari"] = adjusted_rand_score(a.obs["label"].to_numpy(), a.obs["scsc_cluster"].to_numpy())
    return out


def exponents(df: pd.DataFrame) -> pd.DataFrame:
    """Slopes of log(seconds) and log(peak_gb) against log(cells) per command, consecutive and overall."""
    rows = []
    df = df.assign(data=df["data"].fillna("simulated") if "data" in df else "simulated")
    for (command, source), part in df.dropna(subset=["seconds"]).groupby(["command", "data"]):
        part = part[part["error"].isna()] if "error" in part else part
        part = part.sort_values("cells")
        n = part["cells"].to_numpy(float)
        spans = [(i, i + 1) for i in range(len(n) - 1)]
        # From the second size to each later one beyond the next (10k → 100k is the target span).
        spans += [(1, j) for j in range(3, len(n))]
        for i, j in spans:
            ln = np.log(n[j] / n[i])
            rows.append(
                {
                    "command": command,
                    "data": source,
                    "from_cells": int(n[i]),
                    "to_cells": int(n[j]),
                    "time_exponent": np.log(part["seconds"].iloc[j] / part["seconds"].iloc[i]) / ln,
                    "memory_exponent": np.log(part["peak_gb"].iloc[j] / part["peak_gb"].iloc[i]) / ln,
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 10000, 30000, 100000])
    ap.add_argument("--types", type=int, default=10, help="planted cell types (the K given to scsc)")
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument(
        "--depth",
        type=float,
        default=1.0,
        help="library-size scale of the simulation (1.0: ~70%% zeros, 0.1: ~94%% as in droplet data)",
    )
    ap.add_argument("--no-scanpy", action="store_true", help="time scsc only (e.g. at a million cells)")
    ap.add_argument(
        "--resample",
        type=Path,
        help="instead of simulating, draw cells with noise from this real "
        "data set (its number of labels is the K given to scsc)",
    )
    ap.add_argument("--append", action="store_true", help="add rows to --out instead of replacing it")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per command")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for scsc")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.csv"))
    args = ap.parse_args()
    scsc_bin = str(Path(sys.executable).with_name("scsc"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"sim_{n}.h5ad"
            t0 = time.perf_counter()
            if args.resample:
                resample(args.resample, n, data)
            else:
                subprocess.run(
                    [
                        scsc_bin,
                        "simulate",
                        str(data),
                        "--cells",
                        str(n),
                        "--types",
                        str(args.types),
                        "--genes",
                        str(args.genes),
                        "--depth",
                        str(args.depth),
                        "--seed",
                        "0",
                    ],
                    check=True,
                    capture_output=True,
                )
            print(f"made {n:,} cells in {time.perf_counter() - t0:.0f} s", flush=True)
            run_dir = Path(tmp) / f"run_{n}"
            k = args.types
            if args.resample:
                import scsc

                k = scsc.read(args.resample).obs["label"].nunique()
            cmd = [scsc_bin, "cluster", str(data), "--n-clusters", str(k), "--out", str(run_dir), "-q"]
            for s in args.sets:
                cmd += ["--set", s]
            r = measure(cmd, args.timeout)
            source = f"resampled {args.resample.stem}" if args.resample else "simulated"
            rows.append(
                {
                    "cells": n,
                    "command": "scsc cluster",
                    "data": source,
                    "depth": args.depth,
                    **r,
                    **stage_seconds(run_dir / "result.h5ad"),
                    **batch_info(run_dir / "result.h5ad"),
                }
            )
            print(rows[-1], flush=True)
            if not args.no_scanpy:
                r = measure([sys.executable, "-m", "benchmarks.peers", str(data)], args.timeout)
                rows.append(
                    {
                        "cells": n,
                        "command": "scanpy Leiden pipeline (+UMAP)",
                        "data": source,
                        "depth": args.depth,
                        **r,
                    }
                )
                print(rows[-1], flush=True)
            df = pd.DataFrame(rows)
            if args.append and args.out.exists():
                df = pd.concat([pd.read_csv(args.out), df], ignore_index=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.out, index=False)
    exp = exponents(df)
    exp.to_csv(args.out.with_name(args.out.stem + "_exponents.csv"), index=False)
    print(df.round(2).to_string(index=False))
    print(exp.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
