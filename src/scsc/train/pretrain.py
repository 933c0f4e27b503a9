"""Pretraining (METHOD §7): the stages the encoder declares, each run by the one epoch loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..components.base import PretrainStage
from ..distributed import Context
from .state import EpochFn, LossStep, TrainState, optimizer_step, run_epochs


def pretrain(state: TrainState) -> list[dict]:
    """Every stage of :meth:`Encoder.pretrain_stages` on the plain graph Â; returns ``state.history``.

    A resumed run skips the stages and epochs that the saved run had finished. With ``state.batches``, an
    epoch of a graph stage trains on one batch (see :mod:`scsc.train`); with several ranks each rank trains
    on its own batches and gradients are averaged (:mod:`scsc.distributed`).
    """
    cfg, data = state.config, state.data
    rng = state.checkpoint.numpy_rng(cfg.seed)  # the cells stages' shuffling, saved in checkpoints
    ax_full = torch.sparse.mm(data.adj, data.x) if state.batches is None else None
    for spec in state.model.encoder.pretrain_stages(cfg):
        stage = state.checkpoint.stage(spec.name)
        first = stage.first_epoch(0, spec.epochs)
        if first >= spec.epochs:
            continue
        opt = torch.optim.Adam(spec.module.parameters(), lr=spec.lr)
        stage.restore_optimizer(opt)
        step = state.context.wrap(LossStep(spec.module, spec.loss))
        if spec.cells:
            epoch_fn = _cells_epoch(state, step, opt, rng)
        else:
            epoch_fn = _graph_epoch(state, spec, step, opt, ax_full)
        run_epochs(state, stage, spec.label, range(first, spec.epochs), opt, epoch_fn)
    return state.history


def _cells_epoch(
    state: TrainState, step: nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator
) -> EpochFn:
    """An epoch of a cells stage: shuffled minibatches of ``pretrain.ae_batch_size`` cells (B × P), no graph;
    its terms are averaged over the cells."""
    cfg, data, ctx = state.config, state.data, state.context
    bs = max(1, cfg.pretrain.ae_batch_size)
    cap = None if state.batches is None else cfg.minibatch.ae_cells_per_epoch

    def epoch_fn(epoch: int) -> tuple[dict[str, float], float]:
        total, count, sums = 0.0, 0, {}
        for idx in cell_batches(rng, data.n_cells, bs, cap, ctx):
            xb = data.x[torch.from_numpy(idx).to(data.device)]
            loss, terms = optimizer_step(step, opt, xb)
            value = loss.item()  # one host sync per step: a term that is the loss itself reuses it
            total += value * len(xb)
            count += len(xb)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + (value if v is loss else v.item()) * len(xb)
        return {k: v / count for k, v in sums.items()}, total / count

    return epoch_fn


def _graph_epoch(
    state: TrainState,
    spec: PretrainStage,
    step: nn.Module,
    opt: torch.optim.Optimizer,
    ax_full: torch.Tensor | None,
) -> EpochFn:
    """An epoch of a graph stage: one step on all cells, or on this rank's batch and its subgraph."""

    def epoch_fn(epoch: int) -> tuple[dict[str, float], float]:
        d, _ = state.batch(spec.name, epoch)
        ax = ax_full if state.batches is None else torch.sparse.mm(d.adj, d.x)
        loss, terms = optimizer_step(step, opt, d, ax, state.generator)
        return {k: v.item() for k, v in terms.items()}, loss.item()

    return epoch_fn


def cell_batches(
    rng: np.random.Generator, n_cells: int, bs: int, cap: int | None, ctx: Context
) -> list[np.ndarray]:
    """A cells stage's minibatches (cell indices, B each) for one epoch.

    A pass over all cells in random order; with ``cap`` (minibatch mode) over a random ``cap`` of them. Under
    several ranks each rank takes every W-th cell of the same order, in equally many steps (DDP steps in
    lockstep).
    """
    perm = rng.permutation(n_cells)
    if cap is not None:
        perm = perm[: max(1, min(n_cells, cap))]
    if not ctx.active:
        return [perm[start : start + bs] for start in range(0, len(perm), bs)]
    n_steps = -(-len(perm) // (ctx.world * bs))
    mine = np.resize(perm[ctx.rank :: ctx.world], n_steps * bs)  # a shorter shard revisits some of its cells
    return [mine[i * bs : (i + 1) * bs] for i in range(n_steps)]
