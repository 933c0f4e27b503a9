"""The Python API on AnnData: what the CLI calls and what a notebook imports.

>>> import scsc
>>> adata = scsc.read("data.h5")                    # any supported format → AnnData of raw counts
>>> adata = scsc.cluster(adata, n_clusters=8)       # obsm["X_scsc"], obs["scsc_cluster"], uns["scsc"]
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from . import __version__
from .checkpoint import Checkpointer, read_torch_file
from .config import RunConfig
from .data.batches import BatchPlan, plan_batches, resolve_batch_size
from .data.bundle import TrainData, build_train_data
from .data.io import LABEL_KEY, atomic_path
from .data.preprocess import Prepared, preprocess
from .distributed import Context
from .errors import ConfigError, InputError
from .evaluate import score
from .model import ScSiameseClu
from .plugins import Registry
from .train import Reporter, embed_cells, pretrained_embedding, seed_everything, train_clustering
from .train import pretrain as _pretrain_loop

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
            dotted["cluster.n_clusters"] = value
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


def estimate_n_clusters(z: np.ndarray, resolution: float = 1.0, seed: int = 0) -> int:
    """Estimate K as the number of Leiden communities on the 15-NN graph of the embedding ``z`` (N × d)."""
    import scanpy as sc

    from .numba_cache import cache_umap_kernels

    cache_umap_kernels()  # scanpy's neighbours import umap-learn
    tmp = ad.AnnData(X=np.zeros((z.shape[0], 1), dtype=np.float32))
    tmp.obsm["X_z"] = z
    sc.pp.neighbors(tmp, use_rep="X_z", n_neighbors=min(15, z.shape[0] - 1), random_state=seed)
    sc.tl.leiden(tmp, resolution=resolution, flavor="igraph", n_iterations=2, directed=False,
                 random_state=seed)
    return max(2, int(tmp.obs["leiden"].nunique()))


def _init_head(head: torch.nn.Module, z: torch.Tensor, k: int, ctx: Context) -> np.ndarray:
    """``head.init(z, k)`` (KMeans on Z, N × d) → initial labels (N,); under several ranks on rank 0, broadcast."""
    if not ctx.active:
        return head.init(z, k)
    from .checkpoint import head_state, restore_head

    labels = head.init(z, k) if ctx.is_main else None
    labels, state = ctx.broadcast((labels, head_state(head) if ctx.is_main else None))
    if not ctx.is_main:
        restore_head(head, state, z.device)
    return labels


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
             **overrides: Any) -> dict[str, Any]:
    """Run the three pretraining stages (METHOD §7) on ``adata`` (raw counts, N × G).

    Returns a checkpoint dict (``encoder`` state, ``config``, ``fingerprint`` of the preprocessed data,
    ``history``) that :func:`cluster` accepts as ``pretrained=`` and :func:`save_checkpoint` writes.
    """
    cfg = make_config(config, **overrides)
    check_device(cfg.device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prepared, data = prepare(adata, cfg, source)
    batches = plan(data, cfg)
    timings["preprocess_graph"] = time.perf_counter() - t0
    generator = seed_everything(cfg.seed)
    model = _build_model(cfg, prepared, registry)
    t0 = time.perf_counter()
    history = _pretrain_loop(model, data, cfg, generator, reporter, batches=batches)
    timings["pretrain"] = time.perf_counter() - t0
    return {"encoder": model.encoder.state_dict(), "config": cfg.to_dict(),
            "fingerprint": _fingerprint(prepared), "history": history, "timings": timings,
            "versions": versions()}


def cluster(adata: ad.AnnData, n_clusters: int | None = None, config: RunConfig | str | Path | None = None,
            *, pretrained: dict[str, Any] | str | Path | None = None, reporter: Reporter | None = None,
            registry: Registry | None = None, copy: bool = True, **overrides: Any) -> ad.AnnData:
    """Cluster the cells of ``adata`` (raw counts, N × G) with scSiameseClu.

    Returns an AnnData of the kept cells (cells with no counts are dropped) with ``obsm["X_scsc"]`` (N × d
    embedding), ``obs["scsc_cluster"]`` (categorical labels) and ``uns["scsc"]`` (config, versions, K, and
    metrics when ``obs["label"]`` holds true labels; those are read only for the final scores).
    """
    result = run(adata, n_clusters, config, pretrained=pretrained, reporter=reporter, registry=registry,
                 **overrides)
    if not copy and result.adata.n_obs == adata.n_obs:
        adata.obsm["X_scsc"] = result.adata.obsm["X_scsc"]
        adata.obs["scsc_cluster"] = result.adata.obs["scsc_cluster"].to_numpy()
        adata.uns["scsc"] = result.adata.uns["scsc"]
        return adata
    return result.adata


def run(adata: ad.AnnData, n_clusters: int | None = None, config: RunConfig | str | Path | None = None, *,
        pretrained: dict[str, Any] | str | Path | None = None, reporter: Reporter | None = None,
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
    ctx = context or Context()
    cfg = make_config(config, n_clusters=n_clusters, **overrides)
    check_device(cfg.device)
    if cfg.cluster.n_clusters is not None and cfg.cluster.n_clusters < 2:
        raise ConfigError("n_clusters must be at least 2")
    # Before any work: a missing checkpoint or a changed config is refused at once.
    ck = Checkpointer(checkpoint, checkpoint_every if ctx.is_main else 0, cfg, resume=resume)
    if pretrained is not None and ck.resumed_stage is not None and not ck.past_pretraining:
        raise ConfigError(f"{checkpoint}: the run stopped during pretraining; resume it without a pretrained "
                          "checkpoint")
    timings = ck.timings
    timings.start("total")
    timings.start("preprocess_graph")
    prepared, data = prepare(adata, cfg, source)
    if cfg.cluster.n_clusters is not None and cfg.cluster.n_clusters > data.n_cells:
        raise ConfigError(f"n_clusters={cfg.cluster.n_clusters} exceeds the {data.n_cells} cells")
    batches = plan(data, cfg)
    if ctx.active and batches is None:
        raise ConfigError(f"distributed training runs on minibatches, and {data.n_cells:,} cells are trained "
                          "full batch by default; pass --batch-size (minibatch.batch_size) below that")
    timings.stop("preprocess_graph")
    generator = seed_everything(cfg.seed)
    model = _build_model(cfg, prepared, registry)
    ck.attach(model, generator, _fingerprint(prepared))
    history = ck.history  # the loops append to this list, so every checkpoint holds the history so far

    timings.start("pretrain")
    if ck.past_pretraining:
        # The saved model replaces the encoder below; this is what the run returns as its pretraining record.
        ckpt = {"history": [row for row in history if row["stage"].startswith("pretrain")]}
    elif pretrained is None:
        ck.restore()  # a no-op unless the run stopped during pretraining
        ckpt = {"history": list(_pretrain_loop(model, data, cfg, generator, reporter, history=history,
                                               checkpoint=ck, batches=batches, context=ctx))}
    else:
        where = str(pretrained) if not isinstance(pretrained, dict) else "pretrained"
        ckpt = load_checkpoint(pretrained) if not isinstance(pretrained, dict) else pretrained
        _check_fingerprint(ckpt["fingerprint"], prepared, where)
        try:
            model.encoder.load_state_dict(ckpt["encoder"])
        except RuntimeError:
            raise InputError(f"{where}: checkpoint does not match the encoder "
                             f"{cfg.components.encoder!r} with these model sizes") from None
        history += ckpt.get("history", [])
    if pretrained is None or ck.past_pretraining:
        # A copy: state_dict() shares storage with the weights, which the clustering stage goes on to change.
        ckpt.update(encoder=_state_copy(model.encoder), config=cfg.to_dict(), fingerprint=_fingerprint(prepared),
                    versions=versions())
    timings.stop("pretrain")

    timings.start("init")
    k_estimated = cfg.cluster.n_clusters is None
    if ck.past_pretraining:
        # Saved: rebuild the augmenter's views from the same embedding, then restore the trained state.
        model.augment.prepare(data, ck.z_pre)
        k, init_labels = ck.k, ck.init_labels
        ck.restore()
    else:
        z_pre = pretrained_embedding(model, data, batches).cpu().numpy()
        model.augment.prepare(data, z_pre)
        k = cfg.cluster.n_clusters or ctx.broadcast(
            estimate_n_clusters(z_pre, cfg.cluster.leiden_resolution, cfg.seed) if ctx.is_main else None)
        init_labels = _init_head(model.head, embed_cells(model, data, batches), k, ctx)
        ck.z_pre, ck.k, ck.init_labels = z_pre, int(k), init_labels
    timings.stop("init")

    timings.start("cluster")
    epochs = cfg.cluster.epochs
    warmup = max(0, min(cfg.cluster.warmup_epochs, epochs))
    if warmup > 0:
        stage = ck.stage("cluster_warmup")
        first = stage.first_epoch(0, warmup)
        if first < warmup:
            train_clustering(model, data, cfg, generator, reporter, epochs=warmup - first, start_epoch=first,
                             exclude=frozenset({"clu"}), stage="cluster: warm-up", history=history,
                             checkpoint=stage, batches=batches, stream="cluster_warmup", context=ctx)
        if ck.resumed_stage != "cluster":  # a run resumed past the warm-up has its re-initialised head back
            _init_head(model.head, embed_cells(model, data, batches), k, ctx)
    stage = ck.stage("cluster")
    first = stage.first_epoch(warmup, epochs)
    if first < epochs:
        train_clustering(model, data, cfg, generator, reporter, epochs=epochs - first, start_epoch=first,
                         history=history, checkpoint=stage, batches=batches, context=ctx)
    z = embed_cells(model, data, batches)
    labels = model.head.predict(z)
    ctx.check_same(labels)
    timings.stop("cluster")
    timings.stop("total")
    if not keep_checkpoint and ctx.is_main:
        ck.remove()

    out = prepared.adata
    emb = z.cpu().numpy()
    out.obsm["X_scsc"] = emb
    out.obs["scsc_cluster"] = pd.Categorical(labels.astype(str),
                                             categories=[str(i) for i in range(k) if i in set(labels)])
    out.obs["scsc_pretrain_kmeans"] = pd.Categorical(init_labels.astype(str))
    metrics = None
    if LABEL_KEY in out.obs:
        truth = out.obs[LABEL_KEY].to_numpy()
        metrics = {"scsc": score(truth, labels), "pretrain_kmeans": score(truth, init_labels)}
    saved_cfg = cfg.copy()
    saved_cfg.cluster.n_clusters = k
    timings = dict(timings)
    out.uns["scsc"] = {
        "config": saved_cfg.to_toml(),
        "versions": versions(),
        "n_clusters": int(k),
        "k_estimated": bool(k_estimated),
        "timings": {key: float(v) for key, v in timings.items()},
        "cells_removed": int((~prepared.cell_mask).sum()),
        "minibatch": _batch_summary(batches, data),
        **({"metrics": metrics} if metrics else {}),
    }
    return RunResult(adata=out, config=saved_cfg, labels=labels, embedding=emb, history=list(history),
                     n_clusters=int(k), k_estimated=k_estimated, metrics=metrics, timings=timings,
                     model=model, checkpoint=ckpt)
