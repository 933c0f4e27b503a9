"""Augmenters (component kind ``augment``, METHOD §3): the two views seen at every clustering epoch.

An augmenter is prepared once after pretraining (it may score edges with the pretrained embedding and build
the diffusion view), then yields two views per epoch: ``(x1, adj1)`` and ``(x2, adj2)``. Its ``adj_main`` is the
graph used for local propagation and graph reconstruction (Â_r when edges are removed, else Â).

In minibatch training, :meth:`Augmenter.focus` restricts the three graphs to the subgraph of one batch.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..config import RunConfig
from ..data.bundle import TrainData
from ..data.graph import drop_dissimilar_edges, ppr_diffusion, row_normalize
from ..data.tensors import sparse_to_torch
from ..distributed import Context
from ..plugins.hookspecs import hookimpl
from .base import Views

__all__ = ["Augmenter", "DualAugmenter", "GraphAugmenter", "NoiseAugmenter", "Views"]


class Augmenter:
    """Base augmenter: no noise, both graph views Â (the ``none`` component)."""

    expression_noise = False
    graph_views = False
    #: ``prepare`` takes the run's distributed ``context`` (the ranks then share the diffusion view's rows).
    takes_context = True

    def __init__(self, config: RunConfig):
        self.noise_std = config.model.noise_std
        self.graph_cfg = config.graph
        self.adj_main: torch.Tensor | None = None
        self.adj1: torch.Tensor | None = None
        self.adj2: torch.Tensor | None = None
        #: Whole-data graphs (scipy, N × N) that :meth:`focus` cuts batches from: the binary graph behind
        #: adj_main and adj1 (renormalised per batch) and the diffusion view (as computed).
        self._graphs: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
        self._full: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._device: torch.device | str = "cpu"

    def prepare(self, data: TrainData, embedding: np.ndarray | None, context: Context | None = None) -> None:
        """Build the graph views once; ``embedding`` (N × d) is the pretrained cell embedding. Under several
        ranks (an active ``context``) each computes a share of the diffusion view's rows; all get all of it."""
        self.adj_main = self.adj1 = self.adj2 = data.adj
        self._graphs = (data.knn, data.adj_scipy)
        self._device = data.device
        if self.graph_views:
            if embedding is None:
                raise ValueError("the graph views need the pretrained embedding")
            kept = drop_dissimilar_edges(data.knn, embedding, self.graph_cfg.edge_drop)
            self.adj1 = self.adj_main = sparse_to_torch(row_normalize(kept), data.device)
            ppr = ppr_diffusion(
                data.knn,
                self.graph_cfg.ppr_alpha,
                self.graph_cfg.ppr_eps,
                self.graph_cfg.ppr_topk,
                context=context,
            )
            self.adj2 = sparse_to_torch(ppr, data.device)
            self._graphs = (kept, ppr)
        self._full = (self.adj_main, self.adj1, self.adj2)

    def focus(self, rows: np.ndarray | None) -> None:
        """Use the subgraphs induced by the cells ``rows`` (sorted, B of them) from now on; None: all cells.

        Â_r (and Â without graph views) is renormalised over the batch; the diffusion view, whose rows do not
        sum to one anyway, keeps its values on the edges inside the batch.
        """
        if self._full is None:
            raise RuntimeError("call prepare() before focus()")
        if rows is None:
            self.adj_main, self.adj1, self.adj2 = self._full
            return
        if self._graphs is None:
            raise RuntimeError("the batch graphs were dropped after training; prepare() again to focus")
        main = self._graphs[0][rows][:, rows]
        self.adj_main = self.adj1 = sparse_to_torch(row_normalize(main), self._device)
        self.adj2 = (
            sparse_to_torch(self._graphs[1][rows][:, rows], self._device)
            if self.graph_views
            else self.adj_main
        )

    def drop_batch_graphs(self) -> None:
        """Forget the scipy graphs that :meth:`focus` cuts batches from (training is over); the whole-data
        views stay."""
        self._graphs = None

    def views(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Views:
        """The two training views of ``x`` (N × P) for one epoch (fresh noise every call)."""
        if self.adj_main is None:
            raise RuntimeError("call prepare() before views()")
        if self.expression_noise:
            x1 = x * _normal_like(x, 1.0, self.noise_std, generator)
            x2 = x * _normal_like(x, 1.0, self.noise_std, generator)
        else:
            x1 = x2 = x
        return Views(x1, x2, self.adj1, self.adj2)

    def clean_views(self, x: torch.Tensor) -> Views:
        """The views without expression noise, used for the embedding that is reported."""
        if self.adj_main is None:
            raise RuntimeError("call prepare() before clean_views()")
        return Views(x, x, self.adj1, self.adj2)


def _normal_like(x: torch.Tensor, mean: float, std: float, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device="cpu") * std + mean
    return noise.to(x.device)


class DualAugmenter(Augmenter):
    """Expression noise on both views plus edge-removal (view 1) and PPR-diffusion (view 2) graphs."""

    expression_noise = True
    graph_views = True


class NoiseAugmenter(Augmenter):
    """Expression noise only; both graph views are Â."""

    expression_noise = True


class GraphAugmenter(Augmenter):
    """Graph views only (edge removal and diffusion); no expression noise."""

    graph_views = True


@hookimpl
def scsc_register_components(registry):
    registry.add(
        "augment",
        "dual",
        DualAugmenter,
        "expression noise + edge-removal and PPR-diffusion graph views (default)",
    )
    registry.add("augment", "noise", NoiseAugmenter, "expression noise only; both graph views are Â")
    registry.add("augment", "graph", GraphAugmenter, "edge-removal and PPR-diffusion graph views; no noise")
    registry.add("augment", "none", Augmenter, "no augmentation: both views are (X, Â)")
