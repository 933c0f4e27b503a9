"""Training loops (METHOD §7): three pretraining stages and the clustering stage.

No label is visible here. The clustering stage runs its configured number of epochs and the final epoch is
what is reported.

With a :class:`~scsc.data.batches.BatchPlan` (minibatch mode), every epoch of the graph stages is one
optimizer step on one batch of cells and the subgraph it induces (correlations, attention and the transport
target then live inside the batch; its marginals are the batch's share of the initial clusters). An epoch of
the expression-AE stage, which needs no graph, covers all cells up to ``minibatch.ae_cells_per_epoch`` (a
random sample above). Training time then no longer grows with N; the embeddings of all cells are computed
batch by batch (:func:`embed_cells`).
"""

from __future__ import annotations

import random
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpointer, StageCheckpoint, disabled
from .config import RunConfig
from .data.batches import BatchPlan
from .data.bundle import TrainData
from .distributed import Context
from .losses import adjacency_loss
from .model import ScSiameseClu

#: Loss terms of the clustering stage, in display order.
TERMS = ("rec_x", "rec_graph", "rec_adj", "zinb", "cr_sample_ae", "cr_sample_graph", "cr_feature_ae",
         "cr_feature_graph", "prop", "clu")


class Reporter(Protocol):
    """Receives progress; the CLI shows it as rich progress bars."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, terms: dict[str, float]) -> None: ...

    def stop(self, stage: str) -> None: ...


class SilentReporter:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, terms: dict[str, float]) -> None:
        pass

    def stop(self, stage: str) -> None:
        pass


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for augmentation noise and sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _log(history: list[dict], stage: str, epoch: int, terms: dict[str, float], total: float) -> None:
    history.append({"stage": stage, "epoch": epoch, **terms, "total": total})


def _batch(data: TrainData, batches: BatchPlan | None, stream: str, epoch: int, ctx: Context
           ) -> tuple[TrainData, np.ndarray | None]:
    """The data an epoch trains on: all cells, or this rank's batch of ``epoch`` with its subgraph, and its rows."""
    if batches is None:
        return data, None
    rows = batches.batch(stream, ctx.batch_index(epoch))
    return data.subset(rows), rows


class _Step(nn.Module):
    """One stage's loss as a module, so that DistributedDataParallel can wrap it: forward → (loss, terms)."""

    def __init__(self, net: nn.Module, loss_fn: Callable):
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(self.net, *args)


def _ae_loss(ae: nn.Module, xb: torch.Tensor) -> tuple[torch.Tensor, dict]:
    x_hat, _ = ae.decode(ae.encode(xb))
    loss = 10.0 * torch.mean((x_hat - xb) ** 2)
    return loss, {"rec_x": loss}


def _gae_loss(gae: nn.Module, d: TrainData, ax: torch.Tensor, n_neg: int, generator: torch.Generator,
              adj_weight: float) -> tuple[torch.Tensor, dict]:
    z, _ = gae.encode(d.x, d.adj)
    z_hat, _ = gae.decode(z, d.adj)
    terms = {"rec_graph": torch.mean((z_hat - ax) ** 2),
             "rec_adj": adjacency_loss(z, d.edge_index, d.edge_weight, n_neg, generator)}
    return terms["rec_graph"] + adj_weight * terms["rec_adj"], terms


def _joint_loss(enc: nn.Module, d: TrainData, ax: torch.Tensor, n_neg: int, generator: torch.Generator,
                p) -> tuple[torch.Tensor, dict]:
    z_ae = enc.ae.encode(d.x)
    x_hat, _ = enc.ae.decode(z_ae)
    z_g, _ = enc.gae.encode(d.x, d.adj)
    z_hat, _ = enc.gae.decode(z_g, d.adj)
    terms = {
        "rec_x": torch.mean((x_hat - d.x) ** 2),
        "rec_graph": torch.mean((z_hat - ax) ** 2),
        "rec_adj": adjacency_loss(z_g, d.edge_index, d.edge_weight, n_neg, generator),
        "align": torch.mean((z_ae - z_g) ** 2),
    }
    loss = (terms["rec_x"] + p.joint_rec_graph * terms["rec_graph"] + p.joint_adj * terms["rec_adj"]
            + p.joint_align * terms["align"])
    return loss, terms


def _ae_steps(rng: np.random.Generator, n_cells: int, bs: int, cap: int | None, ctx: Context
              ) -> list[np.ndarray]:
    """The AE stage's minibatches (cell indices) for one epoch.

    A pass over all cells in random order; with ``cap`` (minibatch mode) over a random ``cap`` of them. Under
    several ranks each rank takes every W-th cell of the same order, in equally many steps (DDP steps in
    lockstep).
    """
    perm = rng.permutation(n_cells)
    if cap is not None:
        perm = perm[:max(1, min(n_cells, cap))]
    if not ctx.active:
        return [perm[start:start + bs] for start in range(0, len(perm), bs)]
    n_steps = -(-len(perm) // (ctx.world * bs))
    mine = np.resize(perm[ctx.rank::ctx.world], n_steps * bs)  # a shorter shard revisits some of its cells
    return [mine[i * bs:(i + 1) * bs] for i in range(n_steps)]


def pretrain(model: ScSiameseClu, data: TrainData, config: RunConfig, generator: torch.Generator,
             reporter: Reporter | None = None, *, history: list[dict] | None = None,
             checkpoint: Checkpointer | None = None, batches: BatchPlan | None = None,
             context: Context | None = None) -> list[dict]:
    """The three pretraining stages on the plain graph Â; returns the loss history (one row per epoch).

    Rows are appended to ``history`` (a new list by default). With a ``checkpoint``, the state is saved after
    epochs, and a resumed run skips the stages and epochs that the saved run had finished. With ``batches``,
    each epoch trains on one batch (see the module docstring); with a ``context`` of several ranks, each rank
    trains on its own batches and gradients are averaged (:mod:`scsc.distributed`).
    """
    reporter = reporter or SilentReporter()
    ck = checkpoint or disabled()
    ctx = context or Context()
    p = config.pretrain
    enc = model.encoder
    history = [] if history is None else history
    rng = ck.numpy_rng(config.seed)
    ax_full = torch.sparse.mm(data.adj, data.x) if batches is None else None
    n_neg = config.loss.adj_negatives

    stage = ck.stage("pretrain_ae")
    first = stage.first_epoch(0, p.ae_epochs)
    if enc.ae is not None and first < p.ae_epochs:
        opt = torch.optim.Adam(enc.ae.parameters(), lr=p.ae_lr)
        stage.restore_optimizer(opt)
        reporter.start("pretrain: expression AE", p.ae_epochs - first)
        bs = max(1, p.ae_batch_size)
        step = ctx.wrap(_Step(enc.ae, _ae_loss))
        cap = None if batches is None else config.minibatch.ae_cells_per_epoch
        for epoch in range(first, p.ae_epochs):
            total, count = 0.0, 0
            for idx in _ae_steps(rng, data.n_cells, bs, cap, ctx):
                xb = data.x[torch.from_numpy(idx).to(data.device)]
                loss, _ = step(xb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                count += len(xb)
            _log(history, "pretrain_ae", epoch, {"rec_x": total / count}, total / count)
            reporter.advance("pretrain: expression AE", {"rec_x": total / count})
            stage.epoch_done(epoch, p.ae_epochs - 1, opt)
        reporter.stop("pretrain: expression AE")

    stage = ck.stage("pretrain_gae")
    first = stage.first_epoch(0, p.gae_epochs)
    if enc.gae is not None and first < p.gae_epochs:
        opt = torch.optim.Adam(enc.gae.parameters(), lr=p.gae_lr)
        stage.restore_optimizer(opt)
        reporter.start("pretrain: graph AE", p.gae_epochs - first)
        step = ctx.wrap(_Step(enc.gae, _gae_loss))
        for epoch in range(first, p.gae_epochs):
            d, _ = _batch(data, batches, "pretrain_gae", epoch, ctx)
            ax = ax_full if batches is None else torch.sparse.mm(d.adj, d.x)
            loss, terms = step(d, ax, n_neg, generator, p.gae_adj_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            vals = {k: v.item() for k, v in terms.items()}
            _log(history, "pretrain_gae", epoch, vals, loss.item())
            reporter.advance("pretrain: graph AE", vals)
            stage.epoch_done(epoch, p.gae_epochs - 1, opt)
        reporter.stop("pretrain: graph AE")

    stage = ck.stage("pretrain_joint")
    first = stage.first_epoch(0, p.joint_epochs)
    if enc.ae is not None and enc.gae is not None and first < p.joint_epochs:
        opt = torch.optim.Adam(enc.parameters(), lr=p.joint_lr)
        stage.restore_optimizer(opt)
        reporter.start("pretrain: joint", p.joint_epochs - first)
        step = ctx.wrap(_Step(enc, _joint_loss))
        for epoch in range(first, p.joint_epochs):
            d, _ = _batch(data, batches, "pretrain_joint", epoch, ctx)
            ax = ax_full if batches is None else torch.sparse.mm(d.adj, d.x)
            loss, terms = step(d, ax, n_neg, generator, p)
            opt.zero_grad()
            loss.backward()
            opt.step()
            vals = {k: v.item() for k, v in terms.items()}
            _log(history, "pretrain_joint", epoch, vals, loss.item())
            reporter.advance("pretrain: joint", vals)
            stage.epoch_done(epoch, p.joint_epochs - 1, opt)
        reporter.stop("pretrain: joint")
    return history


def _rows_tensor(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device)


def _by_batches(data: TrainData, batches: BatchPlan, embed: Callable) -> torch.Tensor:
    """Z (N × d) of all cells, ``embed(batch data, rows, rows tensor)`` over :meth:`BatchPlan.eval_batches`."""
    z = None
    for rows in batches.eval_batches():
        r = _rows_tensor(rows, data.device)
        zb = embed(data.subset(rows), rows, r)
        z = zb.new_empty((data.n_cells, zb.shape[1])) if z is None else z
        z[r] = zb
    return z


def _groups(model: ScSiameseClu, data: TrainData, batches: BatchPlan) -> list[torch.Tensor] | None:
    """The evaluation batches as index tensors, when the fusion can confine its attention to them."""
    if not model.fusion_takes_groups:
        return None
    return [_rows_tensor(rows, data.device) for rows in batches.eval_batches()]


def pretrained_embedding(model: ScSiameseClu, data: TrainData, batches: BatchPlan | None = None
                         ) -> torch.Tensor:
    """Embedding of the pretrained encoders on the plain graph (N × d), before any augmentation.

    With ``batches``, the encoders and the propagation run over the whole sparse graph (linear in N) and the
    fusion's attention within each of :meth:`BatchPlan.eval_batches`, as in training; cutting the graph into
    batches here would change the cells at batch borders (measured: worm neurons, 1,024-cell batches, KMeans
    ARI of this embedding 0.45 cut against 0.50 whole). A fusion without ``groups`` runs batch by batch.
    """
    with torch.no_grad():
        was = model.training
        model.eval()
        groups = None if batches is None else _groups(model, data, batches)
        if batches is None or groups is not None:
            z = model.forward(data.x, data.x, data.adj, data.adj, data.adj, groups=groups, propagation=False).z
        else:
            def one(d: TrainData, rows: np.ndarray, r: torch.Tensor) -> torch.Tensor:
                return model.forward(d.x, d.x, d.adj, d.adj, d.adj, rows=r).z

            z = _by_batches(data, batches, one)
        model.train(was)
    return z


def embed_cells(model: ScSiameseClu, data: TrainData, batches: BatchPlan | None = None) -> torch.Tensor:
    """The reported embedding Z (N × d) of all cells (:meth:`ScSiameseClu.embed`).

    With ``batches``, as :func:`pretrained_embedding`: whole graphs, attention within the evaluation batches.
    The augmenter must be prepared and focused on all cells.
    """
    if batches is None:
        return model.embed(data)
    groups = _groups(model, data, batches)
    if groups is not None:
        return model.embed(data, groups=groups)

    def one(d: TrainData, rows: np.ndarray, r: torch.Tensor) -> torch.Tensor:
        model.augment.focus(rows)
        return model.embed(d, rows=r)

    try:
        return _by_batches(data, batches, one)
    finally:
        model.augment.focus(None)


def _cluster_loss(model: ScSiameseClu, d: TrainData, rows: torch.Tensor | None, generator: torch.Generator,
                  refresh: bool, want: set[str], weights) -> tuple[torch.Tensor | float, dict]:
    """Weighted sum of the clustering stage's named terms for one epoch on ``d`` (all cells or one batch)."""
    v = model.augment.views(d.x, generator)
    out = model.forward(v.x1, v.x2, v.adj1, v.adj2, model.augment.adj_main, rows=rows)
    terms = model.clustering_terms(d, out, generator, weights.adj_negatives, refresh, want)
    return sum(getattr(weights, k) * t for k, t in terms.items()), terms


def active_terms(config: RunConfig) -> set[str]:
    """Loss terms with a non-zero weight (ZINB off for log-normalised input)."""
    weights = config.loss
    want = {t for t in TERMS if getattr(weights, t) != 0}
    if config.preprocess.log_normalized:
        want.discard("zinb")
    return want


def train_clustering(model: ScSiameseClu, data: TrainData, config: RunConfig, generator: torch.Generator,
                     reporter: Reporter | None = None,
                     on_epoch: Callable[[int], None] | None = None, *, epochs: int | None = None,
                     start_epoch: int = 0, exclude: frozenset[str] = frozenset(),
                     stage: str = "cluster", history: list[dict] | None = None,
                     checkpoint: StageCheckpoint | None = None, batches: BatchPlan | None = None,
                     stream: str = "cluster", context: Context | None = None) -> list[dict]:
    """The clustering stage: Adam on the weighted sum of named terms for ``epochs`` (default ``cluster.epochs``).

    The head must already be initialised (``model.head.init``). Terms in ``exclude`` are skipped (the warm-up
    runs without ``clu``; the target is then not refreshed either). Returns the loss history, its epochs
    numbered from ``start_epoch``; rows are appended to ``history`` (a new list by default). A ``checkpoint``
    restores the optimizer when the run resumes inside this stage and saves the state after epochs.
    With ``batches``, epoch e trains on batch e of ``stream`` and the head's target is recomputed for every
    batch (``refresh_every`` applies to full-batch training only).
    """
    reporter = reporter or SilentReporter()
    ctx = context or Context()
    c = config.cluster
    n_epochs = c.epochs if epochs is None else epochs
    weights = config.loss
    want = active_terms(config) - set(exclude)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=c.lr)
    if checkpoint is not None:
        checkpoint.restore_optimizer(opt)
    history = [] if history is None else history
    reporter.start(stage, n_epochs)
    model.train()
    step = ctx.wrap(_Step(model, _cluster_loss))
    for epoch in range(start_epoch, start_epoch + n_epochs):
        d, rows = _batch(data, batches, stream, epoch, ctx)
        rows_t = None
        if rows is not None:
            rows_t = _rows_tensor(rows, data.device)
            model.augment.focus(rows)
            if hasattr(model.head, "focus"):
                model.head.focus(rows_t)
        if rows is None:
            refresh = "clu" in want and c.refresh_every > 0 and epoch % c.refresh_every == 0
        else:
            refresh = "clu" in want
        loss, terms = step(d, rows_t, generator, refresh, want, weights)
        opt.zero_grad()
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
            opt.step()
        vals = {k: v.item() for k, v in terms.items()}
        _log(history, "cluster", epoch, vals, float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
        reporter.advance(stage, vals)
        if checkpoint is not None:
            checkpoint.epoch_done(epoch, start_epoch + n_epochs - 1, opt)
        if on_epoch is not None:
            on_epoch(epoch)
    if batches is not None:
        model.augment.focus(None)
        if hasattr(model.head, "focus"):
            model.head.focus(None)
    reporter.stop(stage)
    return history
