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
        counts_csr: the HVG counts kept sparse (N, G) instead of ``counts`` in minibatch mode, where the dense
            block would be the largest object of a run (8 GB at a million cells); batches densify their rows.
        counts_rows: in a distributed run, the cells (sorted indices among N) whose rows ``counts_csr`` holds —
            the cells this rank trains on; None when it holds every cell.
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
    counts_csr: sp.csr_matrix | None = None
    counts_rows: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_genes(self) -> int:
        if self.counts is not None:
            return int(self.counts.shape[1])
        return 0 if self.counts_csr is None else int(self.counts_csr.shape[1])

    def _held(self, rows: np.ndarray) -> np.ndarray:
        """Positions in ``counts_csr`` of the cells ``rows`` (sorted indices among N)."""
        if self.counts_rows is None:
            return rows
        pos = np.searchsorted(self.counts_rows, rows)
        if np.any(pos >= len(self.counts_rows)) or not np.array_equal(self.counts_rows[pos], rows):
            raise RuntimeError("a batch holds cells whose counts this rank does not hold")
        return pos

    def subset(self, rows: np.ndarray, with_counts: bool = True) -> TrainData:
        """The data of the cells ``rows`` (sorted indices, B of them) and the kNN subgraph they induce.

        Â of the subgraph is renormalised, so its rows sum to one over the batch. O(B · G + edges) time.
        ``with_counts=False`` leaves the counts out (an embedding needs none, and a rank of a distributed run
        holds only the counts of the cells it trains on).
        """
        knn = self.knn[rows][:, rows].tocsr()
        adj = row_normalize(knn)
        ei, ew = edges_of(adj, self.device)
        idx = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        counts = None
        if not with_counts:
            pass
        elif self.counts is not None:
            counts = self.counts[idx]
        elif self.counts_csr is not None:
            counts = torch.from_numpy(self.counts_csr[self._held(rows)].toarray().astype(np.float32)).to(
                self.device
            )
        return TrainData(
            x=self.x[idx],
            counts=counts,
            size_factors=self.size_factors[idx],
            knn=knn,
            adj_scipy=adj,
            adj=sparse_to_torch(adj, self.device),
            edge_index=ei,
            edge_weight=ew,
            device=self.device,
        )


def build_train_data(
    prepared: Prepared,
    graph: GraphConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dense_counts: bool = True,
) -> TrainData:
    """kNN graph on the PCA input and the tensors of :class:`TrainData` on ``device``.

    ``dense_counts=False`` keeps the HVG counts sparse (``counts_csr``) for minibatch training. A distributed
    run's ``prepared`` holds its shard's counts only (``Prepared.rows``): they stay sparse, with their rows.
    """
    device = torch.device(device)
    knn = knn_graph(prepared.x, graph.k, graph.exact_max_cells, seed=seed)
    adj = row_normalize(knn)
    ei, ew = edges_of(adj, device)
    counts = None
    dense_counts = dense_counts and prepared.rows is None
    if prepared.counts is not None and dense_counts:
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
        counts_csr=None if dense_counts or prepared.counts is None else sp.csr_matrix(prepared.counts),
        counts_rows=prepared.rows,
    )
