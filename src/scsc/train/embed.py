"""The embedding Z of all cells: in one pass, or with the fusion's attention confined to the minibatch plan's
evaluation batches (or batch by batch for a fusion that cannot confine it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..components.base import Views
from ..data.batches import BatchPlan
from ..data.bundle import TrainData
from ..distributed import Context, RowShard
from ..model import ScSiameseClu
from .state import rows_tensor


def _by_batches(data: TrainData, batches: BatchPlan, embed: Callable) -> torch.Tensor:
    """Z (N × d) of all cells, ``embed(batch data, rows, rows tensor)`` over :meth:`BatchPlan.eval_batches`."""
    z = None
    for rows in batches.eval_batches():
        r = rows_tensor(rows, data.device)
        zb = embed(data.subset(rows, with_counts=False), rows, r)
        z = zb.new_empty((data.n_cells, zb.shape[1])) if z is None else z
        z[r] = zb
    return z


def _shard(
    model: ScSiameseClu, data: TrainData, groups: list[torch.Tensor] | None, context: Context | None
) -> RowShard | None:
    """This rank's rows of a whole-data embedding under several ranks, when the components can shard it.

    Every rank then holds one layer's activations of all cells at a time instead of the whole pass's
    temporaries; the result is the same Z up to float rounding. None in one process, which stays bit-identical.
    """
    if context is None or not context.active or groups is None or not model.takes_shard:
        return None
    return RowShard(data.n_cells, context)


def _groups(model: ScSiameseClu, data: TrainData, batches: BatchPlan) -> list[torch.Tensor] | None:
    """The evaluation batches as index tensors, when the fusion can confine its attention to them."""
    if not model.fusion_takes_groups:
        return None
    return [rows_tensor(rows, data.device) for rows in batches.eval_batches()]


def pretrained_embedding(
    model: ScSiameseClu, data: TrainData, batches: BatchPlan | None = None, context: Context | None = None
) -> torch.Tensor:
    """Embedding of the pretrained encoders on the plain graph (N × d), before any augmentation.

    With ``batches``, the encoders and the propagation run over the whole sparse graph (linear in N) and the
    fusion's attention within each of :meth:`BatchPlan.eval_batches`, as in training; cutting the graph into
    batches here would change the cells at batch borders (measured: worm neurons, 1,024-cell batches, KMeans
    ARI of this embedding 0.45 cut against 0.50 whole). A fusion without ``groups`` runs batch by batch.
    Under several ranks (an active ``context``) each rank computes a shard of the rows (:func:`_shard`).
    """
    with torch.no_grad():
        was = model.training
        model.eval()
        groups = None if batches is None else _groups(model, data, batches)
        if batches is None or groups is not None:
            z = model.forward(
                Views(data.x, data.x, data.adj, data.adj),
                data.adj,
                groups=groups,
                propagation=False,
                shard=_shard(model, data, groups, context),
            ).z
        else:

            def one(d: TrainData, rows: np.ndarray, r: torch.Tensor) -> torch.Tensor:
                return model.forward(Views(d.x, d.x, d.adj, d.adj), d.adj, rows=r).z

            z = _by_batches(data, batches, one)
        model.train(was)
    return z


def embed_cells(
    model: ScSiameseClu, data: TrainData, batches: BatchPlan | None = None, context: Context | None = None
) -> torch.Tensor:
    """The reported embedding Z (N × d) of all cells (:meth:`ScSiameseClu.embed`).

    With ``batches``, as :func:`pretrained_embedding`: whole graphs, attention within the evaluation batches,
    a shard of the rows per rank under an active ``context``. The augmenter must be prepared and focused on all
    cells.
    """
    if batches is None:
        return model.embed(data)
    groups = _groups(model, data, batches)
    if groups is not None:
        return model.embed(data, groups=groups, shard=_shard(model, data, groups, context))

    def one(d: TrainData, rows: np.ndarray, r: torch.Tensor) -> torch.Tensor:
        model.augment.focus(rows)
        return model.embed(d, rows=r)

    try:
        return _by_batches(data, batches, one)
    finally:
        model.augment.focus(None)
