"""Training commands: ``pretrain`` and ``cluster``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..config import RunConfig
from .app import app, console, err_console, print_json, user_errors
from .data import FILE, LABEL_KEY, LAYER, TRANSPOSE, require_input
from .progress import RichReporter

CONFIG = typer.Option(None, "--config", "-c", help="Run configuration (TOML); options below override it.")
SET = typer.Option(
    None,
    "--set",
    help="Override any config value: section.key=value (repeatable), "
    "e.g. --set loss.zinb=0 --set graph.k=15.",
)
SEED = typer.Option(
    None,
    "--seed",
    help="Random seed (default 0). Same seed, machine and thread count → same "
    "labels, also while other processes share the cores.",
)
DEVICE = typer.Option(None, "--device", help="cpu or cuda (default cpu).")
LOGNORM = typer.Option(False, "--log-normalized", help="Input is log-normalised, not counts (disables ZINB).")
BATCH_KEY = typer.Option(
    None,
    "--batch-key",
    help="obs column naming each cell's batch (run, donor, chemistry; a .h5 file's 'batch' dataset is read as "
    "obs column 'batch'): HVGs are chosen within batches and the PCA input is corrected by Harmony. Use it "
    'when batches differ by more than the cell types you look for (docs/method.md, "Batches").',
)
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
BATCH = typer.Option(
    None,
    "--batch-size",
    min=0,
    help="Cells per training batch; 0 trains on all cells at once. Default: all cells up to "
    "20,000, batches of 8,192 above (minibatch.* in the config). Below 2,048 cells per batch, "
    "results vary more between seeds.",
)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace the results of an earlier run in --out.")
CHECKPOINT_EVERY = typer.Option(
    10,
    "--checkpoint-every",
    min=0,
    help="Save the training state to --out/checkpoint.pt every this many epochs of each stage (0: never).",
)
RESUME = typer.Option(
    False,
    "--resume",
    help="Continue the interrupted run in --out from its checkpoint.pt (same data and options).",
)
DISTRIBUTED = typer.Option(
    False,
    "--distributed",
    help="Data-parallel training when launched by torchrun (torchrun --nproc-per-node N -m scsc COMMAND … "
    "--distributed): each process trains on its own minibatches (chosen for you unless --batch-size), "
    "DistributedDataParallel averages the gradients (gloo on CPU, nccl on GPU); rank 0 writes the results. "
    "See docs/distributed.md.",
)


OUT = typer.Option(None, "--out", "-o", help="Run folder (default: <data stem>_scsc).")
N_CLUSTERS = typer.Option(
    "auto",
    "--n-clusters",
    "-k",
    help="Number of clusters: auto (estimated from the pretrained embedding: Leiden communities merged until "
    "every pair is separated in the cell graph; the choice, runner-ups and score are printed and "
    "plotted in k_selection.png), a number (8), or several from one pretraining: a list (6,8,10) or "
    "a range (5:15) → obs scsc_cluster_k6, …; scsc_cluster holds the one the estimate prefers.",
)
PRETRAINED = typer.Option(None, "--pretrained", help="pretrain.pt from scsc pretrain (skips pretraining).")


def build_config(
    config: Path | None, sets: list[str] | None, n_clusters: str | None = None, **options
) -> RunConfig:
    """Config file, then ``--set`` overrides, then explicit options (those not None), then ``--n-clusters``
    (when given). Every check that needs no plugin runs before the registry loads them."""
    from ..config import check_device
    from ..plugins import get_registry

    cfg = RunConfig.from_toml(config) if config else RunConfig()
    cfg.override(sets or [])
    cfg.override({k: v for k, v in options.items() if v is not None and v is not False})
    if n_clusters is not None:
        _set_k(cfg, n_clusters)
    check_device(cfg.device)
    registry = get_registry()  # loads the plugins, and with them torch: after the cheap checks
    for kind in ("augment", "encoder", "fusion", "cluster"):
        registry.get(kind, getattr(cfg.components, kind))  # unknown names fail before any work
    return cfg


def announce(command: str, data: Path, out: Path, quiet: bool) -> None:
    """One line on stderr as soon as a training command starts: reading the data and importing torch take
    seconds before the first progress bar (rank 0 of a torchrun job only; nothing with ``quiet``)."""
    import os

    if not quiet and os.environ.get("RANK", "0") == "0":
        line = f"scsc {command}: {data} → {out}/ (reading the data, loading torch)"
        err_console.print(line, highlight=False, soft_wrap=True)


def default_out(data: Path) -> Path:
    """The run folder when --out is omitted: ``<data stem>_scsc`` in the current folder."""
    return Path(f"{Path(data).name.split('.')[0]}_scsc")


def holds_out_lock(func):
    """Run the command holding its run folder's lock (rank 0 only under torchrun): two commands writing to one
    --out would overwrite each other's checkpoint and results, so the second is refused."""
    import functools
    import os

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ..outputs import RunLock

        if os.environ.get("RANK", "0") != "0":
            return func(*args, **kwargs)
        with RunLock(kwargs.get("out") or default_out(kwargs["data"])):
            return func(*args, **kwargs)

    return wrapper


def start_checkpoint(
    out: Path, cfg: RunConfig, resume: bool, overwrite: bool, results: tuple[str, ...] | None = None
) -> Path:
    """The run checkpoint's path in ``out``; refuses, before any data are read, a resume without a matching
    checkpoint and a fresh start over earlier results or over an interrupted run's checkpoint."""
    from .. import checkpoint as ckpt
    from ..errors import ScscError
    from ..outputs import check_out_dir

    ck_path = out / ckpt.FILE_NAME
    if resume:
        ckpt.check_config(ckpt.load(ck_path), cfg, str(ck_path))
        return ck_path
    if results is None:
        check_out_dir(out, overwrite)
    else:
        check_out_dir(out, overwrite, results)
    if ck_path.exists() and not overwrite:
        raise ScscError(
            f"{out}: holds {ckpt.FILE_NAME} of an interrupted run; pass --resume to continue "
            "it or --overwrite to start again"
        )
    return ck_path


def train_in_context(distributed: bool, device: str, ck_path: Path, work):
    """``work(ctx)`` as one rank of a torchrun job (``distributed``) or a plain process; an interruption says
    where the training state is saved; the process group is always shut down. Returns (ctx, result)."""
    from ..distributed import Context, from_environment, shutdown

    ctx = from_environment(device) if distributed else Context()
    try:
        return ctx, work(ctx)
    except KeyboardInterrupt:
        if ck_path.exists() and ctx.is_main:
            err_console.print(f"the training state is saved in {ck_path}; continue with --resume")
        raise
    finally:
        shutdown(ctx)


def _read(path: Path, layer, label_key, transpose, shard=None):
    from ..data.io import read

    return read(path, layer=layer, label_key=label_key, transpose=transpose, shard=shard)


def _rank_input(ctx, adata, path: Path, layer, label_key, transpose) -> tuple[Any, dict]:
    """(the cells this process starts from, how to read the whole input: :class:`RunControl`'s
    ``whole_input`` and ``input_rows``): ``adata`` when it was read already; under several ranks this rank's
    shard of the rows, with a bad file refused on every rank."""
    from ..data.io import reads_rows
    from ..errors import InputError

    if adata is not None or not ctx.active:
        return (_read(path, layer, label_key, transpose) if adata is None else adata), {}
    mine, error = None, None
    try:
        mine = _read(path, layer, label_key, transpose, shard=ctx.shard)
    except InputError as exc:
        error = exc
    ctx.raise_if_any(error)
    readers = {"whole_input": lambda: _read(path, layer, label_key, transpose)}
    if reads_rows(path):
        readers["input_rows"] = lambda lo, hi: _read(
            path, layer, label_key, transpose, shard=lambda n: (lo, hi)
        )
    return mine, readers


@app.command()
@user_errors
@holds_out_lock
def pretrain(
    data: Path = FILE,
    out: Path = OUT,
    config: Path | None = CONFIG,
    sets: list[str] | None = SET,
    encoder: str | None = typer.Option(None, "--encoder", help="Encoder component (see scsc components)."),
    seed: int | None = SEED,
    device: str | None = DEVICE,
    layer: str | None = LAYER,
    label_key: str | None = LABEL_KEY,
    transpose: bool = TRANSPOSE,
    log_normalized: bool = LOGNORM,
    batch_key: str | None = BATCH_KEY,
    batch_size: int | None = BATCH,
    checkpoint_every: int = CHECKPOINT_EVERY,
    resume: bool = RESUME,
    distributed: bool = DISTRIBUTED,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
) -> None:
    """Pretrain the encoders (expression AE, graph AE, then jointly); writes pretrain.pt and config.toml.

    Pass the checkpoint to [bold]scsc cluster --pretrained RUN/pretrain.pt[/] to cluster without
    pretraining again (for example with other clustering heads or seeds of the clustering stage).
    While it trains, checkpoint.pt holds the state to continue from with --resume after an interruption.
    """
    require_input(data)
    out = out or default_out(data)
    announce("pretrain", data, out, quiet)
    options = {
        "components.encoder": encoder,
        "preprocess.log_normalized": log_normalized,
        "preprocess.batch_key": batch_key,
        "minibatch.batch_size": batch_size,
    }
    cfg = build_config(config, sets, seed=seed, device=device, **options)
    from ..api import pretrain as run_pretrain  # torch and the model: after the cheap checks of the input
    from ..checkpoint import save_checkpoint
    from ..session import RunControl

    ck_path = start_checkpoint(out, cfg, resume, overwrite, ("pretrain.pt",))
    adata = None if distributed else _read(data, layer, label_key, transpose)

    def work(ctx):
        mine, readers = _rank_input(ctx, adata, data, layer, label_key, transpose)
        with RichReporter(err_console, enabled=not quiet and ctx.is_main) as rep:
            control = RunControl(ck_path, checkpoint_every, resume, context=ctx, source=str(data), **readers)
            return run_pretrain(mine, cfg, reporter=rep, control=control)

    ctx, record = train_in_context(distributed, cfg.device, ck_path, work)
    if not ctx.is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(record, out / "pretrain.pt")
    cfg.save(out / "config.toml")
    ck_path.unlink(missing_ok=True)
    if not quiet:
        console.print(f"pretrained on {record['fingerprint']['n_cells']:,} cells → {out / 'pretrain.pt'}")


@app.command()
@user_errors
@holds_out_lock
def cluster(
    data: Path = FILE,
    out: Path = OUT,
    n_clusters: str = N_CLUSTERS,
    augment: str | None = typer.Option(None, "--augment", help="dual | noise | graph | none | plugin."),
    encoder: str | None = typer.Option(None, "--encoder", help="siamese | ae | graph | plugin."),
    fusion: str | None = typer.Option(None, "--fusion", help="siamese | mean | plugin."),
    head: str | None = typer.Option(None, "--cluster", help="sinkhorn | dec | kmeans | plugin."),
    epochs: int | None = typer.Option(None, "--epochs", min=0, help="Clustering epochs (default 5)."),
    pretrained: Path | None = PRETRAINED,
    config: Path | None = CONFIG,
    sets: list[str] | None = SET,
    seed: int | None = SEED,
    device: str | None = DEVICE,
    layer: str | None = LAYER,
    label_key: str | None = LABEL_KEY,
    transpose: bool = TRANSPOSE,
    log_normalized: bool = LOGNORM,
    batch_key: str | None = BATCH_KEY,
    batch_size: int | None = BATCH,
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write umap.png and loss.png."),
    checkpoint_every: int = CHECKPOINT_EVERY,
    resume: bool = RESUME,
    distributed: bool = DISTRIBUTED,
    overwrite: bool = OVERWRITE,
    quiet: bool = QUIET,
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Cluster cells: pretrain (unless --pretrained), augment, fuse, train the clustering head.

    Writes to --out: result.h5ad (obsm X_scsc, obs scsc_cluster[_k<K>], uns scsc; opens in scanpy),
    clusters.csv, loss.csv, model.pt, config.toml, umap.png, loss.png, k_selection.png (K estimated),
    k_tree.png (several K), metrics.json when the input has true labels (read only to score the
    final result), and pretrain.pt: the pretraining, to cluster again with other K, heads or seeds via
    --pretrained without pretraining again (not written over an earlier pretrain.pt, nor with --pretrained).
    While it trains, checkpoint.pt holds the state to continue from with --resume after an interruption; it
    is removed once the results are written.
    """
    require_input(data)
    out = out or default_out(data)
    announce("cluster", data, out, quiet or as_json)
    options = {
        "components.augment": augment,
        "components.encoder": encoder,
        "components.fusion": fusion,
        "components.cluster": head,
        "cluster.epochs": epochs,
        "preprocess.log_normalized": log_normalized,
        "preprocess.batch_key": batch_key,
        "minibatch.batch_size": batch_size,
    }
    cfg = build_config(config, sets, n_clusters, seed=seed, device=device, **options)
    training = _Training(layer, label_key, transpose, checkpoint_every, resume, distributed, overwrite, quiet)
    _cluster(data, out, cfg, pretrained, training, plots, as_json)


@dataclass(frozen=True)
class _Training:
    """The options of ``scsc cluster`` on how to read the input and to train (see the command's options)."""

    layer: str | None
    label_key: str | None
    transpose: bool
    checkpoint_every: int
    resume: bool
    distributed: bool
    overwrite: bool
    quiet: bool


def _cluster(
    data: Path, out: Path, cfg: RunConfig, pretrained: Path | None, t: _Training, plots: bool, as_json: bool
) -> None:
    """``scsc cluster`` once its input and options are checked: train (as one rank of a torchrun job with
    --distributed), then on rank 0 write the run folder and its pretraining."""
    from ..api import run  # torch and the model: after the cheap checks of the input and options
    from ..session import RunControl

    ck_path = start_checkpoint(out, cfg, t.resume, t.overwrite)
    adata = None if t.distributed else _read(data, t.layer, t.label_key, t.transpose)

    def work(ctx):
        mine, readers = _rank_input(ctx, adata, data, t.layer, t.label_key, t.transpose)
        with RichReporter(err_console, enabled=not (t.quiet or as_json) and ctx.is_main) as rep:
            control = RunControl(
                ck_path,
                t.checkpoint_every,
                t.resume,
                keep_checkpoint=True,
                context=ctx,
                source=str(data),
                **readers,
            )
            return run(mine, config=cfg, pretrained=pretrained, reporter=rep, control=control)

    ctx, result = train_in_context(t.distributed, cfg.device, ck_path, work)
    if not ctx.is_main:
        return  # rank 0 writes the results (every rank has checked that its labels are the same)
    # The run's pretraining, for --pretrained: the file it started from, or out/pretrain.pt, which is written
    # unless an earlier one is there (from scsc pretrain, say) and --overwrite was not given.
    own = out / "pretrain.pt"
    write = pretrained is None and (t.overwrite or not own.exists())
    _finish(result, out, ck_path, plots, t.quiet, as_json, pretrained or (own if write else None), write)


def _finish(
    result,
    out: Path,
    ck_path: Path,
    plots: bool,
    quiet: bool,
    as_json: bool,
    reuse: Path | None = None,
    write_pretraining: bool = False,
) -> None:
    """Rank 0: write the run folder (and its pretraining to ``reuse`` when ``write_pretraining``), remove the
    checkpoint, print K's choice and the summary; ``reuse`` is the pretraining file named to the user."""
    from ..checkpoint import save_checkpoint
    from ..outputs import write_run

    if result.k_selection is not None and not as_json and not quiet:
        _print_k_selection(result, reuse)
    write_run(result, out, plots=plots)
    if write_pretraining:
        save_checkpoint(result.checkpoint, reuse)
    ck_path.unlink(
        missing_ok=True
    )  # only now: a kill while writing can still resume (the saved run is complete)
    summary = _run_summary(result, out)
    if reuse is not None:
        summary["pretraining"] = str(reuse)
    if as_json:
        print_json(summary)
    elif not quiet:
        _print_summary(summary)


def _set_k(cfg: RunConfig, n_clusters: str) -> None:
    """--n-clusters into the config: a K, candidates, or auto (which keeps what a --config file says)."""
    from ..errors import ScscError
    from ..k_selection import parse_k

    try:
        fixed_k, k_candidates = parse_k(n_clusters)
    except ValueError as exc:
        raise ScscError(str(exc)) from None
    if n_clusters.strip().lower() != "auto":  # a saved run's config.toml holds its K
        cfg.cluster.n_clusters, cfg.cluster.k_candidates = fixed_k, k_candidates


def _run_summary(result, out: Path) -> dict:
    """What ``scsc cluster`` prints (as a table or with --json) about a finished run."""
    uns = result.adata.uns["scsc"]
    return {
        "out": str(out),
        "cells": int(result.adata.n_obs),
        "n_clusters": result.n_clusters,
        "k_estimated": result.k_estimated,
        **({"k_selection": _k_summary(result.k_selection)} if result.k_selection is not None else {}),
        **({"k_candidates": sorted({*result.other_k, result.n_clusters})} if result.other_k else {}),
        "timings_s": result.timings,
        **({"peak_gpu_memory_gb": uns["peak_gpu_memory_gb"]} if "peak_gpu_memory_gb" in uns else {}),
        "minibatch": uns["minibatch"],
        "cluster_sizes": result.adata.obs["scsc_cluster"].value_counts().sort_index().to_dict(),
        **({"metrics": result.metrics} if result.metrics else {}),
    }


def _k_summary(sel) -> dict:
    return {
        "k": sel.k,
        "runner_up": sel.runner_up,
        "threshold": sel.threshold,
        "scores": {int(k): round(v, 4) for k, v in sorted(sel.scores.items())},
        "reason": sel.reason,
        "clear": sel.clear,
        "gap": None if sel.gap is None else round(sel.gap, 2),
        "verdict": sel.verdict(),
        "head_start": sel.head_start,
    }


def _print_k_selection(result, pretraining: Path | None = None) -> None:
    sel = result.k_selection
    ups = ", ".join(f"{k} ({sel.scores[k]:.3f})" for k in sel.runner_up if k in sel.scores)
    score = f"{sel.scores[sel.k]:.3f}" if sel.k in sel.scores else "n/a"
    console.print(
        f"K = [bold]{result.n_clusters}[/]"
        + (" (given)" if not result.k_estimated else " (estimated)")
        + f"; estimate: K = {sel.k}, score {score} (threshold {sel.threshold:g}; lower = better "
        f"separated); runner-up: {ups or 'none'}"
    )
    console.print(f"  {sel.reason}; score against K in k_selection.png")
    console.print(
        f"  {sel.verdict()}"
        + (
            f" and --pretrained {pretraining} (no second pretraining)"
            if pretraining is not None and not sel.clear and not sel.candidates
            else ""
        )
    )


def _print_summary(s: dict) -> None:
    table = Table(title=f"scsc cluster → {s['out']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("cells", f"{s['cells']:,}")
    table.add_row(
        "clusters",
        f"{s['n_clusters']}"
        + (" (estimated)" if s["k_estimated"] else "")
        + (
            f"; every K of {', '.join(map(str, s['k_candidates']))} in scsc_cluster_k<K>"
            if s.get("k_candidates")
            else ""
        ),
    )
    table.add_row("sizes", ", ".join(f"{k}: {v}" for k, v in s["cluster_sizes"].items()))
    mb = s["minibatch"]
    table.add_row(
        "training",
        "all cells at once"
        if not mb["batch_size"]
        else f"batches of {mb['batch_size']:,} cells ({mb['batches_per_round']} per round, "
        f"{mb['edges_in_batch']:.0%} of kNN edges inside a batch)",
    )
    t = s["timings_s"]
    table.add_row(
        "time",
        f"{t['total']:.1f} s (preprocess+graph {t['preprocess_graph']:.1f}, pretrain "
        f"{t['pretrain']:.1f}, cluster {t['cluster']:.1f})",
    )
    if "peak_gpu_memory_gb" in s:
        table.add_row("GPU memory", f"{s['peak_gpu_memory_gb']:.2f} GB at most")
    if "pretraining" in s:
        table.add_row("pretraining", f"{s['pretraining']} (--pretrained: cluster again without pretraining)")
    for name, m in s.get("metrics", {}).items():
        table.add_row(f"vs labels: {name}", "  ".join(f"{k.upper()} {v:.3f}" for k, v in m.items()))
    console.print(table)
