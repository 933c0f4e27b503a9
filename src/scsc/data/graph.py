"""The sparse cell graph (METHOD §2) and its two augmented views (METHOD §3).

Everything here is O(N·k) in memory: kNN search never forms an N × N distance matrix, the diffusion view is a
truncated personalised-PageRank series with per-step pruning (no matrix inverse), and the edge-removal view
scores existing edges only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..distributed import Context


def knn_graph(x: np.ndarray, k: int, exact_max_cells: int = 50_000, seed: int = 0) -> sp.csr_matrix:
    """Symmetric binary kNN adjacency A (N × N, CSR, no self-loops) on the rows of ``x`` (N × P).

    Exact search (scikit-learn, chunked brute force) up to ``exact_max_cells`` cells, pynndescent above.
    """
    n = x.shape[0]
    if n < k + 1:
        raise ValueError(f"need at least k + 1 = {k + 1} cells for a {k}-NN graph, got {n}")
    if n <= exact_max_cells:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
        _, idx = nn.kneighbors(x)
    else:
        from ..numba_cache import cache_umap_kernels

        cache_umap_kernels()  # pynndescent compiles its kernels at import
        from pynndescent import NNDescent

        index = NNDescent(x, n_neighbors=k + 1, random_state=seed, low_memory=True)
        idx, _ = index.neighbor_graph
    rows = np.repeat(np.arange(n), k + 1)
    cols = idx.reshape(-1)
    a = sp.csr_matrix((np.ones_like(cols, dtype=np.float32), (rows, cols)), shape=(n, n))
    a.setdiag(0)
    a.eliminate_zeros()
    a = a.maximum(a.T).tocsr()
    a.data[:] = 1.0
    return a


def row_normalize(a: sp.spmatrix, self_loops: bool = True) -> sp.csr_matrix:
    """Â = D⁻¹(A + I) as float32 CSR (N × N); rows sum to one."""
    a = sp.csr_matrix(a, dtype=np.float32)
    if self_loops:
        a = (a + sp.identity(a.shape[0], dtype=np.float32, format="csr")).tocsr()
    deg = np.asarray(a.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    return sp.csr_matrix(sp.diags((1.0 / deg).astype(np.float32)) @ a, dtype=np.float32)


def sym_normalize(a: sp.spmatrix) -> sp.csr_matrix:
    """Ŝ = D^{-1/2}(A + I)D^{-1/2} as float32 CSR (N × N)."""
    a = (sp.csr_matrix(a, dtype=np.float32) + sp.identity(a.shape[0], dtype=np.float32, format="csr")).tocsr()
    d = np.asarray(a.sum(axis=1)).ravel() ** -0.5
    dm = sp.diags(d.astype(np.float32))
    return sp.csr_matrix(dm @ a @ dm, dtype=np.float32)


def ppr_diffusion(
    a: sp.spmatrix,
    alpha: float = 0.5,
    eps: float = 1e-4,
    topk: int | None = 32,
    max_steps: int = 100,
    block_rows: int | None = None,
    context: Context | None = None,
) -> sp.csr_matrix:
    """Sparse approximation of Â_d = α (I − (1−α) Ŝ)⁻¹, Ŝ = D^{-1/2}(A+I)D^{-1/2} (N × N, CSR).

    Sums the Neumann series α Σ_t ((1−α)Ŝ)^t term by term, dropping entries below ``eps`` after every
    step, until the remaining tail mass (1−α)^{t+1} is below ``eps``; then keeps the ``topk`` largest
    entries per row. Never inverts and never densifies.

    Rows are computed ``block_rows`` at a time (row block R: term ← (1−α) term Ŝ from α E_R), and each block
    is cut to ``topk`` before the next starts. Before pruning, one step of the whole matrix at once can hold
    up to ~1/eps entries per row (a large fraction of N × N at 10k cells); blocking bounds that working set
    to O(block_rows · N) on top of the O(N · topk) result. Default: about 4M entries per block.

    A row's result depends on that row alone, so under several ranks (an active ``context``) each rank
    computes a contiguous share of the blocks and the ranks gather the rows: the same matrix, bit for bit,
    for a W-th of the work each.
    """
    s = sym_normalize(a)
    n = s.shape[0]
    if block_rows is None:
        block_rows = max(64, (1 << 22) // max(n, 1))
    starts = range(0, n, block_rows)
    if context is not None and context.active:
        first, stop = context.shard(len(starts))
        starts = starts[first:stop]
    blocks = [
        _ppr_rows(s, np.arange(start, min(n, start + block_rows)), alpha, eps, topk, max_steps)
        for start in starts
    ]
    mine = (
        sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)
        if blocks
        else sp.csr_matrix((0, n), dtype=np.float32)
    )
    if context is None or not context.active:
        return mine
    per_row = context.all_concat(np.diff(mine.indptr))
    indptr = np.concatenate([[0], np.cumsum(per_row)])
    return sp.csr_matrix(
        (context.all_concat(mine.data), context.all_concat(mine.indices), indptr), shape=(n, n)
    )


def _ppr_rows(
    s: sp.csr_matrix, rows: np.ndarray, alpha: float, eps: float, topk: int | None, max_steps: int
) -> sp.csr_matrix:
    """Rows ``rows`` (B,) of the pruned PPR series over the normalised graph ``s`` (N × N) → B × N CSR."""
    n, decay = s.shape[0], 1.0 - alpha
    term = sp.csr_matrix(
        (np.full(rows.size, alpha, dtype=np.float32), (np.arange(rows.size), rows)), shape=(rows.size, n)
    )
    total = term.copy()
    for step in range(1, max_steps + 1):
        term = (term @ s).tocsr() * decay
        term.data[term.data < eps] = 0.0
        term.eliminate_zeros()
        total = (total + term).tocsr()
        if term.nnz == 0 or decay ** (step + 1) < eps:
            break
    total.sort_indices()
    return keep_topk_per_row(total, topk) if topk is not None else total


def keep_topk_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of every row of a CSR matrix (others dropped)."""
    m = sp.csr_matrix(m)
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    keep = np.zeros(m.nnz, dtype=bool)
    # Sort each row's entries by value (descending) in one pass: row-major key, value as tie-break.
    row_of = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((-m.data, row_of))
    rank = np.arange(m.nnz) - np.repeat(m.indptr[:-1], counts)
    keep[order[rank < k]] = True
    out = sp.csr_matrix(
        (m.data[keep], m.indices[keep], np.concatenate([[0], np.cumsum(np.minimum(counts, k))])),
        shape=m.shape,
    )
    out.sort_indices()
    return out


def edge_cosine(a: sp.spmatrix, z: np.ndarray) -> sp.csr_matrix:
    """Cosine similarity of ``z`` rows (N × d) on the existing edges of ``a``; same sparsity as ``a``."""
    a = sp.csr_matrix(a)
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    sims = np.einsum("ij,ij->i", zn[rows], zn[a.indices]).astype(np.float32)
    return sp.csr_matrix((sims, a.indices.copy(), a.indptr.copy()), shape=a.shape)


def drop_dissimilar_edges(a: sp.spmatrix, z: np.ndarray, fraction: float) -> sp.csr_matrix:
    """Remove the ``fraction`` of edges of ``a`` (symmetric, N × N) whose endpoints' ``z`` are least similar.

    Only existing edges are ranked (the sparse equivalent of the reference's per-row ranking over all N
    cells). The result stays symmetric: an undirected edge is kept or dropped as a whole.
    """
    a = sp.csr_matrix(a)
    if fraction <= 0 or a.nnz == 0:
        return a.copy()
    upper = sp.triu(a, k=1).tocsr()
    sims = edge_cosine(upper, z)
    n_drop = int(round(fraction * upper.nnz))  # noqa: RUF046 (older NumPy: round(np.float64) is a float)
    if n_drop == 0:
        return a.copy()
    # Stable order so ties are broken by edge position, not by chance.
    order = np.argsort(sims.data, kind="stable")
    keep = np.ones(upper.nnz, dtype=bool)
    keep[order[:n_drop]] = False
    rows = np.repeat(np.arange(a.shape[0]), np.diff(upper.indptr))
    kept = sp.csr_matrix((upper.data[keep], (rows[keep], upper.indices[keep])), shape=a.shape)
    return (kept + kept.T).tocsr()
