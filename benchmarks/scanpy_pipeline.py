"""The peer: the standard scanpy pipeline with Leiden, as one command (for wall time and peak RSS).

    python benchmarks/scanpy_pipeline.py DATA.h5

``standard_preprocess`` is shared with ``quality.py`` so both measure the same peer.
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


if __name__ == "__main__":
    import scsc

    a = standard_preprocess(scsc.read(sys.argv[1]))
    sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    sc.tl.umap(a, random_state=0)
    print(a.obs["leiden"].nunique(), "Leiden clusters")
