"""The sparse cell graph and its views (METHOD §2–3), checked against dense formulas on small N.

Dense N × N matrices appear only here, on a few hundred cells, as METHOD §0 allows.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scsc.config import GraphConfig, PreprocessConfig
from scsc.data.graph import (
    drop_dissimilar_edges,
    edge_cosine,
    keep_topk_per_row,
    knn_graph,
    ppr_diffusion,
    row_normalize,
    sym_normalize,
)
from scsc.data.preprocess import preprocess

K = 10


@pytest.fixture(scope="module")
def pcs(small_adata) -> np.ndarray:
    """PCA input of the 300-cell simulation (300 × 100)."""
    return preprocess(small_adata, PreprocessConfig(), seed=0).x


@pytest.fixture(scope="module")
def knn(pcs) -> sp.csr_matrix:
    return knn_graph(pcs, K)


@pytest.fixture(scope="module")
def dense_ppr(knn) -> np.ndarray:
    """α (I − (1−α) D^{-1/2}(A+I)D^{-1/2})⁻¹ in float64, by explicit inversion."""
    n = knn.shape[0]
    a = knn.toarray().astype(np.float64) + np.eye(n)
    d = a.sum(axis=1) ** -0.5
    s = d[:, None] * a * d[None, :]
    alpha = GraphConfig().ppr_alpha
    return alpha * np.linalg.inv(np.eye(n) - (1 - alpha) * s)


# --------------------------------------------------------------------------- kNN graph
def test_knn_graph_is_symmetric_binary_without_self_loops(knn, pcs):
    n = pcs.shape[0]
    assert knn.shape == (n, n) and sp.isspmatrix_csr(knn)
    assert (knn != knn.T).nnz == 0
    assert np.all(knn.data == 1.0)
    assert knn.diagonal().sum() == 0
    degree = np.diff(knn.indptr)
    assert degree.min() >= K
    assert knn.nnz <= 2 * K * n


def test_knn_graph_holds_the_exact_nearest_neighbours(knn, pcs):
    d = ((pcs[:, None, :].astype(np.float64) - pcs[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :K]
    dense = knn.toarray()
    assert all(dense[i, nearest[i]].all() for i in range(len(pcs)))
    # Every edge joins a pair where at least one end is among the other's k nearest.
    rows, cols = knn.nonzero()
    is_knn = np.zeros_like(dense, dtype=bool)
    is_knn[np.repeat(np.arange(len(pcs)), K), nearest.ravel()] = True
    assert np.all(is_knn[rows, cols] | is_knn[cols, rows])


@pytest.mark.slow
def test_approximate_knn_graph_agrees_with_exact(knn, pcs):
    """Above ``exact_max_cells`` the search is pynndescent (slow here only because numba compiles, ~45 s)."""
    approx = knn_graph(pcs, K, exact_max_cells=0)
    assert (approx != approx.T).nnz == 0 and approx.diagonal().sum() == 0
    assert np.diff(approx.indptr).min() >= K
    assert approx.multiply(knn).nnz / knn.nnz > 0.9


@pytest.mark.slow
def test_approximate_knn_graph_says_nothing_of_numba_caching():
    """The pynndescent kernels numba cannot cache compile in memory without a word on the user's stderr (numba
    begins the message with colour codes, which a filter on its first words once missed)."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from scsc.data.graph import knn_graph; "
        "x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32); "
        "print(knn_graph(x, 15, exact_max_cells=0).nnz)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    assert int(done.stdout.strip()) > 0
    assert "Cannot cache" not in done.stderr, done.stderr


def test_leiden_graph_is_exact_above_scanpys_own_exact_size(monkeypatch):
    """The graph of the K estimate and the Leiden head holds each cell's exact 14 nearest neighbours up to
    ``EXACT_MAX_CELLS`` cells, also beyond the 8,192 cells from which scanpy's default turns to pynndescent
    (whose numba kernels compile in every process); above the limit scanpy chooses."""
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    from scsc.leiden import knn_connectivities

    seen = []
    neighbors = sc.pp.neighbors
    monkeypatch.setattr(
        sc.pp, "neighbors", lambda *a, **kw: seen.append(kw.get("transformer")) or neighbors(*a, **kw)
    )
    x = np.random.default_rng(0).normal(size=(8300, 3)).astype(np.float32)
    g = knn_connectivities(x)
    assert seen == ["sklearn"]
    _, nearest = NearestNeighbors(n_neighbors=15).fit(x).kneighbors(x)
    exact = sp.csr_matrix(
        (np.ones(nearest[:, 1:].size), (np.repeat(np.arange(len(x)), 14), nearest[:, 1:].ravel())),
        shape=g.shape,
    )
    exact = exact.maximum(exact.T)
    assert (g != g.T).nnz == 0 and (abs((g > 0).astype(float) - exact) > 0).nnz == 0
    knn_connectivities(x[:300], exact_max_cells=299)
    assert seen == ["sklearn", None]


def test_knn_needs_k_plus_one_cells():
    with pytest.raises(ValueError, match="at least k \\+ 1 = 11 cells"):
        knn_graph(np.zeros((10, 3), dtype=np.float32), 10)


def test_row_normalize_rows_sum_to_one(knn):
    adj = row_normalize(knn)
    assert adj.dtype == np.float32
    np.testing.assert_allclose(np.asarray(adj.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    # Self-loops added: Â = D⁻¹(A + I).
    deg = np.diff(knn.indptr) + 1
    np.testing.assert_allclose(adj.diagonal(), 1.0 / deg, rtol=1e-6)
    dense = (knn.toarray() + np.eye(knn.shape[0])) / deg[:, None]
    np.testing.assert_allclose(adj.toarray(), dense, rtol=1e-6)


def test_row_normalize_without_self_loops_keeps_isolated_rows_zero():
    a = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    adj = row_normalize(a, self_loops=False).toarray()
    np.testing.assert_allclose(adj, [[0, 0.5, 0.5], [1, 0, 0], [0, 0, 0]])


def test_sym_normalize_matches_dense(knn):
    n = knn.shape[0]
    a = knn.toarray().astype(np.float64) + np.eye(n)
    d = a.sum(axis=1) ** -0.5
    np.testing.assert_allclose(sym_normalize(knn).toarray(), d[:, None] * a * d[None, :], rtol=1e-5)


# --------------------------------------------------------------------------- PPR diffusion
# Tolerances below were set from measurements on this fixture and on seeds 1 and 2 of the same simulation
# (300 cells, k = 10, α = 0.5; dense row sums of Â_d range 0.78–2.2), with a margin of about 3×:
#   eps=1e-5, topk=None: max |error| ≤ 5.5e-5, max row L1 error ≤ 9.8e-3, row mass kept ≥ 99.2 %.
#   defaults (eps=1e-4, topk=32): max |error| on kept entries ≤ 5.1e-4; kept entries are ≥ 84 % (mean ≥ 96 %)
#   of the dense top 32 of their row; mass kept per row is 82 % on average, 35 % in the worst row (a hub whose
#   diffusion is spread thin over the 300 cells: 32 entries cannot hold it, nor could the dense top 32, which
#   holds the same 35 %).
def test_ppr_without_truncation_matches_dense_inverse(knn, dense_ppr):
    approx = ppr_diffusion(knn, alpha=0.5, eps=1e-5, topk=None).toarray().astype(np.float64)
    err = np.abs(approx - dense_ppr)
    assert err.max() < 2e-4
    assert err.sum(axis=1).max() < 3e-2
    assert (approx.sum(axis=1) / dense_ppr.sum(axis=1)).min() > 0.98
    assert np.all(approx <= dense_ppr + 1e-6)  # the truncated series only ever misses mass


def test_ppr_defaults_keep_the_largest_entries_accurately(knn, dense_ppr):
    cfg = GraphConfig()
    approx = ppr_diffusion(knn, cfg.ppr_alpha, cfg.ppr_eps, cfg.ppr_topk)
    assert approx.dtype == np.float32
    counts = np.diff(approx.indptr)
    assert counts.max() <= cfg.ppr_topk and counts.min() == cfg.ppr_topk
    dense_approx = approx.toarray().astype(np.float64)
    kept = dense_approx != 0
    assert np.abs(dense_approx[kept] - dense_ppr[kept]).max() < 2e-3
    # The diagonal (the largest entry of each row) is always kept and accurate to 1 %.
    np.testing.assert_allclose(approx.diagonal(), np.diag(dense_ppr), rtol=1e-2)
    overlap = np.array(
        [
            len(set(np.argsort(-dense_ppr[i])[: cfg.ppr_topk]) & set(approx[i].indices)) / cfg.ppr_topk
            for i in range(approx.shape[0])
        ]
    )
    assert overlap.min() >= 0.75 and overlap.mean() >= 0.9
    mass = dense_approx.sum(axis=1) / dense_ppr.sum(axis=1)
    assert mass.mean() > 0.75 and mass.min() > 0.25


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1000])
def test_ppr_does_not_depend_on_the_row_blocking(knn, block_rows):
    ref = ppr_diffusion(knn, block_rows=300)
    got = ppr_diffusion(knn, block_rows=block_rows)
    assert (ref != got).nnz == 0


def test_keep_topk_per_row_keeps_the_largest():
    rng = np.random.default_rng(0)
    m = sp.random(50, 80, density=0.3, format="csr", random_state=1, dtype=np.float64)
    m.data = rng.permutation(m.nnz).astype(np.float64) + 1  # distinct values
    out = keep_topk_per_row(m, 5)
    dense, kept = m.toarray(), out.toarray()
    for i in range(50):
        row = dense[i][dense[i] > 0]
        expected = np.sort(row)[::-1][:5]
        np.testing.assert_array_equal(np.sort(kept[i][kept[i] > 0])[::-1], expected)
    assert np.all((kept == 0) | (kept == dense))


# --------------------------------------------------------------------------- edge-removal view
def test_edge_cosine_matches_dense(knn, pcs):
    z = pcs[:, :20].astype(np.float64)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    dense = zn @ zn.T
    sims = edge_cosine(knn, z)
    rows, cols = knn.nonzero()
    np.testing.assert_allclose(np.asarray(sims[rows, cols]).ravel(), dense[rows, cols], atol=1e-5)


def test_drop_dissimilar_edges_removes_the_least_similar_tenth(knn, pcs):
    z = pcs[:, :20]
    kept = drop_dissimilar_edges(knn, z, 0.1)
    n_edges = sp.triu(knn, k=1).nnz
    n_kept = sp.triu(kept, k=1).nnz
    assert n_edges - n_kept == round(0.1 * n_edges)
    assert (kept != kept.T).nnz == 0
    assert kept.diagonal().sum() == 0
    assert (kept.multiply(knn) != kept).nnz == 0  # a subset of the original edges
    sims = edge_cosine(knn, z)
    removed = (knn - kept).tocsr()
    removed.eliminate_zeros()
    removed_sims = np.asarray(sims[removed.nonzero()]).ravel()
    kept_sims = np.asarray(sims[kept.nonzero()]).ravel()
    assert removed_sims.max() <= kept_sims.min() + 1e-6


def test_drop_nothing(knn, pcs):
    assert (drop_dissimilar_edges(knn, pcs, 0.0) != knn).nnz == 0


# --------------------------------------------------------------------------- memory on real data
def test_graph_pipeline_on_cbmc_stays_far_below_dense_memory(shared_file):
    """8617 cells: preprocess + kNN + PPR must not come near an 8617² float64 matrix (594 MB).

    Peak traced (numpy/scipy) allocations above what is held before the run. The whole pipeline is bounded by
    the cells × HVG block, which scaling and PCA need dense: under three float32 copies of it and under a third
    of the dense matrix (measured 163 MB with 2000 HVGs, ~100 MB with 1000); kNN + PPR alone stay under 1/16
    of the dense matrix (measured ~25 MB; the PPR series summed over all rows at once peaked at 329 MB).
    Runs in ~12 s on one core.
    """
    import tracemalloc

    import pynndescent  # noqa: F401  (imports are not the pipeline's memory)
    import scanpy  # noqa: F401 (imported before tracing, as above)
    import sklearn.decomposition
    import sklearn.neighbors  # noqa: F401 (imported before tracing, as above)

    from scsc.data.io import read

    adata = read(shared_file("Grace_CITE_CBMC_counts_top2000.h5"))
    n = adata.n_obs
    assert n == 8617
    dense_bytes = n * n * 8
    cfg = GraphConfig()

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        prepared = preprocess(adata, PreprocessConfig(), seed=0, min_cells_required=cfg.k + 1)
        pre_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        graph_base = tracemalloc.get_traced_memory()[0]
        a = knn_graph(prepared.x, cfg.k, cfg.exact_max_cells)
        ppr = ppr_diffusion(a, cfg.ppr_alpha, cfg.ppr_eps, cfg.ppr_topk)
        graph_peak = tracemalloc.get_traced_memory()[1] - graph_base
        total_peak = max(pre_peak, graph_peak + graph_base - base)
    finally:
        tracemalloc.stop()

    assert prepared.x.shape == (n, PreprocessConfig().n_pcs)
    assert ppr.nnz <= n * cfg.ppr_topk
    assert graph_peak < dense_bytes / 16, f"kNN + PPR peak {graph_peak / 1e6:.0f} MB"
    hvg_block = n * len(prepared.hvg) * 4
    assert total_peak < min(3 * hvg_block, dense_bytes / 3), f"pipeline peak {total_peak / 1e6:.0f} MB"


def test_graphs_reach_torch_without_warnings_for_notebook_users(fresh_python):
    """torch warns once per process that CSR tensors are beta and that invariant checks are off; a scanpy
    user calling scsc.cluster in a notebook saw both. A fresh process, so that no earlier test used them up."""
    code = (
        "import warnings, numpy as np, scipy.sparse as sp, torch\n"
        "from scsc.data.tensors import sparse_to_torch\n"
        "m = sp.random(6, 6, density=0.4, format='csr', random_state=0)\n"
        "with warnings.catch_warnings(record=True) as caught:  # Python's default filters, as in a notebook\n"
        "    t = sparse_to_torch(m)\n"
        "assert torch.equal(t.to_dense(), torch.from_numpy(m.toarray().astype(np.float32)))\n"
        "print([str(w.message)[:60] for w in caught])\n"
    )
    assert fresh_python(code) == "[]"
