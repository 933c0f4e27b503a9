"""The Python API on AnnData: what the CLI calls and what a notebook imports.

>>> import scsc
>>> adata = scsc.read("data.h5")                    # any supported format → AnnData of raw counts
>>> adata = scsc.cluster(adata, n_clusters=8)       # obsm["X_scsc"], obs["scsc_cluster"], uns["scsc"]
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from . import __version__
from .checkpoint import read_torch_file
from .config import RunConfig
from .data.batches import BatchPlan, plan_batches, resolve_batch_size
from .data.bundle import TrainData, build_train_data
from .data.io import atomic_path
from .data.preprocess import Prepared, preprocess
from .distributed import Context
from .errors import ConfigError, InputError
from .k_selection import KSelection, parse_k
from .model import ScSiameseClu
from .plugins import Registry
from .session import RunSession
from .train import Reporter

#: Short keyword names accepted by :func:`cluster` and :func:`pretrain`.
ALIASES = {
    "augment": "components.augment",
    "encoder": "components.encoder",
    "fusion": "components.fusion",
    "head": "components.cluster",
    "epochs": "cluster.epochs",
    "lr": "cluster.lr",
    "k": "graph.k",
    "n_hvg": "preprocess.n_hvg",
    "n_pcs": "preprocess.n_pcs",
    "log_normalized": "preprocess.log_normalized",
    "batch_size": "minibatch.batch_size",
}


def make_config(config: RunConfig | str | Path | None = None, **overrides: Any) -> RunConfig:
    """A :class:`RunConfig` from a config object or TOML path plus keyword overrides.

    Keywords are top-level fields (``seed``, ``device``), aliases (``augment``, ``encoder``, ``fusion``,
    ``head``, ``epochs``, ``lr``, ``k``, ``batch_size``, …) or ``section__key`` names such as ``loss__zinb=0``.
    """
    if config is None:
        cfg = RunConfig()
    elif isinstance(config, RunConfig):
        cfg = config.copy()
    else:
        cfg = RunConfig.from_toml(config)
    dotted = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "n_clusters":
            try:
                fixed, candidates = parse_k(value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if fixed is not None or candidates:
                dotted["cluster.n_clusters"] = fixed
                dotted["cluster.k_candidates"] = candidates
        else:
            dotted[ALIASES.get(key, key.replace("__", "."))] = value
    return cfg.override(dotted)


def check_device(device: str) -> None:
    """Refuse a device that this machine does not have, with a clear message."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine; use --device cpu")
    if device not in {"cpu"} and not device.startswith("cuda") and device != "mps":
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")


# ----------------------------------------------------------------------------- data
def prepare(adata: ad.AnnData, config: RunConfig, source: str | Path | None = None
            ) -> tuple[Prepared, TrainData]:
    """Preprocess (METHOD §1) and build the kNN graph and tensors (METHOD §2)."""
    prepared = preprocess(adata, config.preprocess, seed=config.seed,
                          min_cells_required=config.graph.k + 1, source=source)
    full_batch = resolve_batch_size(config.minibatch, prepared.n_cells) == 0
    data = build_train_data(prepared, config.graph, seed=config.seed, device=config.device,
                            dense_counts=full_batch)
    return prepared, data


def plan(data: TrainData, config: RunConfig) -> BatchPlan | None:
    """The minibatch plan of a run (scsc/data/batches.py), or None for full-batch training."""
    size = resolve_batch_size(config.minibatch, data.n_cells)
    if size == 0:
        return None
    return plan_batches(data.x.cpu().numpy(), data.knn, config.minibatch, size, seed=config.seed)


def _batch_summary(batches: BatchPlan | None, data: TrainData) -> dict[str, Any]:
    if batches is None:
        return {"batch_size": 0}
    eval_batches = batches.eval_batches()
    return {"batch_size": batches.batch_size, "parts": len(batches.parts), "batches_per_round": len(eval_batches),
            "edges_in_batch": batches.edge_coverage(data.knn, eval_batches)}


def _fingerprint(prepared: Prepared) -> dict[str, Any]:
    x = prepared.x
    return {"n_cells": int(x.shape[0]), "n_input": int(x.shape[1]),
            "n_genes": 0 if prepared.counts is None else int(prepared.counts.shape[1]),
            "abs_sum": float(np.abs(x).sum(dtype=np.float64))}


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict whose tensors no longer share storage with ``module``'s parameters."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _build_model(config: RunConfig, prepared: Prepared, registry: Registry | None) -> ScSiameseClu:
    fp = _fingerprint(prepared)
    model = ScSiameseClu(config, fp["n_cells"], fp["n_input"], fp["n_genes"], registry=registry)
    # Explicit float32: the data are float32 whatever torch's default dtype is in the caller's session.
    return model.to(device=config.device, dtype=torch.float32)


# ----------------------------------------------------------------------------- results
@dataclass
class RunResult:
    """Everything a clustering run produced (the CLI writes it to a run directory)."""

    adata: ad.AnnData
    config: RunConfig
    labels: np.ndarray
    embedding: np.ndarray
    history: list[dict]
    n_clusters: int
    k_estimated: bool
    metrics: dict[str, dict[str, float]] | None
    timings: dict[str, float]
    model: ScSiameseClu
    checkpoint: dict[str, Any] = field(default_factory=dict)
    #: How K was estimated (None when it was given without candidates).
    k_selection: KSelection | None = None
    #: Labels (N,) of every other candidate K (``cluster.k_candidates``), from the same pretraining.
    other_k: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def loss_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)


def versions() -> dict[str, str]:
    """Versions of scsc and the libraries that shape its results (from package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"scsc": __version__, "python": platform.python_version()}
    for dist in ("torch", "anndata", "scanpy", "pot", "scikit-learn"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary name, then rename (never a half-written checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pretraining checkpoint (``pretrain.pt``); a missing or foreign file raises :class:`InputError`."""
    payload = read_torch_file(path, "checkpoint not found")
    if not isinstance(payload, dict) or "encoder" not in payload or "fingerprint" not in payload:
        raise InputError(f"{path}: not a scsc pretraining checkpoint")
    return payload


def _check_fingerprint(saved: dict, prepared: Prepared, where: str) -> None:
    now = _fingerprint(prepared)
    for key in ("n_cells", "n_input", "n_genes"):
        if saved.get(key) != now[key]:
            raise InputError(
                f"{where}: checkpoint was pretrained on different data ({key} {saved.get(key)} ≠ {now[key]})"
            )
    if not np.isclose(saved.get("abs_sum", 0.0), now["abs_sum"], rtol=1e-4):
        raise InputError(f"{where}: checkpoint was pretrained on different data or preprocessing")


# ----------------------------------------------------------------------------- public API
def pretrain(adata: ad.AnnData, config: RunConfig | str | Path | None = None, *,
             reporter: Reporter | None = None, registry: Registry | None = None, source: str | None = None,
             checkpoint: str | Path | None = None, checkpoint_every: int = 10, resume: bool = False,
             context: Context | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the three pretraining stages (METHOD §7) on ``adata`` (raw counts, N × G).

    Returns a checkpoint dict (``encoder`` state, ``config``, ``fingerprint`` of the preprocessed data,
    ``history``, ``timings``) that :func:`cluster` accepts as ``pretrained=`` and :func:`save_checkpoint`
    writes. ``checkpoint``, ``checkpoint_every``, ``resume`` and ``context`` work as in :func:`run` (these are
    the first steps of the same :class:`~scsc.session.RunSession`); the run checkpoint is left in place for the
    caller to remove once the result is saved.
    """
    cfg = make_config(config, **overrides)
    session = RunSession(adata, cfg, reporter=reporter, registry=registry, source=source, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume, context=context)
    session.prepare()
    session.pretrain()
    timings = {key: float(session.timings[key]) for key in ("preprocess_graph", "pretrain")}
    return {**session.record, "timings": timings}


def cluster(adata: ad.AnnData, n_clusters: int | str | Sequence[int] | None = None,
            config: RunConfig | str | Path | None = None, *, pretrained: dict[str, Any] | str | Path | None = None, reporter: Reporter | None = None,
            registry: Registry | None = None, copy: bool = True, **overrides: Any) -> ad.AnnData:
    """Cluster the cells of ``adata`` (raw counts, N × G) with scSiameseClu.

    ``n_clusters``: ``None`` or ``"auto"`` estimates K (scsc/k_selection.py); an int fixes it; a list such as
    ``[6, 8, 10]``, ``"6,8,10"`` or a range ``"5:15"`` clusters every candidate from one pretraining
    (``obs["scsc_cluster_k<K>"]``) and keeps the one the estimate prefers as ``obs["scsc_cluster"]``.

    Returns an AnnData of the kept cells (cells with no counts are dropped) with ``obsm["X_scsc"]`` (N × d
    embedding), ``obs["scsc_cluster"]`` (categorical labels) and ``uns["scsc"]`` (config, versions, K, how K was
    chosen in ``uns["scsc"]["k_selection"]``, and metrics when ``obs["label"]`` holds true labels; those are
    read only for the final scores).
    """
    result = run(adata, n_clusters, config, pretrained=pretrained, reporter=reporter, registry=registry,
                 **overrides)
    if not copy and result.adata.n_obs == adata.n_obs:
        adata.obsm["X_scsc"] = result.adata.obsm["X_scsc"]
        for key in result.adata.obs:
            if key.startswith("scsc_cluster"):
                adata.obs[key] = result.adata.obs[key].to_numpy()
        adata.uns["scsc"] = result.adata.uns["scsc"]
        return adata
    return result.adata


def run(adata: ad.AnnData, n_clusters: int | str | Sequence[int] | None = None,
        config: RunConfig | str | Path | None = None, *, pretrained: dict[str, Any] | str | Path | None = None, reporter: Reporter | None = None,
        registry: Registry | None = None, source: str | None = None, checkpoint: str | Path | None = None,
        checkpoint_every: int = 10, resume: bool = False, keep_checkpoint: bool = False,
        context: Context | None = None, **overrides: Any) -> RunResult:
    """:func:`cluster` with every intermediate returned as a :class:`RunResult`.

    With ``checkpoint`` (a file path), the whole training state is written there every ``checkpoint_every``
    epochs of each stage and after each stage's last epoch (0 disables). ``resume=True`` continues from that
    file: the config must equal the saved one and the data must be the same; the result then equals that of an
    uninterrupted run (same seed, same machine). The file is removed when the run finishes, unless
    ``keep_checkpoint`` (the CLI removes it only once the results are written).

    ``context`` (from :func:`scsc.distributed.from_environment` under ``torchrun``) makes this process one rank
    of a data-parallel run: minibatch training is required, rank 0 alone writes the checkpoint, and every rank
    returns the same result.
    """
    cfg = make_config(config, n_clusters=n_clusters, **overrides)
    session = RunSession(adata, cfg, pretrained=pretrained, reporter=reporter, registry=registry, source=source,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, context=context)
    session.prepare()
    session.pretrain()
    session.choose_k()
    session.train()
    session.other_k()
    return session.result(keep_checkpoint)
