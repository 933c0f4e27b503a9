"""``scsc ablate``: run an ablation study (variants × seeds × datasets) and summarise it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from .app import app, console, err_console, print_json, user_errors
from .data import LABEL_KEY, LAYER, TRANSPOSE

if TYPE_CHECKING:  # the CLI imports the pipeline lazily, only when a command runs
    from ..ablate import Outcome, Study, StudyRunner


class _Progress:
    """Runner events → one rich progress bar over cells and a line per finished cell."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[now]}"),
            console=err_console,
            disable=not enabled,
            transient=False,
        )
        self.task: Any = None
        self.t0: dict[str, float] = {}

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _say(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text, highlight=False)

    def planned(self, total: int, skipped: int, pretrain: int) -> None:
        self.task = self.progress.add_task("cells", total=total, completed=skipped, now="")
        if skipped:
            self._say(f"[dim]resuming: {skipped} of {total} cells already in results.csv, skipped[/]")
        if pretrain:
            self._say(f"[dim]{pretrain} pretraining run(s), shared by the variants that need them[/]")

    def started(self, task: dict[str, Any]) -> None:
        self.t0[task["id"]] = time.perf_counter()
        if self.task is not None:
            self.progress.update(self.task, now=escape(task["id"]))

    def pretrained(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        if result["status"] == "ok":
            self._say(f"[cyan]pretrained[/] {escape(task['id'])} in {result['time_s']:.1f} s")
        else:
            self._say(f"[red]pretraining failed[/] {escape(task['id'])}: {escape(str(result.get('error')))}")

    def finished(self, row: dict[str, str]) -> None:
        if self.task is not None:
            self.progress.advance(self.task)
        label = escape(f"{row['dataset']} · {row['variant']} · seed {row['seed']}")
        if row["status"] != "ok":
            self._say(f"[red]✗[/] {label}: {escape(row['error'])}")
            return
        if row.get("same_as"):
            self._say(f"[green]✓[/] {label} [dim](same configuration as {escape(row['same_as'])})[/]")
            return
        scores = "  ".join(f"{k.upper()} {float(row[k]):.3f}" for k in ("acc", "nmi", "ari") if row.get(k))
        self._say(
            f"[green]✓[/] {label}  {scores}  [dim]{float(row['time_s'] or 0):.1f} s, "
            f"{float(row['peak_mem_mb'] or 0):.0f} MiB[/]"
        )


def _load(targets: list[Path], preset, seeds, sets, epochs, n_clusters, layer, label_key, transpose):
    from ..ablate import load_study, study_from_data
    from ..ablate.presets import PRESETS
    from ..ablate.study import ReadOptions, parse_seeds
    from ..errors import ConfigError

    seed_list = parse_seeds(seeds)
    tomls = [t for t in targets if t.suffix.lower() == ".toml"]
    if tomls:
        if len(targets) > 1:
            raise ConfigError("give one study file (.toml), or data files with --preset, not both")
        study = load_study(tomls[0], preset=preset, seeds=seed_list, sets=sets, epochs=epochs)
        if n_clusters is not None:
            for ds in study.datasets:
                ds.n_clusters = n_clusters
        default_out = Path(f"{tomls[0].stem}_ablate")
    else:
        if preset is None:
            raise ConfigError(
                f"{targets[0]}: not a study file (.toml); to ablate a data file directly name a "
                f"preset, e.g. --preset paper (presets: {', '.join(PRESETS)})"
            )
        read = ReadOptions(layer=layer, label_key=label_key, transpose=transpose)
        study = study_from_data(
            list(targets),
            preset=preset,
            seeds=seed_list,
            sets=sets,
            epochs=epochs,
            n_clusters=n_clusters,
            read=read,
        )
        default_out = Path(f"{targets[0].name.split('.')[0]}_ablate")
    return study, default_out


TARGETS = typer.Argument(
    ..., help="A study file (.toml), or one or more data files together with --preset.", show_default=False
)
PRESET = typer.Option(
    None,
    "--preset",
    "-p",
    help="Built-in variant list: paper (every published ablation), losses, augment, "
    "heads. With a study file, its variants are added after the preset's.",
)
STUDY_OUT = typer.Option(
    None,
    "--out",
    "-o",
    help="Study folder (default: <name>_ablate). Re-running into the same folder resumes.",
)
SEEDS = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 or 0-4 (overrides the study's).")
EPOCHS = typer.Option(None, "--epochs", min=0, help="Clustering epochs of every variant (cluster.epochs).")
SETS = typer.Option(
    None,
    "--set",
    help="Override the base config: section.key=value (repeatable), e.g. --set "
    "pretrain.ae_epochs=50. A variant's own settings still win.",
)
N_CLUSTERS = typer.Option(
    None,
    "--n-clusters",
    "-k",
    min=2,
    help="Number of clusters for every dataset (default: the config's, else estimated from the pretrained "
    "embedding as in scsc cluster).",
)
JOBS = typer.Option(
    1,
    "--jobs",
    "-j",
    min=0,
    help="Cells run in parallel worker processes (0: one after another in this process, for debugging).",
)


@app.command()
@user_errors
def ablate(
    targets: list[Path] = TARGETS,
    preset: str | None = PRESET,
    out: Path | None = STUDY_OUT,
    seeds: str | None = SEEDS,
    epochs: int | None = EPOCHS,
    sets: list[str] | None = SETS,
    n_clusters: int | None = N_CLUSTERS,
    jobs: int = JOBS,
    layer: str | None = LAYER,
    label_key: str | None = LABEL_KEY,
    transpose: bool = TRANSPOSE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the plan; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or tables."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Run an ablation study: every variant × seed × dataset, then results.csv, summary.md and ablation.png.

    [bold]scsc ablate study.toml --out DIR[/]  or  [bold]scsc ablate DATA.h5 --preset paper --seeds 0,1[/]

    The study file names datasets, seeds, a \\[base] config and \\[\\[variants]] (component names and/or
    set = {"loss.zinb" = 0}); see docs/ablate.md. Everything is validated before any training. Pretraining
    is shared by variants with the same pretraining config (OUT/pretrain/). Finished cells are appended to
    OUT/results.csv as they complete, so an interrupted study resumes where it stopped. A failing cell is
    recorded (status=error) and the others go on; the exit code is then 1.
    """
    from ..ablate import StudyRunner

    study, default_out = _load(targets, preset, seeds, sets, epochs, n_clusters, layer, label_key, transpose)
    out = out or default_out
    if out.exists() and not out.is_dir():
        from ..errors import ScscError

        raise ScscError(f"{out}: exists and is not a folder")

    runner = StudyRunner(study, out, jobs=jobs)
    if dry_run:
        _show_plan(study, runner, out, as_json)
        return
    outcome = _run(study, runner, out, jobs, show=not (quiet or as_json))
    _report(study, outcome, out, as_json, quiet)


def _run(study: Study, runner: StudyRunner, out: Path, jobs: int, show: bool) -> Outcome:
    """Run the study into ``out`` (its resolved study.toml first) with progress; the runner's Outcome.

    Ctrl-C ends the command with code 130 after saying how to resume (finished cells are already recorded).
    """
    from ..ablate import plan
    from ..data.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.toml", study.to_toml())
    if show:
        n = len(plan(study))
        err_console.print(
            f"[bold]scsc ablate[/] {escape(study.title)}: {len(study.variants)} variants × "
            f"{len(study.seeds)} seed(s) × {len(study.datasets)} dataset(s) = {n} cells → "
            f"{escape(str(out))}  (jobs {jobs})",
            highlight=False,
        )
    try:
        with _Progress(show) as events:
            runner.events = events
            return runner.run()
    except KeyboardInterrupt:
        done = sum(1 for c in runner.cells if runner.store.finished(c))
        err_console.print(
            f"[yellow]interrupted[/]: {done} of {len(runner.cells)} cells are recorded in "
            f"{escape(str(out / 'results.csv'))}; run the same command again to resume"
        )
        raise typer.Exit(code=130) from None


def _report(study: Study, outcome: Outcome, out: Path, as_json: bool, quiet: bool) -> None:
    """Write summary.md and ablation.png from the rows and show them; exit code 1 when a cell failed."""
    from ..ablate.report import rich_tables, write_reports

    summary = write_reports(study, outcome.rows, out)
    if as_json:
        print_json(
            {
                "out": str(out),
                "cells": len(outcome.cells),
                "computed": outcome.computed,
                "skipped": outcome.skipped,
                "copied": outcome.copied,
                "pretrained": outcome.pretrained,
                "errors": [
                    {k: r[k] for k in ("dataset", "variant", "seed", "error")} for r in outcome.errors
                ],
                "files": [str(out / f) for f in ("results.csv", "summary.md", "ablation.png")],
                "summary": {
                    ds: [
                        {
                            "variant": s.variant,
                            "n_ok": s.n_ok,
                            "n_error": s.n_error,
                            "mean": s.mean,
                            "std": s.std,
                            "delta": s.delta,
                        }
                        for s in items
                    ]
                    for ds, items in summary.items()
                },
            }
        )
    elif not quiet:
        for table in rich_tables(study, summary):
            console.print(table)
        console.print(
            f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'ablation.png'}  "
            f"({outcome.computed} computed, {outcome.skipped} resumed, {outcome.copied} shared)",
            highlight=False,
        )
    if outcome.errors:
        err_console.print(
            f"[bold red]{len(outcome.errors)} cell(s) failed[/] (status=error in results.csv, "
            f"tracebacks in {escape(str(out / 'errors'))}); re-run to retry them"
        )
        raise typer.Exit(code=1)


def _show_plan(study, runner, out: Path, as_json: bool) -> None:
    from rich.table import Table

    from ..ablate.runner import checkpoint_path

    rows = []
    for c in runner.cells:
        rows.append(
            {
                "dataset": c.dataset.name,
                "variant": c.variant.name,
                "seed": c.seed,
                "done": runner.store.finished(c) is not None,
                "config_hash": c.chash,
                "pretrain": checkpoint_path(out, c).name,
                "pretrained": checkpoint_path(out, c).is_file(),
            }
        )
    if as_json:
        print_json({"out": str(out), "baseline": study.baseline, "cells": rows})
        return
    table = Table(title=f"scsc ablate --dry-run: {study.title} → {out}")
    for col in ("dataset", "variant", "seed", "state", "pretraining checkpoint"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = "[green]done[/]" if r["done"] else "to run"
        ckpt = r["pretrain"] + (" [dim](exists)[/]" if r["pretrained"] else "")
        table.add_row(escape(r["dataset"]), escape(r["variant"]), str(r["seed"]), state, ckpt)
    console.print(table)
    n_ckpt = len({r["pretrain"] for r in rows})
    console.print(
        f"{len(rows)} cells, {sum(not r['done'] for r in rows)} to run, {n_ckpt} pretraining "
        f"checkpoint(s); reference variant: {escape(study.baseline)}",
        highlight=False,
    )
