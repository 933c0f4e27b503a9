"""Cell-type annotation of clusters from marker gene sets (cell type → genes).

Every cluster is scored against every set in two ways:

* **enrichment** – hypergeometric test of the overlap between the cluster's top up-regulated markers and
  the set (universe: every tested gene), Benjamini–Hochberg over all cluster × set pairs;
* **per-cell set score** – scanpy ``score_genes`` (mean log expression of the set minus a matched control
  set) for every cell; each cell votes for its highest-scoring set when that score is positive.

The best type of a cluster is the set with the highest mean per-cell score; its **confidence** is the
fraction of the cluster's cells voting for it. A cluster is ``unassigned`` when the confidence is below
``min_confidence`` or the set is not enriched among the cluster's top markers (adjusted p ≥ ``alpha``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ._common import CLUSTER_KEY, check_clustered, cluster_labels, has_gene_names, log_normalize

UNASSIGNED = "unassigned"
MARKER_FORMATS = (".toml", ".json", ".csv", ".tsv", ".txt", ".gmt")
_TYPE_COLS = {"cell_type", "celltype", "cell type", "cell-type", "type", "label", "cell_label", "set", "name"}
_GENE_COLS = {
    "gene",
    "genes",
    "marker",
    "markers",
    "gene_symbol",
    "symbol",
    "official gene symbol",
    "gene_name",
    "marker_gene",
    "marker_genes",
}


# --------------------------------------------------------------------------- marker files
def read_marker_sets(path: str | Path) -> dict[str, list[str]]:
    """Read marker sets (cell type → genes) from TOML, JSON, CSV/TSV or GMT.

    * TOML / JSON: a mapping ``type = ["GENE1", "GENE2"]`` (a string "GENE1, GENE2" also works), at the top
      level or inside one table such as ``[markers]``.
    * CSV / TSV: with a header naming a type column (``cell_type``/``type``/…) and a gene column
      (``gene``/``marker``/``symbol``/…), one gene per row (other columns are ignored); or without a
      header, rows ``type,gene`` or ``type,gene1,gene2,…``.
    * GMT: ``name<TAB>description<TAB>gene1<TAB>gene2…`` per line.

    Genes are de-duplicated per set in file order; sets without genes are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: marker file not found")
    name = path.name.lower()
    if name.endswith(".toml"):
        sets = _read_mapping(path, "toml")
    elif name.endswith(".json"):
        sets = _read_mapping(path, "json")
    elif name.endswith(".gmt"):
        sets = _read_gmt(path)
    elif name.endswith((".csv", ".tsv", ".txt")):
        sets = _read_table(path)
    else:
        raise InputError(f"{path}: unknown marker file format (expected {', '.join(MARKER_FORMATS)})")
    clean: dict[str, list[str]] = {}
    for cell_type, genes in sets.items():
        cell_type = str(cell_type).strip()
        uniq = list(dict.fromkeys(g.strip() for g in genes if g and g.strip()))
        if cell_type and uniq:
            clean.setdefault(cell_type, [])
            clean[cell_type] = list(dict.fromkeys(clean[cell_type] + uniq))
    if not clean:
        raise InputError(f"{path}: no marker sets found (expected cell type → list of genes)")
    return clean


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (UTF-8 expected)") from None


def _split_genes(value, path: Path, key: str) -> list[str]:
    if isinstance(value, str):
        return [g for g in re.split(r"[,;\s]+", value) if g]
    if isinstance(value, (list, tuple)) and all(isinstance(g, (str, int)) for g in value):
        return [str(g) for g in value]
    raise InputError(f"{path}: marker set {key!r} must be a list of gene names")


def _read_mapping(path: Path, kind: str) -> dict[str, list[str]]:
    text = _read_text(path)
    try:
        if kind == "toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 (any parser error becomes an InputError naming the file)
        raise InputError(f"{path}: cannot parse as {kind.upper()} ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of cell type → genes at the top level")
    if len(data) == 1 and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))
    return {str(k): _split_genes(v, path, str(k)) for k, v in data.items()}


def _read_gmt(path: Path) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    for i, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n\r").split("\t")
        if len(parts) < 3:
            raise InputError(f"{path}: line {i} is not GMT (name<TAB>description<TAB>genes…)")
        sets.setdefault(parts[0], []).extend(parts[2:])
    return sets


def _read_table(path: Path) -> dict[str, list[str]]:
    text = _read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return {}
    delim = "\t" if "\t" in lines[0] else ","
    rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delim)]
    header = [c.lower() for c in rows[0]]
    t_col = next((i for i, c in enumerate(header) if c in _TYPE_COLS), None)
    g_col = next((i for i, c in enumerate(header) if c in _GENE_COLS), None)
    sets: dict[str, list[str]] = {}
    if t_col is not None and g_col is not None:
        for r in rows[1:]:
            if len(r) > max(t_col, g_col) and r[t_col]:
                sets.setdefault(r[t_col], []).extend(_split_genes(r[g_col], path, r[t_col]))
        return sets
    if len(rows[0]) < 2:
        raise InputError(f"{path}: expected columns cell_type,gene (or rows type,gene1,gene2,…)")
    for r in rows:
        if r and r[0]:
            for g in r[1:]:
                sets.setdefault(r[0], []).extend(_split_genes(g, path, r[0]))
    return sets


def match_marker_sets(sets: dict[str, list[str]], var_names) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Match marker genes to the data's gene names: exactly, else ignoring case when that is unambiguous.

    Returns:
        (one row per (cell_type, gene) with ``found`` and the matched ``data_gene``; the missing genes per
        cell type).
    """
    names = [str(g) for g in var_names]
    exact = set(names)
    upper: dict[str, str | None] = {}
    for g in names:
        key = g.upper()
        upper[key] = None if key in upper and upper[key] != g else g
    rows, missing = [], {}
    for cell_type, genes in sets.items():
        for g in genes:
            hit = g if g in exact else upper.get(g.upper())
            rows.append({"cell_type": cell_type, "gene": g, "found": hit is not None, "data_gene": hit or ""})
            if hit is None:
                missing.setdefault(cell_type, []).append(g)
    return pd.DataFrame(rows, columns=["cell_type", "gene", "found", "data_gene"]), missing


# --------------------------------------------------------------------------- annotation
@dataclass
class Annotation:
    """What :func:`annotate_clusters` found.

    Attributes:
        clusters: one row per cluster (``annotation.csv``): cluster, n_cells, cell_type (or ``unassigned``),
            best_match, confidence, mean_score, overlap, overlap_genes, enrichment_p, enrichment_padj,
            second_best, second_confidence, reason.
        scores: one row per cluster × cell type with every statistic (``annotation_scores.csv``).
        cell_scores: N × T per-cell set scores (rows: ``adata.obs_names``; NaN for cells without cluster).
        genes: one row per marker gene: cell_type, gene, found, data_gene (``marker_genes.csv``).
        missing: marker genes not in the data, per cell type.
    """

    clusters: pd.DataFrame
    scores: pd.DataFrame
    cell_scores: pd.DataFrame
    genes: pd.DataFrame
    missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_missing(self) -> int:
        return int(sum(len(v) for v in self.missing.values()))


@dataclass(frozen=True)
class AnnotationOptions:
    """Rarely changed settings of :func:`annotate_clusters`.

    Attributes:
        n_top: top up-regulated markers per cluster (log2 fold change > 0, adjusted p < ``alpha`` where
            the method gives p-values) used for the enrichment test.
        alpha: significance level of the enrichment (BH-adjusted over all cluster × type pairs).
        key_added: obs column that receives the cell types (and ``key_added + "_confidence"``).
        seed: random state of the control genes of the per-cell set scores (and of the marker test).
    """

    n_top: int = 100
    alpha: float = 0.05
    key_added: str = "scsc_cell_type"
    seed: int = 0


def _checked_inputs(
    adata: ad.AnnData, marker_sets: dict[str, list[str]] | str | Path, cluster_key: str, layer: str | None
) -> dict[str, list[str]]:
    """The marker sets (read from their file unless given as a dict), once ``adata`` is checked to be
    clustered, to hold ``layer`` and to name its genes."""
    if not isinstance(marker_sets, dict):
        marker_sets = read_marker_sets(marker_sets)
    check_clustered(adata, cluster_key, layer)
    if not has_gene_names(adata):
        raise InputError(
            "the data have no gene names (genes are indices only, as in the shared .h5 files), "
            "so marker sets cannot be matched to genes; use data with gene names"
        )
    return marker_sets


def _uns_record(
    cluster_key: str,
    min_confidence: float,
    options: AnnotationOptions,
    types: list[str],
    missing: dict[str, list[str]],
    sets_without_genes: list[str],
) -> dict[str, Any]:
    """``uns["scsc_annotation"]``: the settings, the cell types scored, and the marker genes not found."""
    return {
        "cluster_key": cluster_key,
        "min_confidence": float(min_confidence),
        "alpha": float(options.alpha),
        "n_top": int(options.n_top),
        "cell_types": types,
        "missing_genes": {t: list(v) for t, v in missing.items()},
        "sets_without_genes": sets_without_genes,
    }


def annotate_clusters(
    adata: ad.AnnData,
    marker_sets: dict[str, list[str]] | str | Path,
    cluster_key: str = CLUSTER_KEY,
    *,
    markers: pd.DataFrame | None = None,
    min_confidence: float = 0.5,
    layer: str | None = None,
    lognorm: ad.AnnData | None = None,
    options: AnnotationOptions = AnnotationOptions(),
) -> Annotation:
    """Assign a cell type to every cluster of ``adata`` from marker gene sets.

    Args:
        adata: N cells × G genes with gene names, raw counts in ``X`` (or ``layers[layer]``) and clusters
            in ``obs[cluster_key]``. Changed in place: ``obs[options.key_added]`` (categorical cell type per
            cell, ``unassigned`` for low-confidence clusters), ``obs[options.key_added + "_confidence"]``,
            ``obsm["scsc_marker_scores"]`` (N × T per-cell set scores) and ``uns["scsc_annotation"]``.
        marker_sets: cell type → genes, or a marker file (see :func:`read_marker_sets`).
        markers: a :func:`scsc.annotate.find_markers` table for the same clusters (computed with Wilcoxon
            when None).
        min_confidence: clusters whose confidence (fraction of their cells voting for the best type) is
            below this are ``unassigned``.
        options: enrichment (``n_top``, ``alpha``), output column and seed (:class:`AnnotationOptions`).

    Returns:
        An :class:`Annotation` (tables for ``annotation.csv`` and friends; missing marker genes).
    """
    marker_sets = _checked_inputs(adata, marker_sets, cluster_key, layer)
    genes_table, missing = match_marker_sets(marker_sets, adata.var_names)
    if lognorm is None:
        lognorm, _ = log_normalize(adata, layer)
    used, n_universe = _usable_genes(marker_sets, genes_table, lognorm)
    types = [t for t in marker_sets if used[t]]
    if markers is None:
        from .markers import find_markers

        markers = find_markers(
            adata, cluster_key, lognorm=lognorm, n_genes=options.n_top, key_added=None, seed=options.seed
        )
    groups = cluster_labels(adata, cluster_key)
    cell_scores, votes = _cell_scores(lognorm, np.asarray(groups.codes), types, used, options.seed)
    cell_df = pd.DataFrame(cell_scores, index=adata.obs_names, columns=types)
    tops = {str(c): _top_genes(markers, str(c), options.n_top, options.alpha) for c in groups.categories}
    scores = _score_table(groups, tops, cell_scores, votes, types, used, marker_sets, n_universe)
    clusters = pd.DataFrame(
        [
            _call_cluster(scores[scores["cluster"] == str(c)], min_confidence, options.alpha)
            for c in groups.categories
        ]
    )
    _label_cells(adata, groups, clusters, cell_df, options.key_added)
    unused = [t for t in marker_sets if not used[t]]
    adata.uns["scsc_annotation"] = _uns_record(cluster_key, min_confidence, options, types, missing, unused)
    return Annotation(
        clusters=clusters, scores=scores, cell_scores=cell_df, genes=genes_table, missing=missing
    )


def _usable_genes(
    marker_sets: dict[str, list[str]], genes_table: pd.DataFrame, lognorm: ad.AnnData
) -> tuple[dict[str, list[str]], int]:
    """The data genes of every set that are expressed in some cell, and the number of expressed genes.

    The expressed genes are the universe of the enrichment test; raises :class:`InputError` when no set keeps
    a gene.
    """
    expressed = np.asarray((lognorm.X > 0).sum(axis=0)).ravel() > 0
    universe = set(lognorm.var_names[expressed])
    used = {
        t: list(dict.fromkeys(genes_table.loc[(genes_table.cell_type == t) & genes_table.found, "data_gene"]))
        for t in marker_sets
    }
    used = {t: [g for g in gs if g in universe] for t, gs in used.items()}
    if not any(used.values()):
        raise InputError(
            "none of the marker genes is expressed in the data "
            f"({len(genes_table)} genes in {len(marker_sets)} sets; check species and naming)"
        )
    return used, len(universe)


def _cell_scores(
    lognorm: ad.AnnData, codes: np.ndarray, types: list[str], used: dict[str, list[str]], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell set scores (N × T, NaN for cells without cluster) and each cell's vote (N,).

    A cell votes for the column of its highest score when that score is positive, else -1 (as do cells
    without cluster).
    """
    has_cluster = codes >= 0
    cell_scores = np.full((len(codes), len(types)), np.nan)
    sub = lognorm[has_cluster].copy() if not has_cluster.all() else lognorm
    for j, t in enumerate(types):
        cell_scores[has_cluster, j] = _set_score(sub, used[t], seed)
    valid = cell_scores[has_cluster]
    best_cell = np.where(np.nanmax(valid, axis=1) > 0, np.nanargmax(valid, axis=1), -1)
    votes = np.full(len(codes), -1)
    votes[has_cluster] = best_cell
    return cell_scores, votes


def _top_genes(markers: pd.DataFrame, cluster: str, n_top: int, alpha: float) -> list[str]:
    """The first ``n_top`` up-regulated markers of ``cluster`` (significant ones where there are p-values)."""
    top = markers[(markers["cluster"].astype(str) == cluster) & (markers["log2_fold_change"] > 0)]
    if top["pval_adj"].notna().any():
        top = top[top["pval_adj"] < alpha]
    return top.sort_values("rank")["gene"].head(n_top).tolist()


def _score_table(
    groups: pd.Categorical,
    tops: dict[str, list[str]],
    cell_scores: np.ndarray,
    votes: np.ndarray,
    types: list[str],
    used: dict[str, list[str]],
    marker_sets: dict[str, list[str]],
    n_universe: int,
) -> pd.DataFrame:
    """One row per cluster × cell type: mean set score, vote fraction and enrichment among the top markers.

    The hypergeometric p-values are BH-adjusted over all rows (``enrichment_padj``).
    """
    from scipy.stats import hypergeom

    codes = np.asarray(groups.codes)
    rows = []
    for c_idx, c in enumerate(groups.categories):
        in_c = codes == c_idx
        n_c = int(in_c.sum())
        top_genes = tops[str(c)]
        for j, t in enumerate(types):
            s = set(used[t])
            hits = [g for g in top_genes if g in s]
            p = float(hypergeom.sf(len(hits) - 1, n_universe, len(s), len(top_genes))) if top_genes else 1.0
            rows.append(
                {
                    "cluster": str(c),
                    "cell_type": t,
                    "n_cells": n_c,
                    "mean_score": float(np.mean(cell_scores[in_c, j])) if n_c else np.nan,
                    "vote_fraction": float(np.mean(votes[in_c] == j)) if n_c else 0.0,
                    "set_size": len(marker_sets[t]),
                    "genes_in_data": len(s),
                    "top_markers": len(top_genes),
                    "overlap": len(hits),
                    "overlap_genes": ";".join(hits),
                    "enrichment_p": min(p, 1.0),
                }
            )
    scores = pd.DataFrame(rows)
    scores["enrichment_padj"] = _bh(scores["enrichment_p"].to_numpy())
    return scores


def _call_cluster(part: pd.DataFrame, min_confidence: float, alpha: float) -> dict:
    """The ``annotation.csv`` row of one cluster from its rows of the score table.

    The best type is the one with the highest mean score; the cluster stays ``unassigned`` (with the reasons)
    when too few cells vote for it or its markers are not enriched.
    """
    part = part.sort_values("mean_score", ascending=False, na_position="last")
    best = part.iloc[0]
    second = part.iloc[1] if len(part) > 1 else None
    conf = float(best["vote_fraction"])
    reasons = []
    if conf < min_confidence:
        reasons.append(f"confidence {conf:.2f} < {min_confidence:g}")
    if not best["enrichment_padj"] < alpha:
        reasons.append(
            f"{best['cell_type']} markers not enriched among the top markers "
            f"(adj. p {best['enrichment_padj']:.2g})"
        )
    return {
        "cluster": str(best["cluster"]),
        "n_cells": int(best["n_cells"]),
        "cell_type": UNASSIGNED if reasons else best["cell_type"],
        "best_match": best["cell_type"],
        "confidence": conf,
        "mean_score": float(best["mean_score"]),
        "overlap": int(best["overlap"]),
        "overlap_genes": best["overlap_genes"],
        "enrichment_p": float(best["enrichment_p"]),
        "enrichment_padj": float(best["enrichment_padj"]),
        "second_best": "" if second is None else second["cell_type"],
        "second_confidence": np.nan if second is None else float(second["vote_fraction"]),
        "reason": "; ".join(reasons),
    }


def _label_cells(
    adata: ad.AnnData, groups: pd.Categorical, clusters: pd.DataFrame, cell_df: pd.DataFrame, key_added: str
) -> None:
    """Write each cell's cluster type and confidence to ``obs`` and the N × T set scores to ``obsm``."""
    codes = np.asarray(groups.codes)
    assigned = dict(zip(clusters["cluster"], clusters["cell_type"], strict=True))
    confidence = dict(zip(clusters["cluster"], clusters["confidence"], strict=True))
    labels = np.array([assigned[str(groups.categories[k])] if k >= 0 else None for k in codes], dtype=object)
    cats = list(dict.fromkeys([t for t in clusters["cell_type"] if t != UNASSIGNED]))
    if (clusters["cell_type"] == UNASSIGNED).any():
        cats.append(UNASSIGNED)
    adata.obs[key_added] = pd.Categorical(labels, categories=cats)
    adata.obs[f"{key_added}_confidence"] = np.array(
        [confidence[str(groups.categories[k])] if k >= 0 else np.nan for k in codes], dtype=np.float32
    )
    adata.obsm["scsc_marker_scores"] = cell_df


def _set_score(lognorm: ad.AnnData, genes: list[str], seed: int) -> np.ndarray:
    """scanpy ``score_genes`` (set mean minus matched controls); set mean minus cell mean as a fallback."""
    import scanpy as sc

    try:
        scored = sc.tl.score_genes(
            lognorm, genes, ctrl_size=50, random_state=seed, copy=True, use_raw=False, score_name="_s"
        )
        return scored.obs["_s"].to_numpy(dtype=np.float64)
    except Exception:  # noqa: BLE001 (tiny gene universes: score_genes cannot bin the controls)
        x = lognorm.X
        idx = lognorm.var_names.get_indexer(genes)
        return np.asarray(x[:, idx].mean(axis=1)).ravel() - np.asarray(x.mean(axis=1)).ravel()


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(ranked, 0, 1)
    return out
