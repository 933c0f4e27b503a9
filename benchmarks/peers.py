"""The peer: the standard scanpy pipeline with Leiden, as one command (for wall time and peak RSS).

    python -m benchmarks.peers DATA.h5

``standard_preprocess`` and ``leiden_at_k`` are shared with ``quality.py`` (and ``embedding_stages.py``) so all
measure the same peer.
"""

import sys

import scanpy as sc


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
    lo, hi, labels = 0.01, 5.0, None
    for _ in range(25):
        res = (lo + hi) / 2
        sc.tl.leiden(a, resolution=res, flavor="igraph", n_iterations=2, directed=False, random_state=seed,
                     key_added="leiden_k")
        labels = a.obs["leiden_k"].to_numpy()
        n = len(set(labels))
        if n == k:
            break
        lo, hi = (res, hi) if n < k else (lo, res)
    return labels


if __name__ == "__main__":
    import scsc

    a = standard_preprocess(scsc.read(sys.argv[1]))
    sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    sc.tl.umap(a, random_state=0)
    print(a.obs["leiden"].nunique(), "Leiden clusters")
