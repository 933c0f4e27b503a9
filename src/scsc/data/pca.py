"""Scale and PCA of a sparse cells × genes matrix in row chunks, without the dense N × G block.

It computes what ``sc.pp.scale(max_value=clip)`` followed by ``sc.pp.pca`` (zero-centred, exact) compute, with
peak memory O(chunk × G + G² + N × P) beyond the input: per-gene mean and standard deviation from the sparse
values, then the exact covariance of the scaled and clipped data accumulated over row chunks, its
eigendecomposition, and the projection chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

#: Adds an array up over the ranks of a distributed run (or gives rank 0's); the array itself in one process.
Reduce = Callable[[np.ndarray], np.ndarray]

#: Entries per dense chunk (float64: 160 MB); 10,000 rows at 2,000 genes.
CHUNK_ENTRIES = 20_000_000


def default_chunk_rows(n_genes: int) -> int:
    """Rows per chunk so that one dense float64 chunk of ``n_genes`` columns holds about CHUNK_ENTRIES."""
    return max(1, CHUNK_ENTRIES // max(1, n_genes))


def _canonical(x) -> sp.csr_matrix:
    """``x`` as CSR without duplicate entries (they would be squared wrongly in the statistics)."""
    x = sp.csr_matrix(x)
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    return x


def _own(a: np.ndarray) -> np.ndarray:
    return a


def scale_stats(
    x: sp.csr_matrix, chunk_rows: int | None = None, total: Reduce = _own
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and standard deviation of ``x`` (N × G CSR) as ``sc.pp.scale`` computes them.

    scanpy 1.11 takes the variance as mean(x²) − mean(x)² times N / (N − 1) (the unbiased estimate, with the
    square taken in the input's precision) and replaces a standard deviation of 0 by 1, so constant genes
    scale to 0. Returns two float64 arrays of shape (G,). ``total`` adds an array up over the ranks of a
    distributed run whose rows of the data are split between them (``x`` is then this rank's rows).
    """
    x = _canonical(x)
    mine, g = x.shape
    n = int(total(np.array([mine], dtype=np.int64))[0])
    chunk_rows = chunk_rows or default_chunk_rows(g)
    sums, squares = np.zeros(g), np.zeros(g)
    for lo in range(0, mine, chunk_rows):
        a, b = x.indptr[lo], x.indptr[min(lo + chunk_rows, mine)]
        data, idx = x.data[a:b], x.indices[a:b]
        sums += np.bincount(idx, weights=data, minlength=g)
        squares += np.bincount(idx, weights=data * data, minlength=g)
    sums, squares = total(np.stack([sums, squares]))
    mean = sums / n
    var = squares / n - mean**2
    if n > 1:
        var *= n / (n - 1)
    # Rounding can make the variance of a constant gene a tiny negative number: scanpy would give NaN there.
    std = np.sqrt(np.maximum(var, 0.0))
    std[std == 0] = 1.0
    return mean, std


def _scaled_chunk(
    x: sp.csr_matrix, lo: int, hi: int, mean: np.ndarray, std: np.ndarray, clip: float | None
) -> np.ndarray:
    """Rows lo:hi of x, densified as float64, centred, scaled and clipped: shape (hi − lo, G)."""
    a, b = x.indptr[lo], x.indptr[hi]
    block = sp.csr_matrix(
        (x.data[a:b].astype(np.float64), x.indices[a:b], x.indptr[lo : hi + 1] - a),
        shape=(hi - lo, x.shape[1]),
    )
    y = block.toarray()
    y -= mean
    y /= std
    if clip is not None:
        np.clip(y, -clip, clip, out=y)
    return y


def scaled_pca(
    x: sp.csr_matrix,
    n_comps: int,
    clip: float | None = 10.0,
    chunk_rows: int | None = None,
    total: Reduce = _own,
    same: Reduce = _own,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA of ``x`` (N × G CSR) after ``sc.pp.scale(max_value=clip)``, computed in row chunks.

    Clipping moves the column means away from zero, so the clipped data are centred again before the
    covariance, as ``sc.pp.pca(zero_center=True)`` does. Component signs follow scikit-learn's ``svd_flip``
    on the loadings (the largest absolute loading of each component is positive), as the dense path's PCA.

    Args:
        x: log-normalised expression, N × G, CSR (any float dtype).
        n_comps: number of components P (at most G).
        clip: clip the scaled values to [−clip, clip]; None does not clip.
        chunk_rows: rows densified at a time; the default keeps one chunk near CHUNK_ENTRIES values. The
            result does not depend on it beyond float64 rounding.
        total, same: for a distributed run whose ranks hold row shards of the data: ``total`` adds an array up
            over the ranks, ``same`` gives every rank rank 0's array. The statistics and the covariance are
            then those of all rows, and the scores those of this rank's rows.

    Returns:
        scores (N × P float32), the cells' coordinates on the components; variance (P,) float64, the
        variance of each component (eigenvalue of the covariance with denominator N − 1), decreasing.
    """
    x = _canonical(x)
    mine, g = x.shape
    n = int(total(np.array([mine], dtype=np.int64))[0])
    chunk_rows = chunk_rows or default_chunk_rows(g)
    mean, std = scale_stats(x, chunk_rows, total)
    gram, col_sums = np.zeros((g, g)), np.zeros(g)
    for lo in range(0, mine, chunk_rows):
        y = _scaled_chunk(x, lo, min(lo + chunk_rows, mine), mean, std, clip)
        col_sums += y.sum(axis=0)
        gram += y.T @ y
        del y
    gram, col_sums = total(gram), total(col_sums)
    centre = col_sums / n
    gram -= n * np.outer(centre, centre)
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:n_comps]
    evals, comps = evals[order], evecs[:, order]
    signs = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(comps.shape[1])])
    signs[signs == 0] = 1.0
    comps *= signs
    # LAPACK builds may differ between nodes in the last bits: every rank projects on rank 0's components.
    evals, comps = same(evals), same(comps)
    scores = np.empty((mine, comps.shape[1]), dtype=np.float32)
    for lo in range(0, mine, chunk_rows):
        hi = min(lo + chunk_rows, mine)
        y = _scaled_chunk(x, lo, hi, mean, std, clip)
        y -= centre
        scores[lo:hi] = y @ comps
        del y
    return scores, np.maximum(evals, 0.0) / max(n - 1, 1)
