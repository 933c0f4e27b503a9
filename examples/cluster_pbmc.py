"""Cluster the shared 10x PBMC data through the Python API and plot the result with scanpy.

    python examples/cluster_pbmc.py [path/to/data.h5] [--out pbmc_example]

Takes about a minute on two CPU cores. Writes pbmc_example/result.h5ad and pbmc_example/umap.png.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import scanpy as sc  # noqa: E402

import scsc  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "10X_PBMC_top2000.h5"

ap = argparse.ArgumentParser()
ap.add_argument("data", nargs="?", default=DEFAULT, type=Path)
ap.add_argument("--out", default=Path("pbmc_example"), type=Path)
args = ap.parse_args()

adata = scsc.read(args.data)                   # AnnData of raw counts; obs["label"] if the file has Y
n_types = adata.obs["label"].nunique() if "label" in adata.obs else None
adata = scsc.cluster(adata, n_clusters=n_types, seed=0)

print("clusters:", adata.uns["scsc"]["n_clusters"], "| time (s):",
      {k: round(v, 1) for k, v in adata.uns["scsc"]["timings"].items()})
if "metrics" in adata.uns["scsc"]:
    print("against the true labels:", {k: round(v, 3) for k, v in adata.uns["scsc"]["metrics"]["scsc"].items()})

sc.pp.neighbors(adata, use_rep="X_scsc")
sc.tl.umap(adata, random_state=0)
args.out.mkdir(parents=True, exist_ok=True)
colors = ["scsc_cluster"] + (["label"] if "label" in adata.obs else [])
sc.pl.umap(adata, color=colors, show=False)
plt.savefig(args.out / "umap.png", dpi=120, bbox_inches="tight")
scsc.write_h5ad(adata, args.out / "result.h5ad")
print("wrote", args.out / "result.h5ad", "and", args.out / "umap.png")
