"""The data path of a run (METHOD §1–2): preprocess, build the graph and tensors, plan the minibatches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from ..config import RunConfig
from ..distributed import Context
from .batches import BatchPlan, plan_batches, resolve_batch_size
from .bundle import TrainData, build_train_data
from .preprocess import Prepared, preprocess


def prepare(
    adata: ad.AnnData, config: RunConfig, source: str | Path | None = None, context: Context | None = None
) -> tuple[Prepared, TrainData]:
    """Preprocess (METHOD §1) and build the kNN graph and tensors (METHOD §2).

    Under an active ``context`` ``adata`` is this rank's shard of the cells (see :mod:`scsc.data.shards`): the
    PCA input and the graph cover all cells, the counts only the shard's.
    """
    prepared = preprocess(
        adata,
        config.preprocess,
        seed=config.seed,
        min_cells_required=config.graph.k + 1,
        source=source,
        context=context,
    )
    full_batch = resolve_batch_size(config.minibatch, prepared.n_cells) == 0
    data = build_train_data(
        prepared, config.graph, seed=config.seed, device=config.device, dense_counts=full_batch
    )
    return prepared, data


def plan(data: TrainData, config: RunConfig) -> BatchPlan | None:
    """The minibatch plan of a run (scsc/data/batches.py), or None for full-batch training."""
    size = resolve_batch_size(config.minibatch, data.n_cells)
    if size == 0:
        return None
    return plan_batches(data.x.cpu().numpy(), data.knn, config.minibatch, size, seed=config.seed)


def batch_summary(batches: BatchPlan | None, data: TrainData) -> dict[str, Any]:
    """How a run was cut into minibatches (uns["scsc"]["minibatch"]): size, parts, batches, edges kept."""
    if batches is None:
        return {"batch_size": 0}
    eval_batches = batches.eval_batches()
    return {
        "batch_size": batches.batch_size,
        "parts": len(batches.parts),
        "batches_per_round": len(eval_batches),
        "edges_in_batch": batches.edge_coverage(data.knn, eval_batches),
    }


def fingerprint(prepared: Prepared) -> dict[str, Any]:
    """What identifies the preprocessed data (N, P, G and the sum of |X|) in checkpoints."""
    x = prepared.x
    return {
        "n_cells": int(x.shape[0]),
        "n_input": int(x.shape[1]),
        "n_genes": 0 if prepared.counts is None else int(prepared.counts.shape[1]),
        "abs_sum": float(np.abs(x).sum(dtype=np.float64)),
    }
