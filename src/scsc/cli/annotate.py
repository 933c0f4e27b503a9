"""``scsc annotate``: marker genes per cluster, cell types from marker sets, reference label transfer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ScscError
from .app import app, console, err_console, print_json, user_errors

if TYPE_CHECKING:  # the CLI imports the science stack lazily, only when a command runs
    import anndata as ad
    import pandas as pd

    from ..annotate import Annotation

#: Every file ``scsc annotate`` may write; an earlier run's files are only replaced with --overwrite.
OUTPUT_FILES = (
    "annotated.h5ad",
    "markers.csv",
    "markers_dotplot.png",
    "markers_dotplot.svg",
    "markers_heatmap.png",
    "markers_heatmap.svg",
    "annotation.csv",
    "annotation_scores.csv",
    "marker_genes.csv",
    "transfer.csv",
    "transfer_clusters.csv",
    "cv.json",
    "cv_predictions.csv",
    "summary.json",
)


RESULT = typer.Argument(
    None,
    show_default=False,
    metavar="RESULT.h5ad",
    help="Clustered .h5ad: result.h5ad of scsc cluster, or any scanpy AnnData (see --cluster-key).",
)
ANNOTATE_OUT = typer.Option(None, "--out", "-o", help="Output folder (default: <RESULT folder>/annotate).")
N_GENES = typer.Option(100, "--n-genes", min=0, help="Rows per cluster in markers.csv (0: all genes).")
MARKERS = typer.Option(
    None, "--markers", help="Marker sets, cell type → genes (.toml, .json, .csv/.tsv, .gmt)."
)
MIN_CONFIDENCE = typer.Option(
    0.5,
    "--min-confidence",
    min=0.0,
    max=1.0,
    help="Clusters whose confidence (share of cells voting for the best type) is lower are 'unassigned'.",
)
REFERENCE = typer.Option(
    None, "--reference", help="Labelled reference (.h5ad, or .h5 with Y) to transfer cell types from."
)
REFERENCE_KEY = typer.Option(
    "cell_type", "--reference-key", help=".h5ad reference: obs column with the cell types."
)
CV = typer.Option(
    False,
    "--cv",
    help="Report stratified 5-fold cross-validated accuracy and "
    "macro-F1 of the classifier on the reference (RESULT may then be omitted).",
)
MIN_PROBABILITY = typer.Option(
    0.0,
    "--min-probability",
    min=0.0,
    max=1.0,
    help="Transferred labels below this probability become 'unassigned'.",
)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace the files of an earlier annotate run.")


@app.command()
@user_errors
def annotate(
    result: Path | None = RESULT,
    out: Path | None = ANNOTATE_OUT,
    cluster_key: str = typer.Option("scsc_cluster", "--cluster-key", help="obs column with the clusters."),
    layer: str | None = typer.Option(None, "--layer", help="Read counts from this layer instead of X."),
    method: str = typer.Option("wilcoxon", "--method", "-m", help="Marker test: wilcoxon | t-test | logreg."),
    top: int = typer.Option(10, "--top", "-n", min=1, help="Top markers per cluster in the table and plots."),
    n_genes: int = N_GENES,
    markers: Path | None = MARKERS,
    min_confidence: float = MIN_CONFIDENCE,
    reference: Path | None = REFERENCE,
    reference_key: str = REFERENCE_KEY,
    cv: bool = CV,
    min_probability: float = MIN_PROBABILITY,
    seed: int = typer.Option(0, "--seed", help="Random seed (control genes, PCA, classifier, folds)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the dot plot and heat map."),
    overwrite: bool = OVERWRITE,
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
    out = _check_args(result, out, method, markers, reference, cv, overwrite)
    req = _Request(
        result=result,
        cluster_key=cluster_key,
        layer=layer,
        method=method,
        top=top,
        n_genes=n_genes,
        markers=markers,
        min_confidence=min_confidence,
        reference=reference,
        reference_key=reference_key,
        cv=cv,
        min_probability=min_probability,
        seed=seed,
    )
    notes: list[str] = []
    summary: dict[str, Any] = {"out": str(out)}
    work = _compute(req, notes, summary)
    files = _write(work, out, cluster_key, top, plots, overwrite)
    _write_summary(summary, files, notes, out)
    _report(summary, work, notes, top, as_json, quiet)


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class _Request:
    """What the command line asks ``_compute`` for (the options of :func:`annotate` that shape the tables)."""

    result: Path | None
    cluster_key: str
    layer: str | None
    method: str
    top: int
    n_genes: int
    markers: Path | None
    min_confidence: float
    reference: Path | None
    reference_key: str
    cv: bool
    min_probability: float
    seed: int


def _check_args(
    result: Path | None,
    out: Path | None,
    method: str,
    markers: Path | None,
    reference: Path | None,
    cv: bool,
    overwrite: bool,
) -> Path:
    """The output folder (default: next to RESULT, or named after the reference), once the options agree."""
    from ..annotate import METHODS

    if method not in METHODS:
        raise ScscError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if cv and reference is None:
        raise ScscError("--cv needs --reference (the labelled data set to cross-validate on)")
    if result is None:
        if not (reference is not None and cv):
            raise ScscError(
                "give a clustered RESULT.h5ad (or --reference REF --cv for cross-validation alone)"
            )
        if markers is not None:
            raise ScscError("--markers needs a clustered RESULT.h5ad to annotate")
    if out is None:
        out = result.parent / "annotate" if result is not None else Path(f"{reference.name.split('.')[0]}_cv")
    _check_out(out, overwrite, result)
    return out


def _check_out(out: Path, overwrite: bool, result: Path | None) -> None:
    if out.exists() and not out.is_dir():
        raise ScscError(f"{out}: exists and is not a folder")
    if result is not None and (out / "annotated.h5ad").resolve() == result.resolve():
        raise ScscError(
            f"{result}: the input would be replaced by {out / 'annotated.h5ad'}; choose another --out"
        )
    clash = [f for f in OUTPUT_FILES if (out / f).exists()]
    if clash and not overwrite:
        raise ScscError(
            f"{out}: already holds {', '.join(clash[:4])}{', …' if len(clash) > 4 else ''} "
            "from an earlier annotate run; choose another --out or pass --overwrite"
        )


def _read_reference(path: Path, key: str, notes: list[str]):
    from ..data.io import LABEL_KEY, read
    from ..errors import InputError

    is_h5ad = path.name.lower().endswith(".h5ad")
    ref = read(path, label_key=key if is_h5ad else None)
    if not is_h5ad:
        if LABEL_KEY not in ref.obs:
            raise InputError(
                f"{path}: the reference has no cell-type labels (an .h5 needs a Y dataset; an "
                ".h5ad a column named by --reference-key)"
            )
        notes.append(
            f"{path.name}: cell types read from its labels (Y); --reference-key applies to .h5ad only"
        )
    return ref, LABEL_KEY


def _compute(req: _Request, notes: list[str], summary: dict[str, Any]) -> dict:
    """Read and check every input first (nothing is written), then compute every table in memory.

    Returns the tables to write, by kind (markers, annotation, transfer, cv); ``notes`` and ``summary`` are
    filled on the way, in the order they are shown.
    """
    from .. import annotate as sa

    work: dict[str, Any] = {}
    marker_sets = sa.read_marker_sets(req.markers) if req.markers is not None else None
    adata = _read_query(req, marker_sets is not None, notes, summary) if req.result is not None else None
    ref = ref_key = None
    if req.reference is not None:
        ref, ref_key = _read_reference(req.reference, req.reference_key, notes)
        if adata is not None:
            _check_shared_genes(adata, ref, req.reference)
    if adata is not None:
        lognorm, was_counts = sa.log_normalize(adata, req.layer)
        if not was_counts:
            notes.append("the expression is not raw integer counts; it was used as log-normalised as it is")
        table = _markers(req, adata, lognorm, notes, summary)
        work.update(adata=adata, lognorm=lognorm, markers=table)
        if marker_sets is not None:
            work["annotation"] = _annotation(req, adata, lognorm, table, marker_sets, notes, summary)
        if ref is not None:
            work["transfer"] = _transfer(req, adata, ref, ref_key, notes, summary)
        adata.uns["scsc_annotate"] = {
            "cluster_key": req.cluster_key,
            "method": req.method,
            "top": int(req.top),
            "log_normalized_input": not was_counts,
            "seed": int(req.seed),
        }
    if req.cv:
        work["cv"] = _cross_validation(req, ref, ref_key, notes, summary)
    return work


def _read_query(req: _Request, with_markers: bool, notes: list[str], summary: dict[str, Any]) -> ad.AnnData:
    """The clustered input (N × G AnnData), checked; without gene names only markers can be computed."""
    from .. import annotate as sa
    from ..errors import InputError

    adata = sa.read_result(req.result, req.cluster_key, req.layer)
    named = sa.has_gene_names(adata)
    summary.update(
        input=str(req.result),
        cells=int(adata.n_obs),
        genes=int(adata.n_vars),
        cluster_key=req.cluster_key,
        method=req.method,
        gene_names=named,
    )
    if not named:
        if with_markers:
            raise InputError(
                f"{req.result}: the data have no gene names (genes are indices only, as in the "
                "shared .h5 files), so --markers cannot be matched to genes; markers alone "
                "work without --markers (they are reported as gene indices)"
            )
        notes.append(
            "the input has no gene names: markers are reported as gene indices (geneJ = column "
            "J of the original file)"
        )
    return adata


def _check_shared_genes(adata: ad.AnnData, ref: ad.AnnData, reference: Path) -> None:
    """Fail before any computation when the query and the reference share no gene."""
    from .. import annotate as sa
    from ..errors import InputError

    try:
        sa.shared_genes(adata, ref)
    except InputError as exc:
        raise InputError(f"{reference}: {exc}") from None


def _markers(
    req: _Request, adata: ad.AnnData, lognorm: ad.AnnData, notes: list[str], summary: dict[str, Any]
) -> pd.DataFrame:
    """The ``markers.csv`` table (:func:`scsc.annotate.find_markers`, ``--n-genes`` rows per cluster)."""
    from .. import annotate as sa

    table = sa.find_markers(
        adata, req.cluster_key, method=req.method, n_genes=req.n_genes or None, lognorm=lognorm, seed=req.seed
    )
    single = table.attrs.get("single_cell_clusters", [])
    if single:
        notes.append(f"clusters with a single cell have no markers: {', '.join(single)}")
    sizes = sa._common.cluster_labels(adata, req.cluster_key).value_counts()
    summary["clusters"] = {str(k): int(v) for k, v in sizes.items()}
    summary["top_markers"] = sa.top_markers(table, req.top)
    return table


def _annotation(
    req: _Request,
    adata: ad.AnnData,
    lognorm: ad.AnnData,
    table: pd.DataFrame,
    marker_sets: dict[str, list[str]],
    notes: list[str],
    summary: dict[str, Any],
) -> Annotation:
    """The :class:`scsc.annotate.Annotation` of the clusters from the ``--markers`` sets."""
    from .. import annotate as sa

    # the enrichment test reads the top 100 markers, more than a short markers.csv keeps
    if req.n_genes and req.n_genes < 100:
        enrich = sa.find_markers(
            adata,
            req.cluster_key,
            method=req.method,
            n_genes=100,
            lognorm=lognorm,
            key_added=None,
            seed=req.seed,
        )
    else:
        enrich = table
    ann = sa.annotate_clusters(
        adata,
        marker_sets,
        req.cluster_key,
        markers=enrich,
        min_confidence=req.min_confidence,
        lognorm=lognorm,
        options=sa.AnnotationOptions(seed=req.seed),
    )
    if ann.missing:
        total = int(ann.genes.shape[0])
        shown = "; ".join(
            f"{t}: {', '.join(g[:8])}{', …' if len(g) > 8 else ''}" for t, g in ann.missing.items()
        )
        notes.append(f"{ann.n_missing} of {total} marker genes are not in the data ({shown})")
    empty = adata.uns["scsc_annotation"]["sets_without_genes"]
    if empty:
        notes.append(f"marker sets with no gene in the data (not scored): {', '.join(empty)}")
    summary["annotation"] = {
        r.cluster: {
            "cell_type": r.cell_type,
            "best_match": r.best_match,
            "confidence": r.confidence,
            "enrichment_padj": r.enrichment_padj,
        }
        for r in ann.clusters.itertuples()
    }
    summary["min_confidence"] = req.min_confidence
    summary["missing_marker_genes"] = ann.missing
    return ann


def _transfer(
    req: _Request, adata: ad.AnnData, ref: ad.AnnData, ref_key: str, notes: list[str], summary: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels transferred from the reference: per cell (``transfer.csv``) and per cluster (majority)."""
    import numpy as np
    import pandas as pd

    from .. import annotate as sa

    tr = sa.transfer_labels(
        adata, ref, ref_key, layer=req.layer, min_probability=req.min_probability, seed=req.seed
    )
    groups = sa._common.cluster_labels(adata, req.cluster_key)
    cells = pd.DataFrame(
        {
            "cell": adata.obs_names,
            "cluster": np.asarray(groups, dtype=object),
            "predicted": tr.labels,
            "probability": tr.probability,
        }
    )
    rows = [_transfer_row(c, cells[cells["cluster"] == c]) for c in groups.categories]
    summary["transfer"] = {
        "reference": str(req.reference),
        "shared_genes": len(tr.genes),
        "classifier_genes": tr.n_hvg,
        "mean_probability": float(tr.probability.mean()),
        "clusters": {r["cluster"]: {"majority": r["majority"], "fraction": r["fraction"]} for r in rows},
    }
    if len(tr.genes) < 0.5 * ref.n_vars:
        notes.append(f"only {len(tr.genes)} of the reference's {ref.n_vars} genes are in the query")
    return cells, pd.DataFrame(rows)


def _transfer_row(cluster: str, part: pd.DataFrame) -> dict[str, Any]:
    """The ``transfer_clusters.csv`` row of one cluster: its most and second most frequent predicted types."""
    import numpy as np

    vc = part["predicted"].value_counts()
    return {
        "cluster": cluster,
        "n_cells": len(part),
        "majority": vc.index[0] if len(vc) else "",
        "fraction": float(vc.iloc[0] / len(part)) if len(vc) else np.nan,
        "mean_probability": float(part["probability"].mean()),
        "second": vc.index[1] if len(vc) > 1 else "",
        "second_fraction": float(vc.iloc[1] / len(part)) if len(vc) > 1 else 0.0,
    }


def _cross_validation(
    req: _Request, ref: ad.AnnData, ref_key: str, notes: list[str], summary: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Cross-validated scores of the classifier on the reference (``cv.json``) and its predictions."""
    import pandas as pd

    from .. import annotate as sa

    res = sa.cross_validate(ref, ref_key, seed=req.seed)
    preds = pd.DataFrame(
        {
            "cell": ref.obs_names,
            "true": ref.obs[ref_key].astype(str).to_numpy(),
            "predicted": res.pop("predictions"),
        }
    )
    summary["cv"] = {"reference": str(req.reference), **res}
    if res["small_types"]:
        notes.append(
            f"cell types with fewer cells than folds ({res['n_splits']}): {', '.join(res['small_types'])}"
        )
    return res, preds


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


def _write_summary(summary: dict, files: list[Path], notes: list[str], out: Path) -> None:
    """Add the written files and the notes to ``summary`` and write it to ``summary.json``."""
    import json

    from ..data.io import atomic_write_text

    summary["files"] = [str(f) for f in files] + [str(out / "summary.json")]
    summary["notes"] = notes
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")


def _report(summary: dict, work: dict, notes: list[str], top: int, as_json: bool, quiet: bool) -> None:
    """The summary as JSON (``--json``), or the notes and the tables (unless ``--quiet``)."""
    if as_json:
        print_json(summary)
    elif not quiet:
        for note in notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        _print(summary, work, top)


def _print(summary: dict, work: dict, top: int) -> None:
    if "markers" in work:
        ann = work.get("annotation")
        tr = work.get("transfer")
        table = Table(
            title=f"scsc annotate → {escape(summary['out'])}  (top {top} markers, {summary['method']})"
        )
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
                kind = (
                    ""
                    if r is None
                    else (
                        f"[dim]{escape(r.cell_type)}[/]"
                        if r.cell_type == "unassigned"
                        else escape(r.cell_type)
                    )
                )
                row += [kind, "" if r is None else f"{r.confidence:.2f}"]
            if tr is not None:
                r = by_transfer.get(cluster)
                row.append("" if r is None else f"{escape(str(r.majority))} ({r.fraction:.0%})")
            row.append(escape(", ".join(genes)))
            table.add_row(*row)
        console.print(table)
    if "cv" in work:
        res, _ = work["cv"]
        console.print(
            f"cross-validated ({res['n_splits']}-fold, stratified) on "
            f"{escape(summary['cv']['reference'])}: accuracy [bold]{res['accuracy']:.3f}[/], "
            f"macro-F1 [bold]{res['macro_f1']:.3f}[/] "
            f"({res['n_cells']:,} cells, {res['n_types']} types)",
            highlight=False,
        )
    console.print(f"wrote {len(summary['files'])} files to {escape(summary['out'])}", highlight=False)
