"""The clustering stage (METHOD §6–7): Adam on the weighted sum of the model's named terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..data.bundle import TrainData
from ..model import ScSiameseClu
from .state import EpochFn, LossStep, TrainState, rows_tensor, run_epochs

#: Loss terms of the clustering stage, in display order.
TERMS = (
    "rec_x",
    "rec_graph",
    "rec_adj",
    "zinb",
    "cr_sample_ae",
    "cr_sample_graph",
    "cr_feature_ae",
    "cr_feature_graph",
    "prop",
    "clu",
)


@dataclass(frozen=True)
class ClusterPhase:
    """A phase of the clustering stage: its checkpoint stage and batch stream (``name``), progress label and
    the terms it leaves out."""

    name: str
    label: str
    exclude: frozenset[str] = frozenset()


#: The optional warm-up (``cluster.warmup_epochs``): no clustering term, so the target is not refreshed.
WARMUP = ClusterPhase("cluster_warmup", "cluster: warm-up", frozenset({"clu"}))
CLUSTER = ClusterPhase("cluster", "cluster")


def active_terms(config: RunConfig) -> set[str]:
    """Loss terms with a non-zero weight (ZINB off for log-normalised input)."""
    weights = config.loss
    want = {t for t in TERMS if getattr(weights, t) != 0}
    if config.preprocess.log_normalized:
        want.discard("zinb")
    return want


def train_clustering(state: TrainState, phase: ClusterPhase, epochs: range) -> list[dict]:
    """Epochs ``epochs`` of ``phase``; the head must already be initialised (``model.head.init``).

    The optimizer is restored when the run resumes inside this phase and the state is saved after epochs
    (``state.checkpoint``). With ``state.batches``, epoch e trains on batch e of the phase's stream and the
    head's target is recomputed for every batch (``cluster.refresh_every`` applies to full batch only).
    History rows are logged as stage ``cluster``; returns ``state.history``.
    """
    if not epochs:  # a resumed run past this phase
        return state.history
    model = state.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=state.config.cluster.lr)
    stage = state.checkpoint.stage(phase.name)
    stage.restore_optimizer(opt)
    model.train()
    step = state.context.wrap(LossStep(model, _cluster_loss))
    try:
        return run_epochs(
            state, stage, phase.label, epochs, opt, _cluster_epoch(state, phase, step, opt), log_as="cluster"
        )
    finally:
        if state.batches is not None:
            model.augment.focus(None)
            model.head.focus(None)


def _cluster_epoch(
    state: TrainState, phase: ClusterPhase, step: torch.nn.Module, opt: torch.optim.Optimizer
) -> EpochFn:
    """One epoch of the clustering stage on all cells or this rank's batch (augmenter and head focused on it)."""
    model, c = state.model, state.config.cluster
    want = active_terms(state.config) - set(phase.exclude)

    def epoch_fn(epoch: int) -> tuple[dict[str, float], float]:
        d, rows = state.batch(phase.name, epoch)
        rows_t = None
        if rows is not None:
            rows_t = rows_tensor(rows, state.data.device)
            model.augment.focus(rows)
            model.head.focus(rows_t)
            refresh = "clu" in want
        else:
            refresh = "clu" in want and c.refresh_every > 0 and epoch % c.refresh_every == 0
        loss, terms = step(d, rows_t, state.generator, refresh, want, state.config.loss)
        opt.zero_grad()
        if isinstance(loss, torch.Tensor) and loss.requires_grad:  # a head without loss and no other term
            loss.backward()
            opt.step()
        total = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        return {k: v.item() for k, v in terms.items()}, total

    return epoch_fn


def _cluster_loss(
    model: ScSiameseClu,
    d: TrainData,
    rows: torch.Tensor | None,
    generator: torch.Generator,
    refresh: bool,
    want: set[str],
    weights,
) -> tuple[torch.Tensor | float, dict]:
    """Weighted sum of the clustering stage's named terms for one epoch on ``d`` (all cells or one batch)."""
    v = model.augment.views(d.x, generator)
    out = model.forward(v, model.augment.adj_main, rows=rows)
    terms = model.clustering_terms(d, out, generator, weights.adj_negatives, refresh, want)
    return sum(getattr(weights, k) * t for k, t in terms.items()), terms
