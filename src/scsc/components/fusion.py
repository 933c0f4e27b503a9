"""Fusion blocks (component kind ``fusion``, METHOD §5–6.1, 6.3).

A fusion block turns the per-view embeddings into the cell embedding Z (N × d) and contributes the
representation-refinement loss terms: cross-correlation at sample and feature level and the propagation
regulariser. ``siamese`` is the published block; ``mean`` averages the branches and adds no terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import RunConfig
from ..losses import cross_correlation_feature, cross_correlation_sample, js_divergence
from ..plugins.hookspecs import hookimpl


class MeanFusion(nn.Module):
    """Z = mean of the available branch embeddings; no propagation, attention or refinement terms."""

    takes_rows = True
    takes_groups = True
    takes_shard = True

    def __init__(self, config: RunConfig, **_: object):
        super().__init__()

    def forward(
        self,
        z_ae: Tensor | None,
        z_g: Tensor | None,
        adj: Tensor,
        rows: Tensor | None = None,
        groups: list[Tensor] | None = None,
        shard=None,
    ) -> Tensor:
        """Branch embeddings (N × d each, either may be None) → Z (N × d); with a ``shard`` the branch
        embeddings are this rank's rows, and Z is gathered whole."""
        parts = [z for z in (z_ae, z_g) if z is not None]
        z = torch.stack(parts).mean(dim=0)
        return z if shard is None else shard.gather(z)

    def terms(
        self,
        ae_views: list[Tensor] | None,
        graph_views: list[Tensor] | None,
        propagation: list[tuple[Tensor, Tensor]],
        q: Tensor | None,
    ) -> dict[str, Tensor]:
        return {}


class SiameseFusion(nn.Module):
    """Adaptive a/b fusion, local propagation over Â_r, global attention without an N × N matrix, and β."""

    takes_rows = True  # per-cell fusion weights (model.fusion_weights = "cell")
    takes_groups = True
    takes_shard = True

    def __init__(self, config: RunConfig, *, n_cells: int, **_: object):
        super().__init__()
        d = config.model.latent
        if config.model.fusion_weights not in {"feature", "cell"}:
            raise ValueError("model.fusion_weights must be 'feature' or 'cell'")
        rows = n_cells if config.model.fusion_weights == "cell" else 1
        self.a = nn.Parameter(torch.full((rows, d), 0.5))
        self.b = nn.Parameter(torch.full((rows, d), 0.5))
        self.beta = nn.Parameter(torch.zeros(()))
        self.scale = config.model.attention_scale

    def forward(
        self,
        z_ae: Tensor | None,
        z_g: Tensor | None,
        adj: Tensor,
        rows: Tensor | None = None,
        groups: list[Tensor] | None = None,
        shard=None,
    ) -> Tensor:
        """Z = β·softmax(Z_l Z_lᵀ) Z_l + Z_l with Z_l = Â (a⊙Z_ae + b⊙Z_g); N × d in, N × d out.

        ``rows`` (B,) are the cells of a minibatch (their per-cell fusion weights are used); None: all cells.
        ``groups`` (index tensors that partition the N cells) restricts the attention to each group, as in
        minibatch training, while the propagation uses the whole graph ``adj``; None: attention over all cells.
        ``shard`` (:class:`~scsc.distributed.RowShard`, with ``groups``, no gradients): the branch embeddings
        are this rank's rows; the ranks share the propagation and the groups' attention, and every rank gets the
        whole Z.
        """
        if shard is not None:
            return self._sharded(z_ae, z_g, adj, groups, shard)
        z_l = torch.sparse.mm(adj, self._mix(z_ae, z_g, rows))
        if groups is None:
            z_gl = self._attend(z_l)
        else:
            z_gl = torch.empty_like(z_l)
            for g in groups:
                z_gl[g] = self._attend(z_l[g])
        return self.beta * z_gl + z_l

    def _sharded(
        self, z_ae: Tensor | None, z_g: Tensor | None, adj: Tensor, groups: list[Tensor] | None, shard
    ) -> Tensor:
        if groups is None:
            raise ValueError("a sharded fusion confines its attention to groups")
        rows = torch.arange(shard.lo, shard.hi, device=self.a.device)
        z_l = shard.gather(torch.sparse.mm(shard.rows_of(adj), shard.gather(self._mix(z_ae, z_g, rows))))
        z_gl = torch.zeros_like(z_l)
        world, rank = shard.context.world, shard.context.rank
        for g in groups[rank::world]:  # the groups dealt out in turn; the others' rows stay zero here
            z_gl[g] = self._attend(z_l[g])
        return self.beta * shard.sum(z_gl) + z_l

    def _mix(self, z_ae: Tensor | None, z_g: Tensor | None, rows: Tensor | None) -> Tensor:
        """Z_i = a⊙Z_ae + b⊙Z_g for the cells ``rows`` (B,; None: all), or the one branch present (B × d)."""
        if z_ae is None or z_g is None:
            return z_ae if z_ae is not None else z_g
        a, b = self.a, self.b
        if rows is not None and a.shape[0] > 1:
            a, b = torch.index_select(a, 0, rows), torch.index_select(b, 0, rows)
        return a * z_ae + b * z_g

    def _attend(self, z: Tensor) -> Tensor:
        """softmax(Z Zᵀ · scale) Z for Z (M × d) → (M × d)."""
        # Flash/memory-efficient kernels: O(M·d) memory, the M × M attention matrix is never stored.
        q = z.unsqueeze(0).unsqueeze(0)
        return F.scaled_dot_product_attention(q, q, q, scale=self.scale).squeeze(0).squeeze(0)

    def terms(
        self,
        ae_views: list[Tensor] | None,
        graph_views: list[Tensor] | None,
        propagation: list[tuple[Tensor, Tensor]],
        q: Tensor | None,
    ) -> dict[str, Tensor]:
        """Named refinement terms from the two views of each branch, the graph layers and soft assignments Q."""
        out: dict[str, Tensor] = {}
        if ae_views is not None:
            out["cr_sample_ae"] = cross_correlation_sample(*ae_views)
            if q is not None:
                out["cr_feature_ae"] = cross_correlation_feature(*ae_views, q)
        if graph_views is not None:
            out["cr_sample_graph"] = cross_correlation_sample(*graph_views)
            if q is not None:
                out["cr_feature_graph"] = cross_correlation_feature(*graph_views, q)
        if propagation:
            out["prop"] = torch.stack([js_divergence(h, ah) for h, ah in propagation]).sum()
        return out


@hookimpl
def scsc_register_components(registry):
    registry.add(
        "fusion",
        "siamese",
        SiameseFusion,
        "adaptive fusion, local propagation, global attention, cross-correlation refinement (default)",
    )
    registry.add("fusion", "mean", MeanFusion, "mean of the branch embeddings; no refinement terms")
