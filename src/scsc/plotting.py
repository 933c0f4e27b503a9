"""Figures written beside every run: UMAP of the embedding and loss curves per term."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data.io import atomic_path
from .numba_cache import cache_umap_kernels


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix[1:])
    plt.close(fig)


#: Up to this many cells the UMAP neighbours are exact (scikit-learn); approximate above.
UMAP_EXACT_MAX_CELLS = 50_000
#: Above this many cells the UMAP is computed and drawn on a seeded random subsample of this many: a figure
#: shows no more, and UMAP of 1M cells would take longer than the rest of the figure-writing by far.
UMAP_MAX_CELLS = 50_000


def umap_plot(adata: ad.AnnData, path: str | Path, seed: int = 0) -> None:
    """UMAP of ``obsm["X_scsc"]`` (N × d) coloured by cluster (and by true label when ``obs["label"]`` exists).

    Above UMAP_MAX_CELLS cells only a random subsample of that many (seeded by ``seed``) is embedded and drawn,
    and the titles say so; ``obsm["X_umap"]`` (N × 2) is stored only when every cell was embedded.
    """
    import scanpy as sc

    keys = ["scsc_cluster"] + (["label"] if "label" in adata.obs else [])
    n = adata.n_obs
    rows = None
    if n > UMAP_MAX_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=UMAP_MAX_CELLS, replace=False))
    obs = adata.obs[keys] if rows is None else adata.obs[keys].iloc[rows]
    emb = adata.obsm["X_scsc"] if rows is None else np.asarray(adata.obsm["X_scsc"])[rows]
    tmp = ad.AnnData(X=np.zeros((len(obs), 1), dtype=np.float32), obs=obs.copy())
    tmp.obsm["X_scsc"] = emb
    # Exact kNN (scikit-learn) below the size where it gets slow: it skips pynndescent's numba compilation,
    # which cost more than the whole UMAP on a few thousand cells. 200 layout epochs are umap-learn's own
    # choice for large data; its 500 for small data took twice as long for a figure.
    exact = tmp.n_obs <= UMAP_EXACT_MAX_CELLS
    cache_umap_kernels()
    sc.pp.neighbors(
        tmp,
        use_rep="X_scsc",
        n_neighbors=15,
        random_state=seed,
        **({"transformer": "sklearn"} if exact else {}),
    )
    sc.tl.umap(tmp, random_state=seed, maxiter=200)
    xy = tmp.obsm["X_umap"]
    if rows is None:
        adata.obsm["X_umap"] = xy
    shown = "" if rows is None else f" ({tmp.n_obs:,} of {n:,} cells)"
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        # Categories of every cell, not only the drawn ones: the colours match a full figure.
        cats = pd.Categorical(obs[key], categories=pd.Categorical(adata.obs[key]).categories)
        cmap = plt.get_cmap("tab20", max(len(cats.categories), 1))
        for i, cat in enumerate(cats.categories):
            m = np.asarray(cats == cat)
            ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(i), label=str(cat), rasterized=True)
        ax.set_title({"scsc_cluster": "scsc clusters", "label": "true labels"}[key] + shown)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
        if len(cats.categories) <= 20:
            ax.legend(markerscale=4, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    _save(fig, Path(path))


def loss_plot(history: pd.DataFrame, path: str | Path) -> None:
    """One panel per stage, one curve per loss term (log scale)."""
    stages = list(dict.fromkeys(history["stage"]))
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        part = history[history["stage"] == stage]
        for col in part.columns:
            if col in {"stage", "epoch"}:
                continue
            vals = part[col].to_numpy(dtype=float)
            if np.isfinite(vals).any():
                ax.plot(part["epoch"], np.abs(vals), label=col, lw=1.2 if col != "total" else 2.0)
        ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6, frameon=False)
    axes[0][0].set_ylabel("loss (unweighted term)")
    _save(fig, Path(path))


def k_selection_plot(selection: dict, path: str | Path) -> None:
    """Score against K (``uns["scsc"]["k_selection"]``): connectivity of the most connected pair of clusters.

    Lower is better separated; the dashed line is the threshold, the chosen K is marked, and the title says
    whether the estimate is clear-cut (``selection["clear"]``, absent in results of earlier versions).
    """
    ks = np.asarray(selection["k_values"])
    scores = np.asarray(selection["scores"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ks, scores, "o-", color="0.3", ms=4, lw=1.2)
    ax.axhline(
        selection["threshold"], ls="--", color="tab:red", lw=1, label=f"threshold {selection['threshold']:g}"
    )
    k = int(selection["k"])
    if k in set(ks.tolist()):
        ax.plot(
            [k],
            [scores[list(ks).index(k)]],
            "o",
            color="tab:red",
            ms=9,
            mfc="none",
            mew=2,
            label=f"chosen K = {k}",
        )
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel("connectivity of the most\nconnected pair of clusters")
    clear = selection.get("clear")
    verdict = "" if clear is None else (": clear" if bool(clear) else ": not clear-cut")
    ax.set_title(f"Estimating K{verdict} (lower: clusters better separated)")
    ax.legend(fontsize=7, frameon=False)
    _save(fig, Path(path))


def k_tree_plot(obs: pd.DataFrame, keys: list[str], path: str | Path) -> None:
    """How clusters split as K grows (a clustering tree): one row per K, one node per cluster (area ∝ size),
    an edge between clusters of consecutive K values drawn with the share of cells they have in common.

    ``keys`` are ``obs`` columns of labels, ordered by increasing K.
    """
    fig, ax = plt.subplots(figsize=(7, 1.1 * len(keys) + 1))
    pos: list[dict] = []
    n = len(obs)
    for row, key in enumerate(keys):
        lab = pd.Categorical(obs[key])
        sizes = pd.Series(lab).value_counts().reindex(lab.categories, fill_value=0)
        order = list(sizes.index)
        if row > 0:  # place each cluster under the parent that holds most of its cells
            parent = pd.crosstab(pd.Categorical(obs[key]), pd.Categorical(obs[keys[row - 1]]))
            x_parent = {c: pos[-1][p] for p, c in zip(parent.idxmax(axis=1), parent.index, strict=True)}
            order = sorted(order, key=lambda c: (x_parent.get(c, 0.0), c))
        xs = {c: (i + 0.5) / len(order) for i, c in enumerate(order)}
        pos.append(xs)
        y = -row
        ax.scatter(
            [xs[c] for c in order],
            [y] * len(order),
            s=[1500 * sizes[c] / n + 10 for c in order],
            color="tab:blue",
            alpha=0.7,
            zorder=3,
        )
        ax.text(-0.04, y, key.replace("scsc_cluster_k", "K = "), ha="right", va="center", fontsize=8)
        if row > 0:
            tab = pd.crosstab(pd.Categorical(obs[keys[row - 1]]), pd.Categorical(obs[key]))
            for p in tab.index:
                for c in tab.columns:
                    share = tab.loc[p, c] / max(tab.loc[p].sum(), 1)
                    if share >= 0.05:
                        ax.plot(
                            [pos[-2][p], xs[c]],
                            [y + 1, y],
                            color="0.4",
                            lw=0.5 + 3 * share,
                            alpha=0.6,
                            zorder=1,
                        )
    ax.set_xlim(-0.2, 1.02)
    ax.axis("off")
    ax.set_title("How clusters split as K grows (edge width: share of the parent's cells)")
    _save(fig, Path(path))
