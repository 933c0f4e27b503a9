"""METHOD §1 with scanpy: filter, size factors, normalise, log1p, HVG, scale, PCA.

The model input is the PCA matrix **X** (N × P). The raw counts of the HVGs (N × G) and the size factors
are kept for the ZINB decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pandas.api.types import union_categoricals

from ..config import PreprocessConfig
from ..distributed import Context
from ..errors import ConfigError, InputError
from .batch_correct import batch_labels, harmonize
from .hvg import sharded_hvg
from .io import looks_like_counts
from .pca import scaled_pca


@dataclass
class Prepared:
    """The preprocessed data the model trains on.

    Attributes:
        adata: the input restricted to the kept cells and genes (raw counts in ``X``), N × G_all.
        x: PCA input, float32 array of shape (N, P).
        counts: raw counts of the HVGs, float32 CSR (N, G), or None for log-normalised input.
        size_factors: float32 array (N,), total counts over their median (ones for log-normalised input).
        hvg: names of the G highly variable genes.
        cell_mask: boolean array over the input cells, True where the cell was kept.
        gene_mask: boolean array over the input genes, True where the gene was kept.
        rows: in a distributed run, the indices among the N kept cells of all ranks of this rank's rows of
            ``adata`` and ``counts`` (its shard); None when they hold every cell. ``x``, ``size_factors`` and
            ``cell_mask`` always cover every cell.
    """

    adata: ad.AnnData
    x: np.ndarray
    counts: sp.csr_matrix | None
    size_factors: np.ndarray
    hvg: list[str]
    cell_mask: np.ndarray
    rows: np.ndarray | None = None
    gene_mask: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])


def _check_batch_key(adata: ad.AnnData, batch_key: str | None, ctx: Context, where: str) -> None:
    """Refuse, before the work starts, a ``batch_key`` that is not an obs column or a distributed run with one."""
    if batch_key is None:
        return
    if ctx.active:
        raise ConfigError(
            "--batch-key is not supported in distributed runs yet; correct the batches "
            "before (for example with scanpy's external tools) or run in one process"
        )
    batch_labels(adata.obs, batch_key, where)


def preprocess(
    adata: ad.AnnData,
    config: PreprocessConfig,
    seed: int = 0,
    min_cells_required: int = 2,
    source: str | Path | None = None,
    context: Context | None = None,
) -> Prepared:
    """Run METHOD §1 on ``adata`` (raw counts, N × G); deterministic for a given ``seed``.

    With an active ``context`` (a distributed run) ``adata`` is this rank's shard of the cells: every statistic
    (genes' cell counts, the median size, the HVGs, scaling and the PCA covariance) is added up over the ranks,
    so each rank gets the PCA input of all cells while it holds only its own cells' counts (``Prepared.rows``).

    Above ``config.dense_max_cells`` kept cells, scale and PCA run in row chunks (:mod:`scsc.data.pca`) instead
    of on the dense cells × HVG block. ``Prepared.adata.X`` is the input's own matrix (not a copy) when the
    input is a float32 CSR matrix and nothing was filtered out; treat it as read-only.

    With ``config.batch_key`` (an ``obs`` column of ``adata``) the HVGs are chosen within each batch and the PCA
    input is corrected by Harmony (:mod:`scsc.data.batch_correct`).

    Raises :class:`InputError` for normalised input without ``log_normalized``, for a batch key that is not an
    obs column, or when filtering leaves fewer than ``min_cells_required`` cells or no genes.
    """
    where = f"{source}: " if source else ""
    ctx = context or Context()
    _check_batch_key(adata, config.batch_key, ctx, where)
    counts, gene_ok, cell_mask = filter_cells_and_genes(adata, config, min_cells_required, where, ctx)
    batches = (
        None
        if config.batch_key is None
        else batch_labels(adata.obs.iloc[np.flatnonzero(cell_mask)], config.batch_key, where)
    )
    n_all = int(ctx.all_sum(np.array([counts.shape[0]], dtype=np.int64))[0])
    a, size_factors = _log_normalised(counts, adata.var, gene_ok, config, ctx)
    hvg_mask = _hvg_mask(a, min(config.n_hvg, a.n_vars), ctx, n_all, batches)
    hvg = list(a.var_names[hvg_mask])
    expr = a.X if hvg_mask.all() else a.X[:, hvg_mask]
    del a  # the normalised matrix of every kept gene is no longer needed
    x = _pca_input(expr, config, seed, ctx, n_all, where)
    del expr
    if batches is not None:
        x = harmonize(x, batches, seed)
    rows = None
    if ctx.active:
        first = ctx.all_concat(np.array([counts.shape[0]], dtype=np.int64))[: ctx.rank].sum()
        rows = np.arange(first, first + counts.shape[0], dtype=np.int64)
    return Prepared(
        adata=_kept(adata, cell_mask, gene_ok, counts),
        x=np.ascontiguousarray(x, dtype=np.float32),
        counts=None if config.log_normalized else sp.csr_matrix(counts[:, hvg_mask], dtype=np.float32),
        size_factors=ctx.all_concat(size_factors),
        hvg=hvg,
        cell_mask=ctx.all_concat(cell_mask),
        rows=rows,
        gene_mask=gene_ok,
    )


def _log_normalised(
    counts: sp.csr_matrix, var: pd.DataFrame, gene_ok: np.ndarray, config: PreprocessConfig, ctx: Context
) -> tuple[ad.AnnData, np.ndarray]:
    """The kept cells' counts (N × G) divided by their size factors and log1p-transformed (as given for
    log-normalised input), and the size factors (N,): total counts over their median across all ranks.

    Every later matrix is derived from ``counts``, which is never modified in place: it is also the kept raw
    counts (Prepared.adata.X), so no copy of it is needed.
    """
    import scanpy as sc

    a = ad.AnnData(X=counts, var=var[[]].iloc[np.flatnonzero(gene_ok)].copy())
    if config.log_normalized:
        return a, np.ones(a.n_obs, dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    size_factors = (totals / np.median(ctx.all_concat(totals))).astype(np.float32)
    a.X = _divide_rows(counts, size_factors)
    sc.pp.log1p(a)
    return a, size_factors


def _hvg_mask(a: ad.AnnData, n_top: int, ctx: Context, n_all: int, batches: np.ndarray | None) -> np.ndarray:
    """Which of the genes of ``a`` (log-normalised, N × G) are the ``n_top`` highly variable ones (G,): scanpy's
    seurat flavour, within each batch when ``batches`` (N,) is given; summed over the ranks in a distributed
    run; every gene when ``n_top`` covers them all."""
    import scanpy as sc

    if n_top >= a.n_vars:
        return np.ones(a.n_vars, dtype=bool)
    if ctx.active:
        return sharded_hvg(sp.csr_matrix(a.X), n_top, ctx.all_sum, n_all)
    key = None
    if batches is not None and len(np.unique(batches)) > 1:
        key = "batch"
        a.obs[key] = pd.Categorical(batches)
    sc.pp.highly_variable_genes(a, n_top_genes=n_top, flavor="seurat", batch_key=key)
    return a.var["highly_variable"].to_numpy()


def _pca_input(
    expr: sp.csr_matrix, config: PreprocessConfig, seed: int, ctx: Context, n_all: int, where: str
) -> np.ndarray:
    """Scale and PCA of the HVG expression ``expr`` (this rank's N_r × G) → the model input of all N cells
    (N × P): dense (arpack) up to ``config.dense_max_cells`` cells, in row chunks above, summed over ranks in a
    distributed run."""
    n_pcs = int(min(config.n_pcs, n_all - 1, expr.shape[1] - 1))
    if n_pcs < 1:
        raise InputError(f"{where}too few cells or genes for PCA ({n_all} cells × {expr.shape[1]} genes)")
    if ctx.active:  # every rank's scores, in rank order: the rows of the kept cells
        return ctx.all_concat(
            scaled_pca(expr, n_pcs, clip=config.scale_clip, total=ctx.all_sum, same=ctx.broadcast)[0]
        )
    if n_all > config.dense_max_cells:
        return scaled_pca(expr, n_pcs, clip=config.scale_clip)[0]
    return _dense_scaled_pca(expr, n_pcs, config.scale_clip, seed)


def kept_input(adata: ad.AnnData, prepared: Prepared) -> ad.AnnData:
    """``adata`` (all input cells, N_in × G_in) restricted to the cells and genes that ``prepared`` kept, with
    its counts as float32 CSR X: what ``Prepared.adata`` is in one process. A distributed run's rank 0 writes
    its result from this."""
    counts = _csr32(adata.X)
    if not prepared.gene_mask.all():
        counts = counts[:, prepared.gene_mask]
    if not prepared.cell_mask.all():
        counts = counts[prepared.cell_mask]
    return _kept(adata, prepared.cell_mask, prepared.gene_mask, counts)


def kept_input_by_rows(
    read_rows: Callable[[int, int], ad.AnnData], prepared: Prepared, bounds: list[tuple[int, int]]
) -> ad.AnnData:
    """:func:`kept_input` of the whole input, read a block of rows at a time.

    ``read_rows(lo, hi)`` reads input cells ``lo:hi``; ``bounds`` are blocks that cover the input's cells in
    order. Each block's kept counts are copied into one CSR matrix as the blocks come, so the input's counts are
    never held whole beside the kept ones (rank 0 of a distributed run builds its result this way). The result
    equals ``kept_input(whole input, prepared)``: X, obs (categories as one read would make them) and var.
    """
    parts, counts = [], []
    for lo, hi in bounds:
        block = read_rows(lo, hi)
        if block.n_obs != hi - lo:
            raise InputError(f"reading input cells {lo}:{hi} gave {block.n_obs} cells; has the file changed?")
        part = kept_input(block, replace(prepared, cell_mask=prepared.cell_mask[lo:hi]))
        del block
        counts.append(part.X)
        part.X = None
        parts.append(part)
    x = _stack_csr(counts, len(parts[0].var))
    obs = pd.concat(
        [p.obs for p in parts]
    )  # a categorical keeps its dtype when every block has its categories
    for col in parts[0].obs.columns:
        if isinstance(parts[0].obs[col].dtype, pd.CategoricalDtype) and not isinstance(
            obs[col].dtype, pd.CategoricalDtype
        ):  # blocks disagree: their sorted union
            obs[col] = union_categoricals([p.obs[col] for p in parts], sort_categories=True)
    return ad.AnnData(X=x, obs=obs, var=parts[0].var, uns=parts[0].uns)


def _stack_csr(blocks: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    """CSR blocks stacked by rows into one float32 CSR matrix; each block is dropped from ``blocks`` once
    copied, so the peak is the result plus one block."""
    nnz = sum(b.nnz for b in blocks)
    rows = sum(b.shape[0] for b in blocks)
    index = np.int32 if nnz < 2**31 else np.int64
    data, indices = np.empty(nnz, np.float32), np.empty(nnz, index)
    indptr = np.zeros(rows + 1, np.int64 if index is np.int64 else np.int32)
    at = row = 0
    for i, b in enumerate(blocks):
        data[at : at + b.nnz] = b.data
        indices[at : at + b.nnz] = b.indices
        indptr[row + 1 : row + 1 + b.shape[0]] = b.indptr[1:] + at
        at, row = at + b.nnz, row + b.shape[0]
        blocks[i] = None
    return sp.csr_matrix((data, indices, indptr), shape=(rows, n_cols))


def filter_cells_and_genes(
    adata: ad.AnnData,
    config: PreprocessConfig,
    min_cells_required: int = 2,
    where: str = "",
    context: Context | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """METHOD §1's filters on ``adata`` (N × G counts), refusing data that cannot be clustered.

    Returns the kept counts (float32 CSR, cells × genes), the kept-gene mask (G,) and the kept-cell mask (N,).
    Raises :class:`InputError` (``where`` prefixes the message) for values that are not integer counts (unless
    ``config.log_normalized``), no gene in ``config.min_cells`` cells, or fewer than ``min_cells_required``
    cells with counts. ``scsc info`` runs the same checks to warn about a file it can describe. With an active
    ``context`` ``adata`` is this rank's shard and the counts of cells and genes are those of all ranks.
    """
    ctx = context or Context()
    bad = not config.log_normalized and not looks_like_counts(adata)
    ctx.raise_if_any(
        InputError(
            f"{where}values are not integer counts (already normalised?); scsc needs raw counts. "
            "If the data are log-normalised expression, pass --log-normalized (the ZINB term is then disabled)"
        )
        if bad
        else None
    )
    counts = _csr32(adata.X)
    gene_ok = ctx.all_sum(_cells_per_gene(counts)) >= config.min_cells
    if not gene_ok.any():
        raise InputError(f"{where}no gene is expressed in at least {config.min_cells} cells")
    if not gene_ok.all():
        counts = counts[:, gene_ok]
    cell_mask = np.asarray(counts.sum(axis=1)).ravel() > 0
    n_kept = int(ctx.all_sum(np.array([cell_mask.sum()], dtype=np.int64))[0])
    if n_kept < min_cells_required:
        raise InputError(
            f"{where}only {n_kept} cells with counts after filtering; need at least "
            f"{min_cells_required} (k + 1 for the kNN graph)"
        )
    if not cell_mask.all():
        counts = counts[cell_mask]
    return counts, gene_ok, cell_mask


def _csr32(x) -> sp.csr_matrix:
    """``x`` as a float32 CSR matrix: the same object when it already is one, else a full copy.

    A partial share (indices shared, values converted) would let an in-place index sort on one side corrupt
    the other, so it is all or nothing.
    """
    if isinstance(x, sp.csr_matrix) and x.dtype == np.float32:
        return x
    return sp.csr_matrix(x, dtype=np.float32, copy=True)


def _cells_per_gene(x: sp.csr_matrix, step: int = 10_000_000) -> np.ndarray:
    """Number of cells with a positive count, per gene (G,).

    Counted ``step`` stored values at a time: ``x > 0`` would copy the whole matrix, and bincount copies
    the indices it is given as int64.
    """
    n = np.zeros(x.shape[1], dtype=np.int64)
    for lo in range(0, x.nnz, step):
        n += np.bincount(x.indices[lo : lo + step][x.data[lo : lo + step] > 0], minlength=x.shape[1])
    return n


def _divide_rows(x: sp.csr_matrix, size_factors: np.ndarray) -> sp.csr_matrix:
    """A new float32 CSR matrix with row i of ``x`` multiplied by 1 / size_factors[i].

    The same float32 products as ``diags(1 / s) @ x`` (which scanpy pipelines use), in one copy of ``x``
    instead of three temporaries; explicit zeros are dropped as that product drops them.
    """
    out = x.copy()
    inv = (1.0 / size_factors).astype(np.float32)
    out.data *= np.repeat(inv, np.diff(out.indptr))
    if out.nnz and not out.data.all():
        out.eliminate_zeros()
    return out


def _dense_scaled_pca(expr: sp.csr_matrix, n_pcs: int, clip: float, seed: int) -> np.ndarray:
    """``sc.pp.scale`` then arpack PCA on the densified (N × G float32) matrix: N × n_pcs."""
    import scanpy as sc

    # float32 so that scale and PCA do not work on float64 copies (peak memory of preprocess at 8.6k cells:
    # ~100 MB with 1000 HVGs instead of ~180 MB; 163 MB with the default 2000). Cells × HVGs: linear in N,
    # but 8 GB at 1M cells, hence the chunked path above PreprocessConfig.dense_max_cells.
    dense = sc.pp.scale(expr.toarray(), max_value=clip)
    return sc.pp.pca(
        np.asarray(dense, dtype=np.float32), n_comps=n_pcs, svd_solver="arpack", random_state=seed
    )


def _kept(adata: ad.AnnData, cell_mask: np.ndarray, gene_ok: np.ndarray, counts: sp.csr_matrix) -> ad.AnnData:
    """The input restricted to the kept cells and genes, with ``counts`` as X (not copied).

    Everything but X is subset and copied as ``adata[cell_mask][:, gene_ok].copy()`` would; X is left out of
    that copy because ``counts`` already holds it.
    """
    shell = ad.AnnData(
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=adata.obsm,
        varm=adata.varm,
        obsp=adata.obsp,
        varp=adata.varp,
        layers=dict(adata.layers),
    )
    kept = shell[cell_mask][:, gene_ok].copy()
    kept.X = counts
    return kept
