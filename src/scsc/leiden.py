"""Leiden on a cell graph — the one home for it: the estimate of K (scsc/k_selection.py), the ``leiden`` head
plugin (plugins/scsc-leiden) and the scanpy peers of the benchmarks all call these.

Everything is scanpy's: the weighted kNN graph is ``sc.pp.neighbors`` (UMAP connectivities) and the
communities ``sc.tl.leiden`` with the igraph flavour (modularity with a resolution, 2 iterations). Linear in the
number of cells: a sparse kNN graph, no N × N matrix (scikit-learn's exact search reduces row blocks).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Neighbours of the graph on an embedding (scanpy's default for Leiden).
N_NEIGHBORS = 15
#: Up to this many cells the neighbours are exact (scikit-learn): the default of ``graph.exact_max_cells``,
#: which a run passes on to the estimate of K and the head's start. scanpy's own default turns to pynndescent
#: from 8,192 cells, whose kernels numba compiles in every process (about 16 s on 2 cores, more than the
#: search; docs/benchmarks.md).
EXACT_MAX_CELLS = 50_000


def knn_connectivities(
    z: np.ndarray, n_neighbors: int = N_NEIGHBORS, seed: int = 0, exact_max_cells: int = EXACT_MAX_CELLS
) -> sp.csr_matrix:
    """scanpy's weighted kNN graph (UMAP connectivities) of the rows of ``z`` (N × d) → symmetric N × N CSR.

    Neighbours are exact up to ``exact_max_cells`` cells (scanpy's ``transformer="sklearn"``, the path scanpy
    itself takes below 8,192 cells, so smaller data get the same graph as with scanpy's default), approximate
    (pynndescent) above."""
    import anndata as ad
    import scanpy as sc

    from .numba_cache import cache_umap_kernels

    cache_umap_kernels()  # scanpy's neighbours import umap-learn
    tmp = ad.AnnData(X=np.zeros((z.shape[0], 1), dtype=np.float32))
    tmp.obsm["X_z"] = np.asarray(z, dtype=np.float32)
    exact = {"transformer": "sklearn"} if z.shape[0] <= exact_max_cells else {}
    sc.pp.neighbors(
        tmp, use_rep="X_z", n_neighbors=min(n_neighbors, z.shape[0] - 1), random_state=seed, **exact
    )
    return sp.csr_matrix(tmp.obsp["connectivities"])


def leiden(graph: sp.spmatrix, resolution: float = 1.0, seed: int = 0) -> np.ndarray:
    """Leiden communities (scanpy, igraph flavour, modularity) of a weighted graph (N × N) → labels (N,)."""
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=np.zeros((graph.shape[0], 1), dtype=np.float32))
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        adjacency=graph,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
    )
    return tmp.obs["leiden"].astype(int).to_numpy()


def leiden_at_k(
    graph: sp.spmatrix, k: int, seed: int = 0, low: float = 0.01, high: float = 5.0, steps: int = 25
) -> np.ndarray:
    """Leiden labels (N,) of ``graph`` (N × N) with the resolution bisected in [``low``, ``high``] to give ``k``
    communities; after ``steps`` bisections without hitting ``k`` exactly, the last partition."""
    labels = None
    for _ in range(steps):
        res = (low + high) / 2
        labels = leiden(graph, res, seed)
        n = int(labels.max()) + 1
        if n == k:
            break
        low, high = (res, high) if n < k else (low, res)
    return labels
