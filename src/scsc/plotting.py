"""Figures written beside every run: UMAP of the embedding and loss curves per term."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .data.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix[1:])
    plt.close(fig)


#: Up to this many cells the UMAP neighbours are exact (scikit-learn); approximate above.
UMAP_EXACT_MAX_CELLS = 50_000


def umap_plot(adata: ad.AnnData, path: str | Path, seed: int = 0) -> None:
    """UMAP of ``obsm["X_scsc"]`` coloured by cluster (and by true label when ``obs["label"]`` exists)."""
    import scanpy as sc

    tmp = ad.AnnData(X=np.zeros((adata.n_obs, 1), dtype=np.float32), obs=adata.obs.copy())
    tmp.obsm["X_scsc"] = adata.obsm["X_scsc"]
    # Exact kNN (scikit-learn) below the size where it gets slow: it skips pynndescent's numba compilation,
    # which cost more than the whole UMAP on a few thousand cells. 200 layout epochs are umap-learn's own
    # choice for large data; its 500 for small data took twice as long for a figure.
    exact = adata.n_obs <= UMAP_EXACT_MAX_CELLS
    sc.pp.neighbors(tmp, use_rep="X_scsc", n_neighbors=15, random_state=seed,
                    **({"transformer": "sklearn"} if exact else {}))
    sc.tl.umap(tmp, random_state=seed, maxiter=200)
    adata.obsm["X_umap"] = tmp.obsm["X_umap"]
    keys = ["scsc_cluster"] + (["label"] if "label" in adata.obs else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        cats = pd.Categorical(adata.obs[key])
        cmap = plt.get_cmap("tab20", max(len(cats.categories), 1))
        xy = tmp.obsm["X_umap"]
        for i, cat in enumerate(cats.categories):
            m = np.asarray(cats == cat)
            ax.scatter(xy[m, 0], xy[m, 1], s=3, color=cmap(i), label=str(cat), rasterized=True)
        ax.set_title({"scsc_cluster": "scsc clusters", "label": "true labels"}[key])
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
    for ax, stage in zip(axes[0], stages):
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
