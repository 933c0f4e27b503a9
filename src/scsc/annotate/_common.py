"""Shared helpers: reading a clustered AnnData, log-normalisation (METHOD §1), gene-name checks."""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.io import looks_like_counts
from ..errors import InputError

#: The obs column that ``scsc cluster`` writes and ``scsc annotate`` reads by default.
CLUSTER_KEY = "scsc_cluster"

_PLACEHOLDER = re.compile(r"^(gene)?\d+$", re.IGNORECASE)


def has_gene_names(adata: ad.AnnData) -> bool:
    """False when genes are only indices (``uns["scsc_gene_names"]`` False, or names ``gene17`` / ``17``)."""
    flag = adata.uns.get("scsc_gene_names", None)
    if flag is not None and not bool(flag):
        return False
    names = adata.var_names
    return len(names) == 0 or not all(_PLACEHOLDER.match(str(g)) for g in names)


def read_result(path: str | Path, cluster_key: str = CLUSTER_KEY, layer: str | None = None) -> ad.AnnData:
    """Read a clustered ``.h5ad`` (a ``scsc cluster`` result or any scanpy AnnData) and check it.

    Returns the AnnData as stored (nothing is changed), after checking that ``obs[cluster_key]`` exists and
    that the expression (``X`` or ``layers[layer]``) is finite and non-negative.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() or not path.name.lower().endswith(".h5ad"):
        raise InputError(f"{path}: expected an .h5ad file (result.h5ad of scsc cluster, or a scanpy AnnData)")
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 (h5py/anndata raise assorted errors on bad files)
        raise InputError(f"{path}: cannot read as .h5ad ({type(exc).__name__})") from None
    check_clustered(adata, cluster_key, layer, where=str(path))
    return adata


def check_clustered(
    adata: ad.AnnData, cluster_key: str, layer: str | None = None, where: str = "input"
) -> None:
    """Raise :class:`InputError` unless ``adata`` has ≥ 2 clusters in ``obs[cluster_key]`` and sane values."""
    if cluster_key not in adata.obs:
        hint = (
            (
                " (is this a scsc cluster result? for another AnnData name the cluster column with "
                "--cluster-key, e.g. leiden)"
            )
            if cluster_key == CLUSTER_KEY
            else ""
        )
        cols = ", ".join(map(str, adata.obs.columns)) or "none"
        raise InputError(f"{where}: no obs column {cluster_key!r}{hint}; obs columns: {cols}")
    n_groups = adata.obs[cluster_key].dropna().nunique()
    if n_groups < 2:
        raise InputError(
            f"{where}: obs[{cluster_key!r}] has {n_groups} cluster(s); marker genes need at least 2"
        )
    if layer is not None and layer not in adata.layers:
        raise InputError(f"{where}: no layer {layer!r}; layers: {', '.join(adata.layers.keys()) or 'none'}")
    x = adata.layers[layer] if layer is not None else adata.X
    if x is None:
        raise InputError(f"{where}: .X is empty; name the counts layer with --layer")
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{where}: expression holds non-numeric values ({data.dtype})")
    if data.size and not np.isfinite(data).all():
        raise InputError(f"{where}: expression contains NaN or infinite values")
    if data.size and data.min() < 0:
        raise InputError(
            f"{where}: expression contains negative values (scaled data?); annotate needs "
            "counts or log-normalised expression (use --layer)"
        )


def cluster_labels(adata: ad.AnnData, cluster_key: str) -> pd.Categorical:
    """``obs[cluster_key]`` as a categorical of strings (unused categories dropped; NaN stays NaN)."""
    col = adata.obs[cluster_key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.remove_unused_categories().cat.categories]
        values = col.astype(object).where(col.notna(), None)
        return pd.Categorical([None if v is None else str(v) for v in values], categories=cats)
    values = col.to_numpy()
    mask = pd.isna(values)
    strs = np.array([str(v) for v in values], dtype=object)
    cats = sorted(set(strs[~mask]), key=_natural_key)
    strs[mask] = None
    return pd.Categorical(strs, categories=cats)


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def size_factor_log1p(
    x: sp.spmatrix | np.ndarray, target: float | None = None
) -> tuple[sp.csr_matrix, float]:
    """METHOD §1 normalisation: divide each cell by s_i = total_i / target and take ``log1p``.

    Args:
        x: counts, N × G (sparse or dense).
        target: library size every cell is scaled to; default the median total of ``x`` (s_i = total_i /
            median). Cells with no counts are left at zero.

    Returns:
        (log-normalised float32 CSR matrix N × G, the target used).
    """
    m = sp.csr_matrix(x, dtype=np.float32)
    totals = np.asarray(m.sum(axis=1)).ravel().astype(np.float64)
    if target is None:
        pos = totals[totals > 0]
        target = float(np.median(pos)) if pos.size else 1.0
    scale = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    out = sp.diags(scale.astype(np.float32)).dot(m).tocsr().astype(np.float32)
    out.data = np.log1p(out.data)
    return out, float(target)


def log_normalize(
    adata: ad.AnnData, layer: str | None = None, target: float | None = None
) -> tuple[ad.AnnData, bool]:
    """Log-normalised copy of ``adata`` (N × G, all genes) for marker tests and scores.

    Raw counts (every value a non-negative integer) are normalised with size factors and ``log1p``
    (METHOD §1); any other non-negative values are taken as already log-normalised. ``obs`` and ``var`` are
    copied, ``uns`` is not.

    Returns:
        (the AnnData with float32 CSR ``X``, True when the input was raw counts).
    """
    x = adata.layers[layer] if layer is not None else adata.X
    probe = ad.AnnData(X=sp.csr_matrix(x))
    counts = looks_like_counts(probe)
    if counts:
        lx, _ = size_factor_log1p(x, target)
    else:
        lx = sp.csr_matrix(x, dtype=np.float32)
    out = ad.AnnData(X=lx, obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names.copy()))
    out.uns["log1p"] = {"base": None}
    return out, counts
