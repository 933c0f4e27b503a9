"""One clustering run as an object whose steps read top to bottom.

    session = RunSession(adata, config, ...)
    session.prepare()        # METHOD §1–2: preprocess, kNN graph, minibatch plan
    session.pretrain()       # METHOD §7: the three pretraining stages (or a pretrained checkpoint)
    session.choose_k()       # the given K, or the estimate of scsc/k_selection.py
    session.train()          # initialise the head (KMeans), then the clustering stage; final labels
    session.other_k()        # every further candidate K, from the same pretraining
    result = session.result()

:func:`scsc.api.run` is exactly this sequence. A resumed run (:class:`RunControl` with ``checkpoint`` and
``resume``) skips what the saved run had finished and continues from its state; the result then equals an
uninterrupted run's.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from . import __version__
from .checkpoint import Checkpointer, check_same_data, load_checkpoint, restore_rng, rng_state
from .components.base import capability
from .config import ClusterConfig, RunConfig, check_device
from .data.batches import BatchPlan, distributed_batch_size, plan_batches
from .data.io import LABEL_KEY
from .data.prepare import batch_summary, fingerprint, plan, prepare
from .data.preprocess import kept_input, kept_input_by_rows
from .data.shards import hold_cells
from .distributed import Context
from .errors import ConfigError, InputError
from .evaluate import score
from .k_selection import KSelection, partition_at, select_k
from .memory import release_free_memory
from .model import ScSiameseClu
from .plugins import Registry
from .train import (
    CLUSTER,
    WARMUP,
    Reporter,
    SilentReporter,
    TrainState,
    embed_cells,
    pretrained_embedding,
    seed_everything,
    train_clustering,
)
from .train import pretrain as pretrain_stages

#: The progress label of preprocessing and the cell graph (before the training stages' own bars).
PREPARE_STAGE = "preprocess + kNN graph"
#: Values of ``cluster.estimated_start``: where the head starts when K is estimated.
ESTIMATED_STARTS = ("partition", "kmeans")


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


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict whose tensors no longer share storage with ``module``'s parameters."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def build_model(config: RunConfig, fp: dict[str, Any], registry: Registry | None) -> ScSiameseClu:
    """The model with the chosen components for data of fingerprint ``fp`` (:func:`~scsc.data.prepare.fingerprint`:
    N, P, G), in float32 on ``config.device``."""
    model = ScSiameseClu(config, fp["n_cells"], fp["n_input"], fp["n_genes"], registry=registry)
    # Explicit float32: the data are float32 whatever torch's default dtype is in the caller's session.
    return model.to(device=config.device, dtype=torch.float32)


@dataclass(frozen=True)
class RunControl:
    """How a run is driven, not what it computes (the config says that): checkpoints, resume, rank, names.

    ``checkpoint`` (a file path): the whole training state is written there every ``checkpoint_every`` epochs of
    each stage and after each stage's last epoch (0 disables). ``resume=True`` continues from that file: the
    config must equal the saved one and the data must be the same; the result then equals that of an
    uninterrupted run (same seed, same machine). The file is removed when the run finishes, unless
    ``keep_checkpoint`` (the CLI removes it only once the results are written).

    ``context`` (from :func:`scsc.distributed.from_environment` under ``torchrun``) makes this process one rank
    of a data-parallel run: minibatch training is required, rank 0 alone writes the checkpoint, and each rank
    keeps the counts of its own cells only (:mod:`scsc.data.shards`). The ``adata`` of such a run is every cell
    (each rank then takes its shard of the rows), or, with ``whole_input``, this rank's shard
    (rows :meth:`Context.shard` of the input): ``whole_input()`` then reads the whole input when rank 0 builds
    the result, or, given ``input_rows`` (reads input cells ``lo:hi`` from disk), rank 0 reads it a shard at
    a time and never holds the whole input's counts. ``source`` names the input in error messages (the file
    the data came from).
    """

    checkpoint: str | Path | None = None
    checkpoint_every: int = 10
    resume: bool = False
    keep_checkpoint: bool = False
    context: Context | None = None
    source: str | None = None
    whole_input: Callable[[], ad.AnnData] | None = None
    input_rows: Callable[[int, int], ad.AnnData] | None = None


def _check_cluster_config(c: ClusterConfig) -> None:
    """Refuse, before any work, values of the ``cluster`` section that no run can use."""
    for k in ([c.n_clusters] if c.n_clusters is not None else []) + list(c.k_candidates):
        if k < 2:
            raise ConfigError("n_clusters must be at least 2")
    if c.input_weight < 0 or c.kmeans_restarts < 1:
        raise ConfigError(
            f"cluster.input_weight must be ≥ 0 and cluster.kmeans_restarts ≥ 1 (got "
            f"{c.input_weight:g} and {c.kmeans_restarts})"
        )
    if not 0 <= c.k_min_size < 0.5:
        raise ConfigError(
            f"cluster.k_min_size is a fraction of the cells, at least 0 and below 0.5 (got {c.k_min_size:g})"
        )
    if c.estimated_start not in ESTIMATED_STARTS:
        raise ConfigError(
            f"cluster.estimated_start must be one of {', '.join(ESTIMATED_STARTS)} (got "
            f"{c.estimated_start!r})"
        )
    if c.k_candidates and c.n_clusters is not None and c.n_clusters not in c.k_candidates:
        raise ConfigError(
            f"cluster.n_clusters = {c.n_clusters} is not one of cluster.k_candidates {list(c.k_candidates)}"
        )


class RunSession:
    """The state of one run (data, model, RNG, checkpoints, distributed context) and its steps.

    Args mirror :func:`scsc.api.run`; ``config`` is the effective :class:`RunConfig` (already merged).
    """

    def __init__(
        self,
        adata: ad.AnnData,
        config: RunConfig,
        *,
        pretrained: dict | str | Path | None = None,
        reporter: Reporter | None = None,
        registry: Registry | None = None,
        control: RunControl | None = None,
    ):
        self.control = control = control or RunControl()
        self.adata, self.cfg, self.source = adata, config, control.source
        self.pretrained, self.reporter, self.registry = pretrained, reporter, registry
        self.ctx = control.context or Context()
        checkpoint = control.checkpoint
        check_device(config.device)
        _check_cluster_config(config.cluster)
        if self.ctx.active and config.minibatch.batch_size is not None and config.minibatch.batch_size <= 0:
            raise ConfigError(
                "distributed training runs on minibatches, and --batch-size "
                f"{config.minibatch.batch_size} trains all cells at once; pass a positive one"
            )
        # Before any work: a missing checkpoint or a changed config is refused at once.
        self.checkpointer = Checkpointer(
            checkpoint, control.checkpoint_every if self.ctx.is_main else 0, config, resume=control.resume
        )
        ck = self.checkpointer
        if pretrained is not None and ck.resumed_stage is not None and not ck.past_pretraining:
            raise ConfigError(
                f"{checkpoint}: the run stopped during pretraining; resume it without a pretrained checkpoint"
            )
        self.timings = self.checkpointer.timings
        # The loops append here, so every checkpoint holds the history so far.
        self.history = self.checkpointer.history
        self.k: int | None = None
        self.selection: KSelection | None = None
        self.labels: np.ndarray | None = None
        self.z: torch.Tensor | None = None
        self.init_labels: np.ndarray | None = None
        self.z_start: torch.Tensor | None = None  # Z at the start of the clustering stage (fresh runs)
        self.extra: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ steps
    def prepare(self) -> None:
        """Preprocess, build the graph and the minibatch plan; seed and build the model."""
        cfg, ctx = self.cfg, self.ctx
        if cfg.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(cfg.device)
        self.timings.start("total")
        self.timings.start("preprocess_graph")
        adata = self.adata
        if ctx.active and self.control.whole_input is None:  # every cell given: this rank takes its shard
            adata = adata[slice(*ctx.shard(adata.n_obs))]
        # A bar from the start: preprocessing and the kNN search take seconds to minutes before training begins.
        reporter = self.reporter or SilentReporter()
        reporter.start(PREPARE_STAGE, 1)
        self.prepared, self.data = prepare(adata, cfg, self.source, ctx)
        reporter.advance(PREPARE_STAGE, {})
        reporter.stop(PREPARE_STAGE)
        n = self.data.n_cells
        too_many = [k for k in [cfg.cluster.n_clusters, *cfg.cluster.k_candidates] if k is not None and k > n]
        if too_many:
            raise ConfigError(f"n_clusters={max(too_many)} exceeds the {n} cells")
        self.batches: BatchPlan | None = plan(self.data, cfg)
        if ctx.active and self.batches is None:
            self.batches = self._distributed_plan(n)
        if ctx.active:  # each rank trains on its own region of the graph and holds only its cells' counts
            self.batches = self.batches.for_rank(ctx.rank, ctx.world)
            self.data = hold_cells(self.data, self.batches.cells, ctx)
        self.timings.stop("preprocess_graph")
        self.generator = seed_everything(cfg.seed)
        self.fingerprint = fingerprint(self.prepared)  # once: a sum over all of X
        if ctx.active:  # the shard's counts now live in self.data as the rank's own cells' rows
            self.prepared.counts = None
            self.prepared.adata.X = None
        self._release()  # reading, preprocessing and the kNN search leave large freed blocks
        self.model = build_model(cfg, self.fingerprint, self.registry)
        # The built-in heads cluster Z beside the model input (cluster.input_weight).
        use_input = getattr(self.model.head, "use_input", None)
        if use_input is not None:
            use_input(self.data.x)
        self.checkpointer.attach(self.model, self.generator, self.fingerprint)
        self.state = TrainState(
            self.model,
            self.data,
            cfg,
            self.generator,
            history=self.history,
            checkpoint=self.checkpointer,
            batches=self.batches,
            context=ctx,
            **({"reporter": self.reporter} if self.reporter is not None else {}),
        )

    def _distributed_plan(self, n: int) -> BatchPlan:
        """The minibatch plan of a distributed run over ``n`` cells that would be full batch in one process."""
        cfg, ctx = self.cfg, self.ctx
        if cfg.minibatch.batch_size is not None:  # the user asked for full batch
            raise ConfigError(
                f"distributed training runs on minibatches, and --batch-size "
                f"{cfg.minibatch.batch_size} trains all {n:,} cells at once; pass a smaller one"
            )
        # Asking for several ranks is asking for minibatches: a size that gives every rank a batch.
        size = distributed_batch_size(cfg.minibatch, n, ctx.world)
        batches = plan_batches(self.data.x.cpu().numpy(), self.data.knn, cfg.minibatch, size, seed=cfg.seed)
        if ctx.is_main:
            self._note(
                f"distributed over {ctx.world} ranks: batches of {size:,} of the {n:,} cells "
                "(set --batch-size to choose)"
            )
        return batches

    def pretrain(self) -> None:
        """The three pretraining stages, a saved run's pretraining, or the weights of ``pretrained``."""
        ck, model, cfg = self.checkpointer, self.model, self.cfg
        self.timings.start("pretrain")
        if ck.past_pretraining:
            record = {"history": [row for row in self.history if row["stage"].startswith("pretrain")]}
            if ck.pretrained_state is not None:
                record["encoder"] = ck.pretrained_state["encoder"]
        elif self.pretrained is None:
            ck.restore()  # a no-op unless the run stopped during pretraining
            record = {"history": list(pretrain_stages(self.state))}
        else:
            where = str(self.pretrained) if not isinstance(self.pretrained, dict) else "pretrained"
            record = (
                self.pretrained if isinstance(self.pretrained, dict) else load_checkpoint(self.pretrained)
            )
            check_same_data(
                record["fingerprint"], self.fingerprint, where, written="pretrained on", rtol=1e-4
            )
            try:
                model.encoder.load_state_dict(record["encoder"])
            except RuntimeError:
                raise InputError(
                    f"{where}: checkpoint does not match the encoder "
                    f"{cfg.components.encoder!r} with these model sizes"
                ) from None
            self.history += record.get("history", [])
            # The same seed continues the random streams where the pretraining left them, so clustering from a
            # saved pretraining gives the labels of the run that pretrained (another seed draws afresh).
            if "rng" in record and record.get("config", {}).get("seed") == cfg.seed and not self.ctx.active:
                restore_rng(record["rng"], self.generator)
        if self.pretrained is None or ck.past_pretraining:
            # A copy: state_dict() shares storage with the weights, which the clustering stage goes on to change.
            record.setdefault("encoder", _state_copy(model.encoder))
            record.update(config=cfg.to_dict(), fingerprint=self.fingerprint, versions=versions())
            if not ck.past_pretraining and not self.ctx.active:
                record["rng"] = rng_state(self.generator)
        self.record = record
        self.timings.stop("pretrain")

    def choose_k(self) -> None:
        """Prepare the augmenter on the pretrained embedding; K given, or estimated on it (rank 0, broadcast)."""
        ck, model, c = self.checkpointer, self.model, self.cfg.cluster
        self.timings.start("init")
        if ck.past_pretraining:
            # Saved: rebuild the augmenter's views from the same embedding; train() restores the trained state.
            self._prepare_augmenter(ck.z_pre)
            self.k, self.selection = ck.k, ck.k_selection
            self.start_state = ck.pretrained_state
            return
        self._release()  # before the whole-data embeddings, the largest temporaries of a minibatch run
        self.z_pre = pretrained_embedding(model, self.data, self.batches, self.ctx).cpu().numpy()
        self._prepare_augmenter(self.z_pre)
        # Z on the augmenter's views: what the head's KMeans starts from, and what K is estimated on.
        self.z_start = embed_cells(model, self.data, self.batches, self.ctx)
        # The state every K's clustering stage starts from (other_k() returns to it).
        self.start_state = {
            "encoder": _state_copy(model.encoder),
            "fusion": _state_copy(model.fusion),
            "rng": rng_state(self.generator),
        }
        if c.n_clusters is not None:
            self.k = c.n_clusters
            if c.k_candidates:
                self.selection = self._estimate()
        else:
            self.selection = self._estimate()
            self.k = self.selection.k
        # The estimate must not move the training's random streams: fixed and estimated K train alike.
        restore_rng(self.start_state["rng"], self.generator)
        ck.z_pre, ck.k, ck.k_selection, ck.pretrained_state = (
            self.z_pre,
            int(self.k),
            self.selection,
            self.start_state,
        )

    def _estimate(self) -> KSelection:
        c = self.cfg.cluster
        allowed = list(c.k_candidates) or None
        z = self.z_start.cpu().numpy()
        mine = (
            select_k(
                z,
                c.k_threshold,
                c.leiden_resolution,
                self.cfg.seed,
                allowed,
                min_fraction=c.k_min_size,
                exact_max_cells=self.cfg.graph.exact_max_cells,
            )
            if self.ctx.is_main
            else None
        )
        return self.ctx.broadcast(mine)

    def _start_partition(self) -> Callable[[np.ndarray], np.ndarray | None] | None:
        """For an estimated K (``cluster.estimated_start = "partition"``): what finds the head's start on the
        features the head gives it, the estimate's merge path on their graph
        (:func:`~scsc.k_selection.partition_at`), and records in the selection which start was used. None:
        KMeans's own starts (K given, or a head without ``init_from``)."""
        c, sel = self.cfg.cluster, self.selection
        if sel is None:
            return None
        sel.head_start = "kmeans"
        if (
            c.n_clusters is not None
            or c.estimated_start != "partition"
            or not hasattr(self.model.head, "init_from")
        ):
            return None

        def find(features: np.ndarray) -> np.ndarray | None:
            labels = partition_at(
                features,
                self.k,
                c.leiden_resolution,
                self.cfg.seed,
                c.k_min_size,
                self.cfg.graph.exact_max_cells,
            )
            sel.head_start = "kmeans" if labels is None else "partition"
            return labels

        return find

    def train(self) -> None:
        """Initialise the head at K (KMeans), run the clustering stage, predict the final labels."""
        ck = self.checkpointer
        if ck.past_pretraining:
            self.init_labels = ck.init_labels
            ck.restore()
        else:
            self.init_labels = self._init_head(self.k, self.z_start, self._start_partition())
            ck.init_labels = self.init_labels
        self.timings.stop("init")
        self.timings.start("cluster")
        self.z, self.labels = self._cluster_stage(self.k, self.state)
        self.timings.stop("cluster")

    def other_k(self) -> None:
        """Cluster every other candidate K from the pretraining's end state (the result a run at that K gives)."""
        from .checkpoint import disabled

        ks = [k for k in self.cfg.cluster.k_candidates if k != self.k]
        if not ks:
            return
        if self.start_state is None:
            raise ConfigError(
                "the checkpoint holds no pretrained state to cluster the other candidate K from"
            )
        end = {"encoder": _state_copy(self.model.encoder), "fusion": _state_copy(self.model.fusion)}
        head_end = self._head_copy()
        self.timings.start("other_k")
        for k in ks:
            self.model.encoder.load_state_dict(self.start_state["encoder"])
            self.model.fusion.load_state_dict(self.start_state["fusion"])
            restore_rng(self.start_state["rng"], self.generator)
            self._init_head(k, self.z_start)
            _, self.extra[k] = self._cluster_stage(k, replace(self.state, checkpoint=disabled(), history=[]))
        self.timings.stop("other_k")
        self.model.encoder.load_state_dict(end["encoder"])
        self.model.fusion.load_state_dict(end["fusion"])
        self._restore_head(head_end)
        self.extra[self.k] = self.labels

    # ------------------------------------------------------------------ pieces
    def _prepare_augmenter(self, z_pre: np.ndarray) -> None:
        """The augmenter's views from the pretrained embedding (N × d); an augmenter that declares
        ``takes_context`` shares the work over the ranks."""
        augment = self.model.augment
        if capability(augment, "takes_context"):
            augment.prepare(self.data, z_pre, context=self.ctx)
        else:
            augment.prepare(self.data, z_pre)

    def _release(self) -> None:
        """Hand freed memory back to the OS (:mod:`scsc.memory`) in minibatch runs, the large-data mode; a
        full-batch run is small, and the garbage collection would cost it a noticeable share of its time."""
        if self.batches is not None:
            release_free_memory()

    def _note(self, message: str) -> None:
        """A one-line notice through the reporter (the CLI prints it; a silent run drops it)."""
        note = getattr(self.reporter, "note", None)
        if note is not None:
            note(message)

    def _init_head(
        self,
        k: int,
        z: torch.Tensor | None = None,
        start: Callable[[np.ndarray], np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """``head.init(Z, k)`` (KMeans on Z, N × d; the current embedding unless given), or
        ``head.init_from(Z, k, start)`` from the partition ``start`` finds → initial labels (N,); under several
        ranks on rank 0, broadcast."""
        from .checkpoint import head_state, restore_head

        head, ctx = self.model.head, self.ctx
        z = embed_cells(self.model, self.data, self.batches, self.ctx) if z is None else z

        def init() -> np.ndarray:
            return head.init(z, k) if start is None else head.init_from(z, k, start)

        if not ctx.active:
            return init()
        labels = init() if ctx.is_main else None
        labels, state = ctx.broadcast((labels, head_state(head) if ctx.is_main else None))
        if not ctx.is_main:
            restore_head(head, state, z.device)
        return labels

    def _cluster_stage(self, k: int, state: TrainState) -> tuple[torch.Tensor, np.ndarray]:
        """Warm-up (optional) and clustering epochs from the initialised head → (Z (N × d), labels (N,))."""
        ck, epochs = state.checkpoint, self.cfg.cluster.epochs
        warmup = max(0, min(self.cfg.cluster.warmup_epochs, epochs))
        if warmup > 0:
            train_clustering(state, WARMUP, range(ck.stage(WARMUP.name).first_epoch(0, warmup), warmup))
            if (
                ck.resumed_stage != "cluster"
            ):  # a run resumed past the warm-up has its re-initialised head back
                self._init_head(k)
        train_clustering(state, CLUSTER, range(ck.stage(CLUSTER.name).first_epoch(warmup, epochs), epochs))
        self._release()
        z = embed_cells(self.model, self.data, self.batches, self.ctx)
        refit = getattr(self.model.head, "refit", None)
        if self.batches is not None and self.cfg.cluster.refit_after_minibatch and refit is not None:
            refit(z)
        labels = self.model.head.predict(z)
        self.ctx.check_same(labels)
        return z, labels

    def _head_copy(self) -> dict[str, Any]:
        from .checkpoint import head_state

        return head_state(self.model.head)

    def _restore_head(self, state: dict[str, Any]) -> None:
        from .checkpoint import restore_head

        restore_head(self.model.head, state, self.cfg.device)

    # ------------------------------------------------------------------ outputs
    def result(self) -> RunResult:
        """The :class:`RunResult`: the kept cells' AnnData with embedding, labels and metadata; the run
        checkpoint is removed unless ``control.keep_checkpoint``."""
        self.timings.stop("total")
        if not self.control.keep_checkpoint and self.ctx.is_main:
            self.checkpointer.remove()
        k, cfg = int(self.k), self.cfg
        minibatch = batch_summary(self.batches, self.data)
        out, mine = self._output()
        labels, init_labels = self.labels[mine], self.init_labels[mine]
        extra = {kk: lab[mine] for kk, lab in self.extra.items()}
        emb = self.z.cpu().numpy()[mine]
        out.obsm["X_scsc"] = emb
        out.obs["scsc_cluster"] = _categorical(labels, k)
        out.obs["scsc_pretrain_kmeans"] = pd.Categorical(init_labels.astype(str))
        for kk in sorted(extra):
            out.obs[f"scsc_cluster_k{kk}"] = _categorical(extra[kk], kk)
        metrics = None
        if LABEL_KEY in out.obs:
            truth = out.obs[LABEL_KEY].to_numpy()
            metrics = {"scsc": score(truth, labels), "pretrain_kmeans": score(truth, init_labels)}
            metrics.update({f"scsc_k{kk}": score(truth, lab) for kk, lab in sorted(extra.items()) if kk != k})
        saved_cfg = cfg.copy()
        saved_cfg.cluster.n_clusters = k
        timings = dict(self.timings)
        k_estimated = cfg.cluster.n_clusters is None
        out.uns["scsc"] = {
            "config": saved_cfg.to_toml(),
            "versions": versions(),
            "n_clusters": k,
            "k_estimated": bool(k_estimated),
            "timings": {key: float(v) for key, v in timings.items()},
            "cells_removed": int((~self.prepared.cell_mask).sum()),
            "minibatch": minibatch,
            **_gpu_memory(cfg.device),
            **({"k_selection": self.selection.to_uns()} if self.selection is not None else {}),
            **({"metrics": metrics} if metrics else {}),
        }
        return RunResult(
            adata=out,
            config=saved_cfg,
            labels=labels,
            embedding=emb,
            history=list(self.history),
            n_clusters=k,
            k_estimated=k_estimated,
            metrics=metrics,
            timings=timings,
            model=self.model,
            checkpoint=self.record,
            k_selection=self.selection,
            other_k={kk: v for kk, v in extra.items() if kk != k},
        )

    def _drop_training_graphs(self) -> None:
        """Drop what only training reads: this rank's counts, the scipy graphs and edge lists behind the batches
        (a quarter of a gigabyte at 200,000 cells). The model keeps its whole-data graphs, so it can still embed
        all cells, but no longer focus on a batch."""
        self.data = replace(
            self.data, counts_csr=None, knn=None, adj_scipy=None, edge_index=None, edge_weight=None
        )
        self.state = None
        drop = getattr(self.model.augment, "drop_batch_graphs", None)
        if drop is not None:
            drop()

    def _output(self) -> tuple[ad.AnnData, slice | np.ndarray]:
        """The kept cells' AnnData the result is written into, and which of the N cells it holds.

        In one process: all kept cells. In a distributed run rank 0 builds it from the whole input (read again
        with ``control.whole_input`` when this rank was given its shard only); another rank returns its shard's
        cells without their counts (X is None).
        """
        p = self.prepared
        if p.rows is None:
            return p.adata, slice(None)
        if not self.ctx.is_main:
            return p.adata, p.rows
        self._drop_training_graphs()  # training is over: room for the whole input's counts
        self._release()
        control = self.control
        if control.whole_input is None:  # this rank was given every cell
            return kept_input(self.adata, p), slice(None)
        if control.input_rows is not None:
            return kept_input_by_rows(control.input_rows, p, self.ctx.shards(len(p.cell_mask))), slice(None)
        return kept_input(control.whole_input(), p), slice(None)


def _gpu_memory(device: str) -> dict[str, float]:
    """``{"peak_gpu_memory_gb": …}``: the most GPU memory torch held at once during the run (CUDA runs only)."""
    if not device.startswith("cuda"):
        return {}
    return {"peak_gpu_memory_gb": float(torch.cuda.max_memory_allocated(device) / 1024**3)}


def _categorical(labels: np.ndarray, k: int) -> pd.Categorical:
    """Labels (N,) in 0 … k−1 → categorical strings, categories in numeric order (empty clusters left out)."""
    present = set(labels.tolist())
    return pd.Categorical(labels.astype(str), categories=[str(i) for i in range(k) if i in present])
