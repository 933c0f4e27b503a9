"""scVI as a peer (Lopez et al., Nature Methods 2018; scvi-tools defaults), for ``benchmarks/quality.py --scvi``.

The run a scvi-tools user makes: the raw counts, 2,000 highly variable genes (``flavor="seurat_v3"`` on the
counts, the scvi-tools tutorials' choice), ``scvi.model.SCVI`` with its default settings (10 latent dimensions,
ZINB likelihood) and its default number of epochs, and the file's ``batch`` as the batch key where the file has
one (Ding, van Galen; where seurat_v3's per-batch fit fails on small batches, the genes are ranked over all
cells). On the latent space: a 15-NN graph, then Leiden at the default resolution, Leiden with the
resolution searched to the true K, and KMeans at the true K, as for the PCA peers.

scvi-tools is not a dependency of scsc: ``pip install -e ".[scvi]"`` installs it (docs/benchmarks.md).

    python -m benchmarks.scvi_peer ../shared/tuning/Zheng_sortedPBMC_MUDAN.h5
"""

from __future__ import annotations

import sys
import time

import numpy as np


def available() -> bool:
    """Whether scvi-tools can be imported here."""
    from importlib.util import find_spec

    return find_spec("scvi") is not None


def scvi_latent(adata, batch_key: str | None, seed: int = 0, threads: int | None = None) -> np.ndarray:
    """The scVI latent representation (N × 10) of ``adata`` (raw counts, N × G), defaults throughout."""
    import scanpy as sc
    import scvi
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    scvi.settings.seed = seed
    a = adata.copy()
    sc.pp.filter_genes(a, min_cells=3)
    n_top = min(2000, a.n_vars - 1)
    try:
        sc.pp.highly_variable_genes(
            a, n_top_genes=n_top, flavor="seurat_v3", batch_key=batch_key, subset=True
        )
    except (
        ValueError
    ):  # seurat_v3's loess fails on batches of a few dozen cells (van Galen): rank over all cells
        sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat_v3", subset=True)
    scvi.model.SCVI.setup_anndata(a, batch_key=batch_key)
    model = scvi.model.SCVI(a)
    model.train(accelerator="cpu", enable_progress_bar=False)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def scvi_rows(adata, y: np.ndarray, batch_key: str | None, threads: int | None = None) -> list[dict]:
    """Score scVI + Leiden default, Leiden at the true K and KMeans at the true K against the labels ``y`` (N,).

    One row per method with ``seconds`` (scVI's training included in each) and ``k``.
    """
    from sklearn.cluster import KMeans

    from scsc.evaluate import score
    from scsc.leiden import knn_connectivities, leiden, leiden_at_k

    k = len(np.unique(y))
    t0 = time.perf_counter()
    z = scvi_latent(adata, batch_key, threads=threads)
    graph = knn_connectivities(z, 15, 0)
    t_fit = time.perf_counter() - t0
    rows = []
    for method, fit in (
        ("scvi_leiden_default", lambda: leiden(graph, 1.0, 0)),
        ("scvi_leiden_true_k", lambda: leiden_at_k(graph, k, 0)),
        ("scvi_kmeans", lambda: KMeans(n_clusters=k, n_init=10, random_state=0).fit(z).labels_),
    ):
        t1 = time.perf_counter()
        labels = np.asarray(fit())
        rows.append(
            {
                "method": method,
                "seconds": t_fit + time.perf_counter() - t1,
                "k": len(np.unique(labels)),
                **score(y, labels),
            }
        )
    return rows


if __name__ == "__main__":
    import scsc

    a = scsc.read(sys.argv[1])
    key = "batch" if "batch" in a.obs else None
    for row in scvi_rows(a, a.obs["label"].to_numpy(), key):
        print(row)
