"""Dot plot and heat map of the top markers per cluster (scanpy plots, Matplotlib Agg, atomic writes)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..data.io import atomic_path
from .markers import _GROUP, prepare_groups, top_markers

FORMATS = ("png", "svg")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix[1:])


def _save_formats(fig, base: Path) -> list[Path]:
    """Save ``fig`` as ``base``.png and .svg (:data:`FORMATS`), then close it; the paths written."""
    written = []
    for fmt in FORMATS:
        path = base.parent / f"{base.name}.{fmt}"
        _save(fig, path)
        written.append(path)
    plt.close(fig)
    return written


def marker_plots(
    lognorm: ad.AnnData,
    markers: pd.DataFrame,
    cluster_key: str,
    out: str | Path,
    top: int = 10,
    stem: str = "markers",
) -> list[Path]:
    """Write ``{stem}_dotplot.{png,svg}`` and ``{stem}_heatmap.{png,svg}`` of the ``top`` markers per cluster.

    Args:
        lognorm: log-normalised AnnData (N × G) with ``obs[cluster_key]`` (what the markers were ranked on).
        markers: a :func:`scsc.annotate.find_markers` table.
    Returns:
        The paths written.
    """
    import scanpy as sc

    out = Path(out)
    sub, testable, _ = prepare_groups(lognorm, cluster_key)
    sub = sub[sub.obs[_GROUP].isin(testable)].copy()
    sub.obs[_GROUP] = sub.obs[_GROUP].cat.remove_unused_categories()
    sub.obs[cluster_key] = sub.obs[_GROUP]
    genes = {
        c: [g for g in gs if g in sub.var_names]
        for c, gs in top_markers(markers, top).items()
        if c in testable
    }
    genes = {c: gs for c, gs in genes.items() if gs}
    written = []

    dp = sc.pl.dotplot(
        sub,
        var_names=genes,
        groupby=cluster_key,
        standard_scale="var",
        show=False,
        return_fig=True,
        title=f"top {top} markers per cluster",
    )
    dp.make_figure()
    written += _save_formats(dp.fig, out / f"{stem}_dotplot")

    axes = sc.pl.heatmap(
        sub,
        var_names=genes,
        groupby=cluster_key,
        standard_scale="var",
        show=False,
        cmap="viridis",
        dendrogram=False,
    )
    written += _save_formats(next(iter(axes.values())).figure, out / f"{stem}_heatmap")
    return written
