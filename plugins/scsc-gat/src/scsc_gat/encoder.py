"""The ``gat`` encoder: two torch-geometric ``GATConv`` layers over the cell graph, and a feature decoder.

It shows that scsc's encoder contract (``scsc.components.base.Encoder``) is a black box: one graph branch
instead of the built-in expression AE + graph AE pair, its own reconstruction term and its own single
pretraining stage, and its own config section ``[plugin.gat]``. Memory stays linear in the number of cells
(attention over the kNN edges only, no N × N matrix).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from scsc.components.base import Branches, PretrainStage, Views
from scsc.losses import adjacency_loss

from .settings import GATSettings

__all__ = ["GATEncoder", "GATSettings", "edge_index"]


def edge_index(adj: Tensor) -> Tensor:
    """The edges (2 × E, int64) of a sparse N × N torch adjacency (CSR or COO)."""
    return adj.to_sparse_coo().coalesce().indices()


class GATEncoder(nn.Module):
    """P → GATConv(heads × hidden) → ELU → GATConv(d) on each view's graph; decoder d → hidden → P."""

    def __init__(self, config, *, n_input: int, **_: object):
        super().__init__()
        s = config.section("gat")
        if s.heads < 1 or s.hidden < 1 or not 0.0 <= s.dropout < 1.0:
            from scsc.errors import ConfigError

            raise ConfigError("plugin.gat: heads and hidden must be ≥ 1 and dropout in [0, 1)")
        d = config.model.latent
        self.conv1 = GATConv(n_input, s.hidden, heads=s.heads, dropout=s.dropout)
        self.conv2 = GATConv(s.hidden * s.heads, d, heads=1, dropout=s.dropout)
        self.decoder = nn.Sequential(nn.Linear(d, s.hidden), nn.ELU(), nn.Linear(s.hidden, n_input))

    def embed(self, x: Tensor, adj: Tensor) -> Tensor:
        """Cells (N × P) on the graph ``adj`` → embedding (N × d)."""
        edges = edge_index(adj)
        return self.conv2(F.elu(self.conv1(x, edges)), edges)

    # ------------------------------------------------------------------ the encoder contract
    def encode_views(self, views: Views, propagation: bool = True) -> Branches:
        """Each view through the same layers; the result is a graph branch (no expression branch)."""
        g1, g2 = self.embed(views.x1, views.adj1), self.embed(views.x2, views.adj2)
        return Branches(z_ae=None, z_g=0.5 * (g1 + g2), graph_views=[g1, g2])

    def reconstruction_terms(
        self, z: Tensor, data, adj: Tensor, want: set[str], generator: torch.Generator | None
    ) -> tuple[dict[str, Tensor], list]:
        """``rec_graph``: the decoder reconstructs ÂX (N × P) from the fused Z (N × d)."""
        if "rec_graph" not in want:
            return {}, []
        return {"rec_graph": torch.mean((self.decoder(z) - torch.sparse.mm(adj, data.x)) ** 2)}, []

    def pretrain_stages(self, config) -> list[PretrainStage]:
        """One graph stage (``pretrain.gae_epochs`` epochs at ``pretrain.gae_lr``)."""
        p = config.pretrain
        loss = partial(_pretrain_loss, n_neg=config.loss.adj_negatives, adj_weight=p.gae_adj_weight)
        return [PretrainStage("pretrain_gae", "pretrain: GAT", self, p.gae_lr, p.gae_epochs, loss)]


def _pretrain_loss(
    enc: GATEncoder, d, ax: Tensor, generator: torch.Generator, *, n_neg: int, adj_weight: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Reconstruct ÂX and the graph's edges from the embedding of the plain graph."""
    z = enc.embed(d.x, d.adj)
    terms = {
        "rec_graph": torch.mean((enc.decoder(z) - ax) ** 2),
        "rec_adj": adjacency_loss(z, d.edge_index, d.edge_weight, n_neg, generator),
    }
    return terms["rec_graph"] + adj_weight * terms["rec_adj"], terms
