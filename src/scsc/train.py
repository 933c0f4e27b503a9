"""Training loops (METHOD §7): three pretraining stages and the clustering stage.

No label is visible here. The clustering stage runs its configured number of epochs and the final epoch is
what is reported.
"""

from __future__ import annotations

import random
from typing import Callable, Protocol

import numpy as np
import torch

from .checkpoint import Checkpointer, StageCheckpoint, disabled
from .config import RunConfig
from .data.bundle import TrainData
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


def pretrain(model: ScSiameseClu, data: TrainData, config: RunConfig, generator: torch.Generator,
             reporter: Reporter | None = None, *, history: list[dict] | None = None,
             checkpoint: Checkpointer | None = None) -> list[dict]:
    """The three pretraining stages on the plain graph Â; returns the loss history (one row per epoch).

    Rows are appended to ``history`` (a new list by default). With a ``checkpoint``, the state is saved after
    epochs, and a resumed run skips the stages and epochs that the saved run had finished.
    """
    reporter = reporter or SilentReporter()
    ck = checkpoint or disabled()
    p = config.pretrain
    enc = model.encoder
    history = [] if history is None else history
    x, adj = data.x, data.adj
    rng = ck.numpy_rng(config.seed)
    ax = torch.sparse.mm(adj, x)
    n_neg = config.loss.adj_negatives

    stage = ck.stage("pretrain_ae")
    first = stage.first_epoch(0, p.ae_epochs)
    if enc.ae is not None and first < p.ae_epochs:
        opt = torch.optim.Adam(enc.ae.parameters(), lr=p.ae_lr)
        stage.restore_optimizer(opt)
        reporter.start("pretrain: expression AE", p.ae_epochs - first)
        bs = max(1, p.ae_batch_size)
        for epoch in range(first, p.ae_epochs):
            perm = torch.from_numpy(rng.permutation(data.n_cells)).to(x.device)
            total, count = 0.0, 0
            for start in range(0, data.n_cells, bs):
                xb = x[perm[start:start + bs]]
                x_hat, _ = enc.ae.decode(enc.ae.encode(xb))
                loss = 10.0 * torch.mean((x_hat - xb) ** 2)
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
        for epoch in range(first, p.gae_epochs):
            z, _ = enc.gae.encode(x, adj)
            z_hat, _ = enc.gae.decode(z, adj)
            terms = {"rec_graph": torch.mean((z_hat - ax) ** 2),
                     "rec_adj": adjacency_loss(z, data.edge_index, data.edge_weight, n_neg, generator)}
            loss = terms["rec_graph"] + p.gae_adj_weight * terms["rec_adj"]
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
        for epoch in range(first, p.joint_epochs):
            z_ae = enc.ae.encode(x)
            x_hat, _ = enc.ae.decode(z_ae)
            z_g, _ = enc.gae.encode(x, adj)
            z_hat, _ = enc.gae.decode(z_g, adj)
            terms = {
                "rec_x": torch.mean((x_hat - x) ** 2),
                "rec_graph": torch.mean((z_hat - ax) ** 2),
                "rec_adj": adjacency_loss(z_g, data.edge_index, data.edge_weight, n_neg, generator),
                "align": torch.mean((z_ae - z_g) ** 2),
            }
            loss = (terms["rec_x"] + p.joint_rec_graph * terms["rec_graph"] + p.joint_adj * terms["rec_adj"]
                    + p.joint_align * terms["align"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            vals = {k: v.item() for k, v in terms.items()}
            _log(history, "pretrain_joint", epoch, vals, loss.item())
            reporter.advance("pretrain: joint", vals)
            stage.epoch_done(epoch, p.joint_epochs - 1, opt)
        reporter.stop("pretrain: joint")
    return history


def pretrained_embedding(model: ScSiameseClu, data: TrainData) -> torch.Tensor:
    """Embedding of the pretrained encoders on the plain graph (N × d), before any augmentation."""
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model.forward(data.x, data.x, data.adj, data.adj, data.adj)
        model.train(was)
    return out.z


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
                     checkpoint: StageCheckpoint | None = None) -> list[dict]:
    """The clustering stage: Adam on the weighted sum of named terms for ``epochs`` (default ``cluster.epochs``).

    The head must already be initialised (``model.head.init``). Terms in ``exclude`` are skipped (the warm-up
    runs without ``clu``; the target is then not refreshed either). Returns the loss history, its epochs
    numbered from ``start_epoch``; rows are appended to ``history`` (a new list by default). A ``checkpoint``
    restores the optimizer when the run resumes inside this stage and saves the state after epochs.
    """
    reporter = reporter or SilentReporter()
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
    for epoch in range(start_epoch, start_epoch + n_epochs):
        v = model.augment.views(data.x, generator)
        out = model.forward(v.x1, v.x2, v.adj1, v.adj2, model.augment.adj_main)
        refresh = "clu" in want and c.refresh_every > 0 and epoch % c.refresh_every == 0
        terms = model.clustering_terms(data, out, generator, weights.adj_negatives, refresh, want)
        loss = sum(getattr(weights, k) * v for k, v in terms.items())
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
    reporter.stop(stage)
    return history
