"""The peer: the standard scanpy pipeline with Leiden, as one command (for wall time and peak RSS).

    python -m benchmarks.peers DATA.h5

``standard_preprocess`` and ``leiden_at_k`` are shared with ``quality.py`` (and ``embedding_stages.py``) so all
measure the same peer.
"""

import sys

import scanpy as sc

from scsc.leiden import leiden
from scsc.leiden import leiden_at_k as scsc_leiden_at_k


def standard_preprocess(a):
    """Normalise, log1p, 2000 HVG, scale, 50 PCs, 15-NN graph (scanpy defaults otherwise)."""
    sc.pp.filter_genes(a, min_cells=3)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars - 1))
    a = a[:, a.var["highly_variable"]].copy()
    sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=50, random_state=0)
    sc.pp.neighbors(a, n_neighbors=15, random_state=0)
    return a


def leiden_at_k(a, k: int, seed: int = 0):
    """Leiden labels (N,) on the neighbour graph of ``a`` (already computed), resolution bisected to K.

    Bisection over [0.01, 5] for at most 25 steps; the last partition is returned if K is never hit exactly.
    """
    return scsc_leiden_at_k(a.obsp["connectivities"], k, seed)


def leiden_default(a):
    """Leiden labels (N,) at the default resolution 1 on the neighbour graph of ``a`` (the scanpy user's run)."""
    return leiden(a.obsp["connectivities"], 1.0, 0)


if __name__ == "__main__":
    import scsc

    a = standard_preprocess(scsc.read(sys.argv[1]))
    a.obs["leiden"] = leiden_default(a).astype(str)
    sc.tl.umap(a, random_state=0)
    print(a.obs["leiden"].nunique(), "Leiden clusters")
