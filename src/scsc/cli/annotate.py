"""``scsc annotate``: marker genes per cluster, cell types from marker sets, reference label transfer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ScscError
from .app import app, console, err_console, print_json, user_errors

#: Every file ``scsc annotate`` may write; an earlier run's files are only replaced with --overwrite.
OUTPUT_FILES = (
    "annotated.h5ad", "markers.csv", "markers_dotplot.png", "markers_dotplot.svg", "markers_heatmap.png",
    "markers_heatmap.svg", "annotation.csv", "annotation_scores.csv", "marker_genes.csv", "transfer.csv",
    "transfer_clusters.csv", "cv.json", "cv_predictions.csv", "summary.json",
)


@app.command()
@user_errors
def annotate(
    result: Optional[Path] = typer.Argument(
        None, show_default=False, metavar="RESULT.h5ad",
        help="Clustered .h5ad: result.h5ad of scsc cluster, or any scanpy AnnData (see --cluster-key)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder (default: <RESULT folder>/annotate)."),
    cluster_key: str = typer.Option("scsc_cluster", "--cluster-key", help="obs column with the clusters."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Read counts from this layer instead of X."),
    method: str = typer.Option("wilcoxon", "--method", "-m", help="Marker test: wilcoxon | t-test | logreg."),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Top markers per cluster in the table and plots."),
    n_genes: int = typer.Option(100, "--n-genes", min=0,
                                help="Rows per cluster in markers.csv (0: all genes)."),
    markers: Optional[Path] = typer.Option(
        None, "--markers", help="Marker sets, cell type → genes (.toml, .json, .csv/.tsv, .gmt)."),
    min_confidence: float = typer.Option(
        0.5, "--min-confidence", min=0.0, max=1.0,
        help="Clusters whose confidence (share of cells voting for the best type) is lower are "
             "'unassigned'."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help="Labelled reference (.h5ad, or .h5 with Y) to transfer cell types from."),
    reference_key: str = typer.Option("cell_type", "--reference-key",
                                      help=".h5ad reference: obs column with the cell types."),
    cv: bool = typer.Option(False, "--cv", help="Report stratified 5-fold cross-validated accuracy and "
                            "macro-F1 of the classifier on the reference (RESULT may then be omitted)."),
    min_probability: float = typer.Option(
        0.0, "--min-probability", min=0.0, max=1.0,
        help="Transferred labels below this probability become 'unassigned'."),
    seed: int = typer.Option(0, "--seed", help="Random seed (control genes, PCA, classifier, folds)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the dot plot and heat map."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace the files of an earlier annotate run."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success (notes included)."),
) -> None:
    """Marker genes per cluster, cell types from marker sets, and label transfer from a reference.

    Writes to --out: markers.csv and the dot plot / heat map of the top markers (PNG and SVG);
    with --markers, annotation.csv, annotation_scores.csv and marker_genes.csv; with --reference,
    transfer.csv and transfer_clusters.csv; with --cv, cv.json and cv_predictions.csv; and
    annotated.h5ad (the input plus obs scsc_cell_type / scsc_transfer). The input file is never changed.

    Cross-validation alone:
    [bold]scsc annotate --reference REF.h5ad --reference-key cell_type --cv --out DIR[/]
    """
    from ..annotate import METHODS

    if method not in METHODS:
        raise ScscError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if cv and reference is None:
        raise ScscError("--cv needs --reference (the labelled data set to cross-validate on)")
    if result is None:
        if not (reference is not None and cv):
            raise ScscError("give a clustered RESULT.h5ad (or --reference REF --cv for cross-validation "
                            "alone)")
        if markers is not None:
            raise ScscError("--markers needs a clustered RESULT.h5ad to annotate")
    if out is None:
        out = result.parent / "annotate" if result is not None else Path(f"{reference.name.split('.')[0]}_cv")
    _check_out(out, overwrite, result)

    notes: list[str] = []
    summary: dict[str, Any] = {"out": str(out)}
    work = _compute(result, out, cluster_key, layer, method, top, n_genes, markers, min_confidence, reference,
                    reference_key, cv, min_probability, seed, notes, summary)
    files = _write(work, out, cluster_key, top, plots, overwrite)
    summary["files"] = [str(f) for f in files] + [str(out / "summary.json")]
    summary["notes"] = notes
    _write_summary(summary, out)
    if as_json:
        print_json(summary)
    elif not quiet:
        for note in notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        _print(summary, work, top)


# --------------------------------------------------------------------------- steps
def _check_out(out: Path, overwrite: bool, result: Optional[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise ScscError(f"{out}: exists and is not a folder")
    if result is not None and (out / "annotated.h5ad").resolve() == result.resolve():
        raise ScscError(f"{result}: the input would be replaced by {out / 'annotated.h5ad'}; "
                        "choose another --out")
    clash = [f for f in OUTPUT_FILES if (out / f).exists()]
    if clash and not overwrite:
        raise ScscError(f"{out}: already holds {', '.join(clash[:4])}{', …' if len(clash) > 4 else ''} "
                        "from an earlier annotate run; choose another --out or pass --overwrite")


def _read_reference(path: Path, key: str, notes: list[str]):
    from ..data.io import LABEL_KEY, read
    from ..errors import InputError

    is_h5ad = path.name.lower().endswith(".h5ad")
    ref = read(path, label_key=key if is_h5ad else None)
    if not is_h5ad:
        if LABEL_KEY not in ref.obs:
            raise InputError(f"{path}: the reference has no cell-type labels (an .h5 needs a Y dataset; an "
                             ".h5ad a column named by --reference-key)")
        notes.append(f"{path.name}: cell types read from its labels (Y); --reference-key applies to "
                     ".h5ad only")
    return ref, LABEL_KEY


def _compute(result, out, cluster_key, layer, method, top, n_genes, markers, min_confidence, reference,
             reference_key, cv, min_probability, seed, notes, summary) -> dict:
    """Read and check every input first (nothing is written), then compute every table in memory."""
    import numpy as np
    import pandas as pd

    from .. import annotate as sa
    from ..errors import InputError

    work: dict[str, Any] = {}
    marker_sets = sa.read_marker_sets(markers) if markers is not None else None
    adata = None
    if result is not None:
        adata = sa.read_result(result, cluster_key, layer)
        named = sa.has_gene_names(adata)
        summary.update(input=str(result), cells=int(adata.n_obs), genes=int(adata.n_vars),
                       cluster_key=cluster_key, method=method, gene_names=named)
        if not named:
            if marker_sets is not None:
                raise InputError(f"{result}: the data have no gene names (genes are indices only, as in the "
                                 "shared .h5 files), so --markers cannot be matched to genes; markers alone "
                                 "work without --markers (they are reported as gene indices)")
            notes.append("the input has no gene names: markers are reported as gene indices (geneJ = column "
                         "J of the original file)")
    ref = ref_key = None
    if reference is not None:
        ref, ref_key = _read_reference(reference, reference_key, notes)
        if adata is not None:
            try:
                sa.shared_genes(adata, ref)
            except InputError as exc:
                raise InputError(f"{reference}: {exc}") from None

    if adata is not None:
        lognorm, was_counts = sa.log_normalize(adata, layer)
        if not was_counts:
            notes.append("the expression is not raw integer counts; it was used as log-normalised as it is")
        table = sa.find_markers(adata, cluster_key, method=method, n_genes=n_genes or None, lognorm=lognorm,
                                seed=seed)
        single = table.attrs.get("single_cell_clusters", [])
        if single:
            notes.append(f"clusters with a single cell have no markers: {', '.join(single)}")
        sizes = sa._common.cluster_labels(adata, cluster_key).value_counts()
        work.update(adata=adata, lognorm=lognorm, markers=table)
        summary["clusters"] = {str(k): int(v) for k, v in sizes.items()}
        summary["top_markers"] = sa.top_markers(table, top)
        if marker_sets is not None:
            if n_genes and n_genes < 100:
                enrich = sa.find_markers(adata, cluster_key, method=method, n_genes=100, lognorm=lognorm,
                                         key_added=None, seed=seed)
            else:
                enrich = table
            ann = sa.annotate_clusters(adata, marker_sets, cluster_key, markers=enrich,
                                       min_confidence=min_confidence, lognorm=lognorm, seed=seed)
            work["annotation"] = ann
            if ann.missing:
                total = int(ann.genes.shape[0])
                shown = "; ".join(f"{t}: {', '.join(g[:8])}{', …' if len(g) > 8 else ''}"
                                  for t, g in ann.missing.items())
                notes.append(f"{ann.n_missing} of {total} marker genes are not in the data ({shown})")
            empty = adata.uns["scsc_annotation"]["sets_without_genes"]
            if empty:
                notes.append(f"marker sets with no gene in the data (not scored): {', '.join(empty)}")
            summary["annotation"] = {
                r.cluster: {"cell_type": r.cell_type, "best_match": r.best_match, "confidence": r.confidence,
                            "enrichment_padj": r.enrichment_padj}
                for r in ann.clusters.itertuples()}
            summary["min_confidence"] = min_confidence
            summary["missing_marker_genes"] = ann.missing
        if ref is not None:
            tr = sa.transfer_labels(adata, ref, ref_key, layer=layer, min_probability=min_probability,
                                    seed=seed)
            groups = sa._common.cluster_labels(adata, cluster_key)
            cells = pd.DataFrame({"cell": adata.obs_names, "cluster": np.asarray(groups, dtype=object),
                                  "predicted": tr.labels, "probability": tr.probability})
            rows = []
            for c in groups.categories:
                part = cells[cells["cluster"] == c]
                vc = part["predicted"].value_counts()
                rows.append({"cluster": c, "n_cells": len(part), "majority": vc.index[0] if len(vc) else "",
                             "fraction": float(vc.iloc[0] / len(part)) if len(vc) else np.nan,
                             "mean_probability": float(part["probability"].mean()),
                             "second": vc.index[1] if len(vc) > 1 else "",
                             "second_fraction": float(vc.iloc[1] / len(part)) if len(vc) > 1 else 0.0})
            work["transfer"] = (cells, pd.DataFrame(rows))
            summary["transfer"] = {
                "reference": str(reference), "shared_genes": len(tr.genes), "classifier_genes": tr.n_hvg,
                "mean_probability": float(tr.probability.mean()),
                "clusters": {r["cluster"]: {"majority": r["majority"], "fraction": r["fraction"]}
                             for r in rows}}
            if len(tr.genes) < 0.5 * ref.n_vars:
                notes.append(f"only {len(tr.genes)} of the reference's {ref.n_vars} genes are in the query")
        adata.uns["scsc_annotate"] = {"cluster_key": cluster_key, "method": method, "top": int(top),
                                      "log_normalized_input": not was_counts, "seed": int(seed)}
    if cv:
        res = sa.cross_validate(ref, ref_key, seed=seed)
        preds = pd.DataFrame({"cell": ref.obs_names, "true": ref.obs[ref_key].astype(str).to_numpy(),
                              "predicted": res.pop("predictions")})
        work["cv"] = (res, preds)
        summary["cv"] = {"reference": str(reference), **res}
        if res["small_types"]:
            notes.append(f"cell types with fewer cells than folds ({res['n_splits']}): "
                         f"{', '.join(res['small_types'])}")
    return work


def _write(work: dict, out: Path, cluster_key: str, top: int, plots: bool, overwrite: bool) -> list[Path]:
    import json

    from ..data.io import atomic_write_text, write_csv, write_h5ad

    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def csv(df, name):
        write_csv(df, out / name, index=False)
        files.append(out / name)

    if "markers" in work:
        csv(work["markers"], "markers.csv")
        if plots:
            from ..annotate.plots import marker_plots

            files += marker_plots(work["lognorm"], work["markers"], cluster_key, out, top=top)
    if "annotation" in work:
        ann = work["annotation"]
        csv(ann.clusters, "annotation.csv")
        csv(ann.scores, "annotation_scores.csv")
        csv(ann.genes, "marker_genes.csv")
    if "transfer" in work:
        cells, clusters = work["transfer"]
        csv(cells, "transfer.csv")
        csv(clusters, "transfer_clusters.csv")
    if "cv" in work:
        res, preds = work["cv"]
        atomic_write_text(out / "cv.json", json.dumps(res, indent=2) + "\n")
        files.append(out / "cv.json")
        csv(preds, "cv_predictions.csv")
    if "adata" in work:
        write_h5ad(work["adata"], out / "annotated.h5ad")
        files.append(out / "annotated.h5ad")
    if overwrite:  # files of an earlier run that this run did not produce would mislead: remove them
        for name in OUTPUT_FILES:
            if name != "summary.json" and out / name not in files and (out / name).exists():
                (out / name).unlink()
    return files


def _write_summary(summary: dict, out: Path) -> None:
    import json

    from ..data.io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")


def _print(summary: dict, work: dict, top: int) -> None:
    if "markers" in work:
        ann = work.get("annotation")
        tr = work.get("transfer")
        table = Table(title=f"scsc annotate → {escape(summary['out'])}  "
                            f"(top {top} markers, {summary['method']})")
        table.add_column("cluster", style="bold")
        table.add_column("cells", justify="right")
        if ann is not None:
            table.add_column("cell type", max_width=18)
            table.add_column("conf.", justify="right")
        if tr is not None:
            table.add_column("reference", max_width=18)
        table.add_column("top markers", overflow="fold", ratio=1)
        by_cluster = {} if ann is None else {r.cluster: r for r in ann.clusters.itertuples()}
        by_transfer = {} if tr is None else {r.cluster: r for r in tr[1].itertuples()}
        for cluster, genes in summary["top_markers"].items():
            row = [escape(cluster), f"{summary['clusters'].get(cluster, 0):,}"]
            if ann is not None:
                r = by_cluster.get(cluster)
                kind = "" if r is None else (f"[dim]{escape(r.cell_type)}[/]" if r.cell_type == "unassigned"
                                             else escape(r.cell_type))
                row += [kind, "" if r is None else f"{r.confidence:.2f}"]
            if tr is not None:
                r = by_transfer.get(cluster)
                row.append("" if r is None else f"{escape(str(r.majority))} ({r.fraction:.0%})")
            row.append(escape(", ".join(genes)))
            table.add_row(*row)
        console.print(table)
    if "cv" in work:
        res, _ = work["cv"]
        console.print(f"cross-validated ({res['n_splits']}-fold, stratified) on "
                      f"{escape(summary['cv']['reference'])}: accuracy [bold]{res['accuracy']:.3f}[/], "
                      f"macro-F1 [bold]{res['macro_f1']:.3f}[/] "
                      f"({res['n_cells']:,} cells, {res['n_types']} types)", highlight=False)
    console.print(f"wrote {len(summary['files'])} files to {escape(summary['out'])}", highlight=False)
