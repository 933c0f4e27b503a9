"""The tensors a model trains on, built once from the preprocessed data and the kNN graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..config import GraphConfig
from .graph import knn_graph, row_normalize
from .preprocess import Prepared
from .tensors import edges_of, sparse_to_torch


@dataclass
class TrainData:
    """Model inputs on one device.

    Attributes:
        x: PCA features, (N, P) float32.
        counts: HVG raw counts, (N, G) float32, or None (log-normalised input).
        size_factors: (N,) float32.
        knn: symmetric binary kNN adjacency A, scipy CSR (N, N), no self-loops.
        adj_scipy: Â = D⁻¹(A + I), scipy CSR (N, N).
        adj: Â as a torch sparse CSR tensor.
        edge_index, edge_weight: the non-zeros of Â, (2, E) and (E,).
    """

    x: torch.Tensor
    counts: torch.Tensor | None
    size_factors: torch.Tensor
    knn: sp.csr_matrix
    adj_scipy: sp.csr_matrix
    adj: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    device: torch.device

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_genes(self) -> int:
        return 0 if self.counts is None else int(self.counts.shape[1])


def build_train_data(prepared: Prepared, graph: GraphConfig, seed: int = 0,
                     device: str | torch.device = "cpu") -> TrainData:
    """kNN graph on the PCA input and the tensors of :class:`TrainData` on ``device``."""
    device = torch.device(device)
    knn = knn_graph(prepared.x, graph.k, graph.exact_max_cells, seed=seed)
    adj = row_normalize(knn)
    ei, ew = edges_of(adj, device)
    counts = None
    if prepared.counts is not None:
        # Cells × HVGs (N × G, G = 2000 by default): linear in N, read every epoch by the ZINB term.
        counts = torch.from_numpy(np.asarray(prepared.counts.toarray(), dtype=np.float32)).to(device)
    return TrainData(
        x=torch.from_numpy(prepared.x).to(device),
        counts=counts,
        size_factors=torch.from_numpy(prepared.size_factors).to(device),
        knn=knn,
        adj_scipy=adj,
        adj=sparse_to_torch(adj, device),
        edge_index=ei,
        edge_weight=ew,
        device=device,
    )
