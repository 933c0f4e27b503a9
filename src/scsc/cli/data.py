"""Commands about data and the registry: ``components``, ``info``, ``simulate``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InputError, ScscError
from .app import app, console, err_console, print_json, user_errors

FILE = typer.Argument(
    ..., help="Input: .h5 (X[, Y]), .h5ad, 10x .h5, 10x mtx folder, .csv/.tsv(.gz).", show_default=False
)
LAYER = typer.Option(None, "--layer", help=".h5ad only: read counts from this layer instead of X.")
LABEL_KEY = typer.Option(None, "--label-key", help=".h5ad only: obs column with true labels (scoring only).")
TRANSPOSE = typer.Option(False, "--transpose", help="Tables only: the file is genes × cells.")


def require_input(path: Path) -> None:
    """Refuse a missing input at once, as :func:`scsc.data.io.read` would, but before the training commands
    import torch and scanpy (seconds)."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")


@app.command()
@user_errors
def components(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every registered component: kind, name, provider and summary.

    Built-ins and installed plugins (entry-point group [bold]scsc[/]) register the same way; block a plugin
    with SCSC_BLOCK_PLUGINS=name.
    """
    from .. import list_components

    rows = list_components()
    if as_json:
        print_json(rows)
        return
    table = Table(title="scsc components", show_lines=False)
    for col in ("kind", "name", "provider", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["kind"], f"[bold]{r['name']}[/]", r["provider"], r["summary"])
    console.print(table)


@app.command()
@user_errors
def info(
    path: Path = FILE,
    layer: str = LAYER,
    label_key: str = LABEL_KEY,
    transpose: bool = TRANSPOSE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a data file: cells, genes, sparsity, count range, raw-count check, labels.

    An unreadable or invalid file is refused (exit 2). A readable file that `scsc cluster` would refuse with
    the default settings (all zeros, too few cells, normalised values, …) is described with a warning that
    says why (exit 0).
    """
    from ..config import RunConfig
    from ..data.io import read, summarize
    from ..data.preprocess import filter_cells_and_genes
    from ..errors import InputError

    adata = read(path, layer=layer, label_key=label_key, transpose=transpose)
    facts = summarize(adata)
    cfg = RunConfig()
    try:
        filter_cells_and_genes(adata, cfg.preprocess, cfg.graph.k + 1, f"{path}: ")
        facts["clusterable"] = True
    except InputError as exc:
        facts["clusterable"] = False
        facts["warning"] = f"scsc cluster would refuse it: {exc}"
    if facts["duplicate_gene_names"]:
        facts.setdefault("notes", []).append(
            f"{facts['duplicate_gene_names']} duplicate gene names (made unique with -1, -2, … suffixes)"
        )
    if as_json:
        print_json({"path": str(path), **facts})
        return
    if "warning" in facts:
        err_console.print(
            f"[bold yellow]warning:[/] {escape(facts['warning'])}", highlight=False, soft_wrap=True
        )
    console.print(_facts_table(path, facts))


def _facts_table(path: Path, facts: dict) -> Table:
    """``scsc info``'s table of the facts :func:`~scsc.data.io.summarize` found in ``path``."""
    table = Table(title=str(path), show_header=False)
    table.add_column("fact", style="bold")
    table.add_column("value")
    table.add_row("cells × genes", f"{facts['cells']:,} × {facts['genes']:,}")
    table.add_row("non-zero entries", f"{facts['nonzero_fraction']:.1%}")
    table.add_row("value range", f"{facts['min_value']:g} – {facts['max_value']:g}")
    table.add_row("median counts per cell", f"{facts['median_counts_per_cell']:g}")
    table.add_row("cells with no counts", str(facts["empty_cells"]))
    table.add_row(
        "raw integer counts",
        "yes" if facts["raw_counts"] else "[yellow]no[/] (normalised? use --log-normalized)",
    )
    table.add_row(
        "gene names",
        ("yes" if facts["gene_names"] else "no (indices only)")
        + (
            f" ({facts['duplicate_gene_names']} repeated, made unique)"
            if facts["duplicate_gene_names"]
            else ""
        ),
    )
    if "labels" in facts:
        sizes = facts["labels"]["sizes"]
        shown = ", ".join(f"{k}: {v}" for k, v in list(sizes.items())[:12])
        table.add_row(
            "labels", f"{facts['labels']['n_types']} types ({shown}{', …' if len(sizes) > 12 else ''})"
        )
    else:
        table.add_row("labels", "none")
    table.add_row(
        "ready for scsc cluster", "yes" if facts["clusterable"] else "[yellow]no[/] (see the warning)"
    )
    return table


@app.command()
@user_errors
def simulate(
    out: Path = typer.Argument(
        ...,
        help="Output file: .h5ad (sparse X; best for many cells) or .h5 (dense X, Y, gene_names).",
        show_default=False,
    ),
    cells: int = typer.Option(2000, "--cells", min=2, help="Number of cells."),
    types: int = typer.Option(6, "--types", min=1, help="Number of cell types."),
    genes: int = typer.Option(2000, "--genes", min=10, help="Number of genes."),
    markers: int = typer.Option(25, "--markers", min=1, help="Planted marker genes per type."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    depth: float = typer.Option(
        1.0, "--depth", help="Library-size scale: 1 gives ~70% zeros, 0.1 ~94% (like 10x data)."
    ),
    markers_out: Path = typer.Option(
        None, "--markers-out", help="Also write the planted markers (TOML: type = \\[genes])."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on success."),
) -> None:
    """Simulate negative-binomial counts with known cell types (demo data, tests)."""
    import tomli_w

    from ..data.io import atomic_write_text, write_h5_counts, write_h5ad
    from ..data.simulate import simulate as run_sim

    suffix = out.name.lower()
    if not suffix.endswith((".h5", ".h5ad")):
        raise ScscError(f"{out}: output must end in .h5 or .h5ad")
    try:
        sim = run_sim(n_cells=cells, n_types=types, n_genes=genes, n_markers=markers, seed=seed, depth=depth)
    except ValueError as exc:
        raise ScscError(str(exc)) from None
    planted, zeros = sim.markers, 1 - sim.counts.nnz / (cells * genes)
    # Both formats are written from the sparse counts without densifying them whole (.h5 in row blocks).
    if suffix.endswith(".h5ad"):
        adata = sim.to_anndata()
        del sim  # the int32 counts: the AnnData holds a float32 copy
        write_h5ad(adata, out)
    else:
        write_h5_counts(out, sim.counts, sim.labels.astype("S"), sim.genes)
    if markers_out is not None:
        atomic_write_text(markers_out, tomli_w.dumps(planted))
    if not quiet:
        console.print(
            f"wrote {out}: {cells:,} cells × {genes:,} genes, {types} cell types, {zeros:.0%} zeros"
        )
