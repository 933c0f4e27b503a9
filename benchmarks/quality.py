"""Quality and speed of scsc against peers on every shared dataset, computed in one run.

For each dataset: the standard scanpy pipeline (normalise, log1p, 2000 HVG, scale, 50 PCs, 15-NN graph)
with Leiden at the default resolution, Leiden with the resolution searched to give the true K, and KMeans
(true K) on 50 PCs; then ``scsc cluster`` with the default config for each seed (K = true number of types,
as for the peers, or estimated by scsc with ``--k estimated``). Each run happens in a fresh worker process so that its peak RSS is its own.

    python -m benchmarks.quality --collection tuning --seeds 0 1 2 3 4 --out benchmarks/results/quality_tuning.csv
    python -m benchmarks.quality --collection scoring --seeds 0 1 2 3 4 --out benchmarks/results/quality.csv
    python -m benchmarks.quality --k estimated ...    # scsc estimates K (peers: Leiden at its default)
    python -m benchmarks.quality --collection tuning --labels coarse ...   # lineage-level annotation, its K
    python -m benchmarks.quality --scvi ...    # scVI as a further peer (pip install -e '.[scvi]')

Choose defaults on ``--collection tuning`` only; ``scoring`` (../shared/datasets) reports the adopted choice.

``--jobs 3 --threads 1`` runs three single-threaded workers at once (quality figures are unchanged; their
seconds then include sharing the cores). Writes the CSV and prints a markdown table; ``benchmarks/report.py``
turns CSVs into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.peers import leiden_at_k, leiden_default, standard_preprocess

SHARED = Path(__file__).resolve().parents[2] / "shared"
#: ``tuning``: where defaults are chosen; ``scoring``: where the adopted choice is reported (never chosen on).
COLLECTIONS = {"scoring": SHARED / "datasets", "tuning": SHARED / "tuning"}
DATA = COLLECTIONS["scoring"]


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _read(path: str, labels: str = "own"):
    """The dataset with its own annotation, or (``labels="coarse"``, tuning collection only) its lineage-level
    one (benchmarks/coarse_labels.py): labels only score the results and give the true K."""
    from scsc.data.io import read

    a = read(path)
    if labels == "coarse":
        from benchmarks.coarse_labels import coarse_labels

        a.obs["label"] = pd.Categorical(coarse_labels(Path(path).stem, a.obs["label"].to_numpy()))
    return a


def _baselines(path: str, labels: str = "own") -> list[dict]:
    from sklearn.cluster import KMeans

    from scsc.evaluate import score

    a = _read(path, labels)
    y = a.obs["label"].to_numpy()
    k = len(np.unique(y))
    t0 = time.perf_counter()
    a = standard_preprocess(a)
    t_prep = time.perf_counter() - t0
    rows = []
    t0 = time.perf_counter()
    labels = leiden_default(a)
    rows.append(
        {
            "method": "leiden_default",
            "seconds": t_prep + time.perf_counter() - t0,
            "k": len(np.unique(labels)),
            **score(y, labels),
        }
    )
    t0 = time.perf_counter()
    labels = leiden_at_k(a, k)
    rows.append(
        {
            "method": "leiden_true_k",
            "seconds": t_prep + time.perf_counter() - t0,
            "k": len(set(labels)),
            **score(y, labels),
        }
    )
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(a.obsm["X_pca"])
    rows.append(
        {
            "method": "kmeans_pca50",
            "seconds": t_prep + time.perf_counter() - t0,
            "k": k,
            **score(y, km.labels_),
        }
    )
    return [{**r, "true_k": k} for r in rows]


def _scvi(path: str, labels: str = "own", threads: int = 2) -> list[dict]:
    """scVI with its defaults (benchmarks/scvi_peer.py), the file's ``batch`` as the batch key where it has one."""
    from benchmarks.scvi_peer import scvi_rows

    a = _read(path, labels)
    y = a.obs["label"].to_numpy()
    rows = scvi_rows(a, y, "batch" if "batch" in a.obs else None, threads)
    return [{**r, "true_k": len(np.unique(y))} for r in rows]


def _scsc(
    path: str, seed: int, overrides: list[str], threads: int = 2, k_mode: str = "true", labels: str = "own"
) -> list[dict]:
    """scsc with the true K (``k_mode="true"``) or K estimated without labels (``"estimated"``)."""
    import torch

    import scsc
    from scsc.config import RunConfig

    torch.set_num_threads(threads)
    a = _read(path, labels)
    true_k = a.obs["label"].nunique()
    cfg = RunConfig().override(list(overrides))
    t0 = time.perf_counter()
    r = scsc.run(a, n_clusters=true_k if k_mode == "true" else None, config=cfg, seed=seed)
    secs = time.perf_counter() - t0
    mb = r.adata.uns["scsc"].get("minibatch", {})
    common = {"seed": seed, "k": r.n_clusters, "true_k": true_k, "k_mode": k_mode}
    if r.k_selection is not None:
        gap = r.k_selection.gap
        common |= {"k_clear": r.k_selection.clear, "k_gap": np.nan if gap is None else gap}
    return [
        {
            "method": "scsc",
            "seconds": secs,
            **common,
            **r.metrics["scsc"],
            **{f"stage_{k}": v for k, v in r.timings.items()},
            "cells": r.adata.n_obs,
            "batch_size": mb.get("batch_size", 0),
            "edges_in_batch": mb.get("edges_in_batch", np.nan),
        },
        {"method": "scsc_pretrain_kmeans", "seconds": np.nan, **common, **r.metrics["pretrain_kmeans"]},
    ]


def _task(fn, args) -> list[dict]:
    """Run ``fn(*args)`` and stamp every row with this process's peak RSS (a fresh process per task)."""
    try:
        rows = fn(*args)
    except Exception as exc:  # pragma: no cover  # noqa: BLE001 (a failing method is reported in the table)
        rows = [{"method": getattr(fn, "__name__", "?"), "error": repr(exc)}]
    peak = _peak_gb()
    for r in rows:
        r["peak_rss_gb"] = peak
    return rows


def run_tasks(tasks: list[tuple[str, object, tuple]], jobs: int):
    """Yield (dataset, rows) for each (dataset, fn, args) task, each in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_task, fn, args): ds for ds, fn, args in tasks}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--collection",
        choices=sorted(COLLECTIONS),
        default="scoring",
        help="tuning: ../shared/tuning (choose defaults here); scoring: ../shared/datasets",
    )
    ap.add_argument("--datasets", nargs="*", default=None, help="dataset stems (default: all)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for scsc")
    ap.add_argument(
        "--k",
        dest="k_mode",
        choices=("true", "estimated"),
        default="true",
        help="give scsc the true number of types, or let it estimate K without labels",
    )
    ap.add_argument(
        "--labels",
        choices=("own", "coarse"),
        default="own",
        help="score against each dataset's own annotation, or (tuning only) its lineage-level one "
        "(benchmarks/coarse_labels.py; the true K is then the number of lineages)",
    )
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument(
        "--scvi",
        action="store_true",
        help="add scVI (scvi-tools defaults) as a peer; needs pip install -e '.[scvi]'",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each scsc run")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes run at once")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.csv"))
    args = ap.parse_args()
    # Workers inherit these at spawn: BLAS and OpenMP use --threads too, so figures are reproducible for a given
    # --threads (results depend on the thread count of the linear algebra, not only on the seed).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.labels == "coarse" and args.collection != "tuning":
        raise SystemExit("--labels coarse exists for the tuning collection only")
    files = sorted(COLLECTIONS[args.collection].glob("*.h5"))
    if args.datasets:
        files = [f for f in files if f.stem in args.datasets]
    if not files:
        raise SystemExit(f"no dataset of {COLLECTIONS[args.collection]} matches {args.datasets}")
    if args.scvi:
        from benchmarks.scvi_peer import available

        if not available():
            raise SystemExit("--scvi needs scvi-tools: pip install -e '.[scvi]'")
    tasks = []
    for f in files:
        if not args.no_baselines:
            tasks.append((f.stem, _baselines, (str(f), args.labels)))
        if args.scvi:
            tasks.append((f.stem, _scvi, (str(f), args.labels, args.threads)))
        tasks += [
            (f.stem, _scsc, (str(f), seed, args.sets, args.threads, args.k_mode, args.labels))
            for seed in args.seeds
        ]
    rows = []
    for ds, result in run_tasks(tasks, args.jobs):
        rows += [{"dataset": ds, "collection": args.collection, "labels": args.labels, **r} for r in result]
        df = pd.DataFrame(rows)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)
        cur = pd.DataFrame([{"dataset": ds, **r} for r in result])
        print(
            cur[
                [
                    c
                    for c in ("dataset", "method", "seed", "ari", "nmi", "acc", "seconds", "peak_rss_gb")
                    if c in cur
                ]
            ].to_string(index=False),
            flush=True,
        )
    summary = df.groupby(["dataset", "method"])[["ari", "nmi"]].mean().unstack("method")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
