"""Seurat-flavour highly variable genes from per-gene sums, so that ranks holding shards of the cells agree.

``sc.pp.highly_variable_genes(flavor="seurat")`` needs the per-gene mean and variance of ``expm1`` of the
log-normalised data and nothing else; here they come from sums that a distributed run adds up over its ranks
(:meth:`scsc.distributed.Context.all_sum`). The rule is scanpy 1.11's: log dispersion, 20 bins of log mean,
dispersion z-scored within its bin (a bin with one gene gives it 1), the top genes by that score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp


def expm1_sums(logx: sp.csr_matrix) -> np.ndarray:
    """Per-gene sum and sum of squares of ``expm1(logx)`` (N × G CSR, log1p data): shape (2, G), float64."""
    values = np.expm1(logx.data)  # in the data's precision, as scanpy's expm1 of the matrix
    g = logx.shape[1]
    return np.stack(
        [
            np.bincount(logx.indices, weights=values, minlength=g),
            np.bincount(logx.indices, weights=values.astype(np.float64) ** 2, minlength=g),
        ]
    )


def seurat_hvg(sums: np.ndarray, n_cells: int, n_top: int, n_bins: int = 20) -> np.ndarray:
    """Boolean mask (G,) of the ``n_top`` most variable genes from :func:`expm1_sums` over ``n_cells`` cells."""
    mean = sums[0] / n_cells
    var = sums[1] / n_cells - mean**2
    if n_cells > 1:
        var *= n_cells / (n_cells - 1)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # one gene in the bin: its normalised dispersion is 1
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    norm = ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy()
    ranked = np.sort(norm[~np.isnan(norm)])[::-1]
    cut = ranked[min(n_top, ranked.size) - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cut


def sharded_hvg(
    logx: sp.csr_matrix, n_top: int, total: Callable[[np.ndarray], np.ndarray], n_cells: int
) -> np.ndarray:
    """:func:`seurat_hvg` of the cells of every rank: ``logx`` is this rank's rows (n × G), ``total`` adds an
    array up over the ranks and ``n_cells`` is the number of cells on all ranks. Returns the mask (G,)."""
    return seurat_hvg(total(expm1_sums(logx)), n_cells, n_top)
