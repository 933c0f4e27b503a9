"""Assemble the chosen components (augment, encoder, fusion, cluster) into one model.

The model knows how to run the two views through the shared encoders, fuse them and collect every named
loss term of METHOD §6; the trainer only weights and sums those terms.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .config import RunConfig
from .data.bundle import TrainData
from .losses import adjacency_loss, zinb_nll_chunked
from .plugins import Registry, get_registry


@dataclass
class Forward:
    """One forward pass over both views."""

    z: Tensor
    z_ae: Tensor | None
    z_g: Tensor | None
    ae_views: list[Tensor] | None
    graph_views: list[Tensor] | None
    propagation: list[tuple[Tensor, Tensor]] = field(default_factory=list)


class ScSiameseClu(nn.Module):
    """The full model: augmenter + siamese encoder + fusion + clustering head.

    Args:
        config: run configuration (component names under ``config.components``).
        n_cells, n_input, n_genes: N, P (PCA dims) and G (HVGs for the ZINB head; 0 disables it).
    """

    def __init__(self, config: RunConfig, n_cells: int, n_input: int, n_genes: int,
                 registry: Registry | None = None):
        super().__init__()
        registry = registry or get_registry()
        c = config.components
        self.config = config
        self.augment = registry.build("augment", c.augment, config)
        self.encoder = registry.build("encoder", c.encoder, config, n_input=n_input, n_genes=n_genes)
        self.fusion = registry.build("fusion", c.fusion, config, n_cells=n_cells)
        self.head = registry.build("cluster", c.cluster, config)
        self.dims = {"n_cells": n_cells, "n_input": n_input, "n_genes": n_genes}
        # A plugin fusion written before minibatch mode takes no ``rows``; it then sees only the batch's tensors.
        params = inspect.signature(self.fusion.forward).parameters
        self._fusion_takes_rows = "rows" in params
        #: Whether whole-data embeddings of a minibatch run can use the whole graph (see :meth:`forward`).
        self.fusion_takes_groups = "groups" in params

    # ------------------------------------------------------------------ passes
    def forward(self, x1: Tensor, x2: Tensor, adj1: Tensor, adj2: Tensor, adj_main: Tensor,
                rows: Tensor | None = None, groups: list[Tensor] | None = None, propagation: bool = True
                ) -> Forward:
        """Both views through the shared branches, then fusion over ``adj_main`` → Z (N × d).

        ``rows`` (B,) names the cells of a minibatch (the inputs are then B × P and B × B); None: all cells.
        ``groups`` (index tensors partitioning all N cells; fusions with a ``groups`` keyword only) confines the
        fusion's attention to each group, as in minibatch training, over whole-data inputs.
        ``propagation=False`` drops the graph layers' activations as soon as each view is done (an embedding
        needs only Z; on a million cells they are gigabytes).
        """
        enc = self.encoder
        ae_views = graph_views = None
        z_ae = z_g = None
        props: list[tuple[Tensor, Tensor]] = []
        if enc.ae is not None:
            ae_views = [enc.ae.encode(x1), enc.ae.encode(x2)]
            z_ae = 0.5 * (ae_views[0] + ae_views[1])
        if enc.gae is not None:
            g1, p1 = enc.gae.encode(x1, adj1)
            if not propagation:
                p1 = []
            g2, p2 = enc.gae.encode(x2, adj2)
            if not propagation:
                p2 = []
            graph_views = [g1, g2]
            z_g = 0.5 * (g1 + g2)
            props = p1 + p2
        if groups is not None:
            z = self.fusion(z_ae, z_g, adj_main, groups=groups)
        elif rows is not None and self._fusion_takes_rows:
            z = self.fusion(z_ae, z_g, adj_main, rows=rows)
        else:
            z = self.fusion(z_ae, z_g, adj_main)
        return Forward(z, z_ae, z_g, ae_views, graph_views, props)

    @torch.no_grad()
    def embed(self, data: TrainData, rows: Tensor | None = None, groups: list[Tensor] | None = None) -> Tensor:
        """The reported cell embedding Z (N × d): the views without expression noise, eval mode.

        ``data`` may be one minibatch (the augmenter focused on it), ``rows`` (B,) its cell indices; or all cells
        with the attention confined to ``groups`` (see :meth:`forward`).
        """
        was = self.training
        self.eval()
        v = self.augment.clean_views(data.x)
        out = self.forward(v.x1, v.x2, v.adj1, v.adj2, self.augment.adj_main, rows=rows, groups=groups,
                           propagation=False)
        self.train(was)
        return out.z

    # ------------------------------------------------------------------ losses
    def clustering_terms(self, data: TrainData, out: Forward, generator: torch.Generator | None,
                         n_negatives: int, refresh: bool, want: set[str]) -> dict[str, Tensor]:
        """Every named term of METHOD §6 for one forward pass; terms not in ``want`` are skipped."""
        enc = self.encoder
        adj = self.augment.adj_main
        terms: dict[str, Tensor] = {}
        z = out.z
        if enc.ae is not None and ({"rec_x", "zinb"} & want):
            x_hat, hidden = enc.ae.decode(z)
            if "rec_x" in want:
                terms["rec_x"] = torch.mean((x_hat - data.x) ** 2)
            if "zinb" in want and data.counts is not None and enc.ae.n_genes > 0:
                # The N × G likelihood dominates an epoch: a uniform cell sample estimates its mean.
                m = self.config.loss.zinb_cells
                if 0 < m < data.n_cells:
                    idx = torch.randperm(data.n_cells, generator=generator)[:m].to(z.device)
                    # index_select: its backward is deterministic on several CPU threads (see losses._pair_dots)
                    terms["zinb"] = zinb_nll_chunked(enc.ae.zinb, torch.index_select(hidden, 0, idx),
                                                     data.counts[idx], data.size_factors[idx])
                else:
                    terms["zinb"] = zinb_nll_chunked(enc.ae.zinb, hidden, data.counts, data.size_factors)
        props = list(out.propagation)
        if enc.gae is not None and ({"rec_graph", "prop"} & want):
            z_hat, dec_props = enc.gae.decode(z, adj)
            props += dec_props
            if "rec_graph" in want:
                terms["rec_graph"] = torch.mean((z_hat - torch.sparse.mm(adj, data.x)) ** 2)
        if "rec_adj" in want:
            terms["rec_adj"] = adjacency_loss(z, data.edge_index, data.edge_weight, n_negatives, generator)
        q = self.head.soft_assign(z)
        terms.update({k: v for k, v in self.fusion.terms(out.ae_views, out.graph_views, props, q.detach())
                      .items() if k in want})
        if refresh:
            self.head.refresh(z.detach())
        if "clu" in want:
            terms.update(self.head.loss(z, q))
        return terms
