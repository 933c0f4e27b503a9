"""Assemble the chosen components (augment, encoder, fusion, cluster) into one model.

The model knows how to run the two views through the shared encoders, fuse them and collect every named
loss term of METHOD §6; the trainer only weights and sums those terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .components.base import Branches, Views, capability, check_contract
from .config import RunConfig
from .data.bundle import TrainData
from .losses import adjacency_loss
from .plugins import Registry, get_registry


@dataclass
class Forward(Branches):
    """One forward pass over both views: the encoder's :class:`Branches` and their fusion ``z`` (N × d)."""

    z: Tensor = field(kw_only=True)


class ScSiameseClu(nn.Module):
    """The full model: augmenter + siamese encoder + fusion + clustering head.

    Args:
        config: run configuration (component names under ``config.components``).
        n_cells, n_input, n_genes: N, P (PCA dims) and G (HVGs for the ZINB head; 0 disables it).
    """

    def __init__(
        self, config: RunConfig, n_cells: int, n_input: int, n_genes: int, registry: Registry | None = None
    ):
        super().__init__()
        registry = registry or get_registry()
        c = config.components
        self.config = config
        self.augment = registry.build("augment", c.augment, config)
        self.encoder = registry.build("encoder", c.encoder, config, n_input=n_input, n_genes=n_genes)
        self.fusion = registry.build("fusion", c.fusion, config, n_cells=n_cells)
        self.head = registry.build("cluster", c.cluster, config)
        for kind, name, part in (
            ("augment", c.augment, self.augment),
            ("encoder", c.encoder, self.encoder),
            ("fusion", c.fusion, self.fusion),
            ("cluster", c.cluster, self.head),
        ):
            check_contract(kind, name, part)
        self.dims = {"n_cells": n_cells, "n_input": n_input, "n_genes": n_genes}
        #: Whether whole-data embeddings of a minibatch run can use the whole graph (see :meth:`forward`).
        self.fusion_takes_groups = capability(self.fusion, "takes_groups")
        self._fusion_takes_rows = capability(self.fusion, "takes_rows")
        #: Whether a distributed run's whole-data embeddings can be computed a shard of rows per rank.
        self.takes_shard = (
            self.fusion_takes_groups
            and capability(self.encoder, "takes_shard")
            and capability(self.fusion, "takes_shard")
        )

    # ------------------------------------------------------------------ passes
    def forward(
        self,
        views: Views,
        adj_main: Tensor,
        rows: Tensor | None = None,
        groups: list[Tensor] | None = None,
        propagation: bool = True,
        shard=None,
    ) -> Forward:
        """Both views through the shared branches, then fusion over ``adj_main`` (N × N) → Z (N × d).

        ``views``: :class:`~scsc.components.base.Views`, the expression matrices x1, x2 (N × P) and the sparse
        graphs adj1, adj2 (N × N) of the two views, as the augmenter's ``views``/``clean_views`` give them.
        ``rows`` (B,) names the cells of a minibatch (the inputs are then B × P and B × B); None: all cells.
        ``groups`` (index tensors partitioning all N cells; fusions declaring ``takes_groups`` only) confines the
        fusion's attention to each group, as in minibatch training, over whole-data inputs.
        ``propagation=False`` drops the graph layers' activations as soon as each view is done (an embedding
        needs only Z; on a million cells they are gigabytes).
        ``shard`` (:class:`~scsc.distributed.RowShard`; with ``groups``, ``propagation=False`` and when
        :attr:`takes_shard`): each rank computes its rows of the branches and its share of the fusion; the
        branches in the result are this rank's rows, Z is whole.
        """
        if shard is not None:
            br = self.encoder.encode_views(views, propagation=False, shard=shard)
            z = self.fusion(br.z_ae, br.z_g, adj_main, groups=groups, shard=shard)
            return Forward(br.z_ae, br.z_g, br.ae_views, br.graph_views, br.propagation, z=z)
        br = self.encoder.encode_views(views, propagation=propagation)
        if groups is not None:
            z = self.fusion(br.z_ae, br.z_g, adj_main, groups=groups)
        elif rows is not None and self._fusion_takes_rows:
            z = self.fusion(br.z_ae, br.z_g, adj_main, rows=rows)
        else:  # a fusion without per-cell parameters sees only the batch's tensors
            z = self.fusion(br.z_ae, br.z_g, adj_main)
        return Forward(br.z_ae, br.z_g, br.ae_views, br.graph_views, br.propagation, z=z)

    @torch.no_grad()
    def embed(
        self, data: TrainData, rows: Tensor | None = None, groups: list[Tensor] | None = None, shard=None
    ) -> Tensor:
        """The reported cell embedding Z (N × d): the views without expression noise, eval mode.

        ``data`` may be one minibatch (the augmenter focused on it), ``rows`` (B,) its cell indices; or all cells
        with the attention confined to ``groups``, computed in ``shard``s over the ranks (see :meth:`forward`).
        """
        was = self.training
        self.eval()
        v = self.augment.clean_views(data.x)
        out = self.forward(v, self.augment.adj_main, rows=rows, groups=groups, propagation=False, shard=shard)
        self.train(was)
        return out.z

    # ------------------------------------------------------------------ losses
    def clustering_terms(
        self,
        data: TrainData,
        out: Forward,
        generator: torch.Generator | None,
        n_negatives: int,
        refresh: bool,
        want: set[str],
    ) -> dict[str, Tensor]:
        """Every named term of METHOD §6 for one forward pass; terms not in ``want`` are skipped."""
        adj = self.augment.adj_main
        z = out.z
        terms, dec_props = self.encoder.reconstruction_terms(z, data, adj, want, generator)
        props = list(out.propagation) + dec_props
        if "rec_adj" in want:
            terms["rec_adj"] = adjacency_loss(z, data.edge_index, data.edge_weight, n_negatives, generator)
        q = self.head.soft_assign(z)
        terms.update(
            {
                k: v
                for k, v in self.fusion.terms(out.ae_views, out.graph_views, props, q.detach()).items()
                if k in want
            }
        )
        if refresh:
            self.head.refresh(z.detach())
        if "clu" in want:
            terms.update(self.head.loss(z, q))
        return terms
