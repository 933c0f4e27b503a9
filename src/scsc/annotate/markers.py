"""Marker genes per cluster with scanpy's ``rank_genes_groups`` on log-normalised expression of all genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError, InputError
from ._common import CLUSTER_KEY, check_clustered, cluster_labels, log_normalize

#: ``--method`` choices → scanpy ``rank_genes_groups`` method names.
METHODS = {"wilcoxon": "wilcoxon", "t-test": "t-test", "logreg": "logreg"}

#: Columns of ``markers.csv`` (and of the DataFrame :func:`find_markers` returns).
MARKER_COLUMNS = [
    "cluster",
    "rank",
    "gene",
    "gene_index",
    "score",
    "log2_fold_change",
    "pval",
    "pval_adj",
    "pct_in",
    "pct_out",
]

_GROUP = "_scsc_group"


def prepare_groups(lognorm: ad.AnnData, cluster_key: str) -> tuple[ad.AnnData, list[str], list[str]]:
    """Cells with a cluster and genes with any expression, ready for ``rank_genes_groups``.

    Returns:
        (AnnData N' × G' with ``obs["_scsc_group"]``, the clusters that can be tested (≥ 2 cells), the
        clusters left out because they hold a single cell).
    """
    groups = cluster_labels(lognorm, cluster_key)
    keep = ~pd.isna(np.asarray(groups, dtype=object))
    sub = lognorm[keep].copy() if not keep.all() else lognorm.copy()
    sub.obs[_GROUP] = pd.Categorical(np.asarray(groups, dtype=object)[keep], categories=groups.categories)
    expressed = np.asarray((sub.X > 0).sum(axis=0)).ravel() > 0
    if not expressed.any():
        raise InputError("no gene is expressed in any clustered cell")
    if not expressed.all():
        sub = sub[:, expressed].copy()
    sizes = sub.obs[_GROUP].value_counts()
    testable = [str(c) for c in groups.categories if sizes.get(c, 0) >= 2]
    single = [str(c) for c in groups.categories if sizes.get(c, 0) == 1]
    if len(testable) < 2:
        raise InputError(
            f"obs[{cluster_key!r}] has fewer than 2 clusters with at least 2 cells; "
            "marker genes need at least 2"
        )
    return sub, testable, single


def find_markers(
    adata: ad.AnnData,
    cluster_key: str = CLUSTER_KEY,
    *,
    method: str = "wilcoxon",
    n_genes: int | None = 100,
    layer: str | None = None,
    lognorm: ad.AnnData | None = None,
    key_added: str | None = "scsc_markers",
    seed: int = 0,
) -> pd.DataFrame:
    """Rank marker genes of every cluster against all other cells (scanpy ``rank_genes_groups``).

    Expression is log-normalised first (size factors over the median, ``log1p``: METHOD §1) and every gene
    with any count is tested, not only highly variable ones.

    Args:
        adata: N cells × G genes, raw counts in ``X`` (or ``layers[layer]``; log-normalised values are used
            as they are), clusters in ``obs[cluster_key]``.
        cluster_key: obs column with the clusters (``scsc_cluster``, or e.g. ``leiden``).
        method: ``wilcoxon`` (default), ``t-test`` or ``logreg``. ``logreg`` gives coefficients as scores
            and no p-values (``pval``/``pval_adj`` are NaN).
        n_genes: rows kept per cluster, best first (None or 0: all tested genes).
        lognorm: the output of :func:`scsc.annotate.log_normalize` for ``adata``, to avoid recomputing it.
        key_added: store scanpy's result dict in ``adata.uns[key_added]`` (None: do not store).
        seed: random state of the ``logreg`` classifier.

    Returns:
        DataFrame of ``n_genes`` × K rows with columns ``cluster``, ``rank`` (1 = best), ``gene``,
        ``gene_index`` (column of ``adata``), ``score``, ``log2_fold_change`` (mean expression in the
        cluster over the rest), ``pval``, ``pval_adj`` (Benjamini–Hochberg), ``pct_in`` and ``pct_out``
        (fraction of cells with a non-zero count in / outside the cluster). Its ``attrs`` hold
        ``n_genes_tested`` and ``single_cell_clusters`` (clusters left out: one cell cannot be tested).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown marker method {method!r}; choose one of {', '.join(METHODS)}")
    check_clustered(adata, cluster_key, layer)
    if lognorm is None:
        lognorm, _ = log_normalize(adata, layer)
    sub, testable, single = prepare_groups(lognorm, cluster_key)
    rgg = _rank_genes(sub, testable, single, method, seed)
    table = _marker_table(rgg, sub, testable, pd.Index(adata.var_names), method)
    if n_genes:
        table = table[table["rank"] <= n_genes].reset_index(drop=True)
    table["cluster"] = pd.Categorical(table["cluster"], categories=testable)
    table = table[MARKER_COLUMNS]
    if key_added:
        adata.uns[key_added] = _scanpy_dict(table, method, cluster_key)
    table.attrs["n_genes_tested"] = int(sub.n_vars)
    table.attrs["single_cell_clusters"] = single
    table.attrs["method"] = method
    return table


def _rank_genes(sub: ad.AnnData, testable: list[str], single: list[str], method: str, seed: int) -> dict:
    """scanpy's ``rank_genes_groups`` dict: every testable cluster against the rest, all G' genes ranked."""
    import scanpy as sc

    kwds = {"max_iter": 1000, "random_state": seed} if method == "logreg" else {}
    if method == "wilcoxon":
        kwds["tie_correct"] = True
    sc.tl.rank_genes_groups(
        sub,
        _GROUP,
        groups=testable if single else "all",
        reference="rest",
        method=METHODS[method],
        n_genes=sub.n_vars,
        use_raw=False,
        key_added="rgg",
        **kwds,
    )
    return sub.uns["rgg"]


def _marker_table(
    rgg: dict, sub: ad.AnnData, testable: list[str], var_names: pd.Index, method: str
) -> pd.DataFrame:
    """Every ranked gene of every testable cluster (K × G' rows, ``MARKER_COLUMNS``) with its statistics.

    ``gene_index`` is the gene's column in ``var_names`` (the caller's genes, not only the expressed ones).
    """
    names = rgg["names"]
    col_index = var_names.get_indexer(sub.var_names)
    pos = {g: i for i, g in enumerate(sub.var_names)}
    x = sp.csr_matrix(sub.X)
    grp = sub.obs[_GROUP].to_numpy()
    binary = _binary_logreg(rgg, testable, x, grp, pos) if method == "logreg" and len(testable) == 2 else None
    frames = []
    for g in testable:
        if binary is not None:
            genes, scores = binary[g]
        else:
            genes = np.asarray(names[g], dtype=object)
            scores = np.asarray(rgg["scores"][g], dtype=np.float64)
        nan = np.full(len(genes), np.nan)
        pvals = np.asarray(rgg["pvals"][g], dtype=np.float64) if "pvals" in rgg else nan
        padj = np.asarray(rgg["pvals_adj"][g], dtype=np.float64) if "pvals_adj" in rgg else nan
        idx = np.array([pos[n] for n in genes])
        inside = grp == g
        lfc, pin, pout = _group_stats(x, inside)
        frames.append(
            pd.DataFrame(
                {
                    "cluster": g,
                    "rank": np.arange(1, len(genes) + 1),
                    "gene": genes.astype(str),
                    "gene_index": col_index[idx],
                    "score": scores,
                    "log2_fold_change": lfc[idx],
                    "pval": pvals,
                    "pval_adj": padj,
                    "pct_in": pin[idx],
                    "pct_out": pout[idx],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _binary_logreg(
    rgg: dict, testable: list[str], x: sp.csr_matrix, grp: np.ndarray, pos: dict
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both clusters of a two-cluster ``logreg`` run, which fits one coefficient vector.

    scanpy reports that vector under one cluster's name whatever class it favours; which cluster it points
    to is read from its correlation with the difference of mean expression, and the other cluster gets
    the mirror image.
    """
    first = rgg["names"].dtype.names[0]
    genes = np.asarray(rgg["names"][first], dtype=object)
    scores = np.asarray(rgg["scores"][first], dtype=np.float64)
    idx = np.array([pos[n] for n in genes])
    a, b = testable
    diff = (np.asarray(x[grp == a].mean(axis=0)).ravel() - np.asarray(x[grp == b].mean(axis=0)).ravel())[idx]
    owner, other = (a, b) if np.corrcoef(scores, diff)[0, 1] >= 0 else (b, a)
    return {owner: (genes, scores), other: (genes[::-1], -scores[::-1])}


def _group_stats(x: sp.csr_matrix, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log2 fold change (as scanpy: expm1 of mean log expression, in over out) and non-zero fractions."""
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    xin, xout = x[inside], x[~inside]
    mean_in = np.asarray(xin.mean(axis=0)).ravel()
    mean_out = np.asarray(xout.mean(axis=0)).ravel() if n_out else np.zeros(x.shape[1])
    lfc = np.log2((np.expm1(mean_in) + 1e-9) / (np.expm1(mean_out) + 1e-9))
    pin = np.asarray((xin > 0).sum(axis=0)).ravel() / max(n_in, 1)
    pout = np.asarray((xout > 0).sum(axis=0)).ravel() / max(n_out, 1)
    return lfc, pin, pout


def _scanpy_dict(table: pd.DataFrame, method: str, cluster_key: str) -> dict:
    """The marker table in scanpy's ``uns["rank_genes_groups"]`` layout (record arrays, field = cluster)."""
    clusters = [str(c) for c in table["cluster"].cat.categories]
    n = int(table.groupby("cluster", observed=True).size().min())

    def rec(col, dtype):
        return np.rec.fromarrays(
            [table.loc[table["cluster"] == c, col].to_numpy()[:n].astype(dtype) for c in clusters],
            names=clusters,
        )

    out = {
        "params": {
            "groupby": cluster_key,
            "reference": "rest",
            "method": method,
            "use_raw": False,
            "layer": "log-normalised (size factors, log1p; not stored)",
            "corr_method": "benjamini-hochberg",
        },
        "names": rec("gene", object),
        "scores": rec("score", np.float32),
        "logfoldchanges": rec("log2_fold_change", np.float32),
    }
    if method != "logreg":
        out["pvals"] = rec("pval", np.float64)
        out["pvals_adj"] = rec("pval_adj", np.float64)
    return out


def top_markers(table: pd.DataFrame, n: int) -> dict[str, list[str]]:
    """The first ``n`` genes of every cluster of a :func:`find_markers` table (cluster → genes)."""
    out = {}
    for c in table["cluster"].cat.categories:
        part = table[(table["cluster"] == c) & (table["rank"] <= n)].sort_values("rank")
        out[str(c)] = part["gene"].tolist()
    return out
