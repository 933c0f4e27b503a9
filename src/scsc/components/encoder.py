"""Encoders (component kind ``encoder``, METHOD §4): an expression autoencoder and a graph autoencoder.

Both branches are applied to the two views with the same weights (siamese). ``siamese`` has both branches,
``ae`` only the expression branch, ``graph`` only the graph branch.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..losses import adjacency_loss, zinb_nll_chunked
from ..plugins.hookspecs import hookimpl
from .base import Branches, PretrainStage, Views


class ZINBParams(NamedTuple):
    """Per-cell, per-gene ZINB parameters (each N × G)."""

    mean: Tensor
    disp: Tensor
    pi: Tensor


def _mlp(sizes: list[int], slope: float, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


#: Cells the expression encoder takes at a time when it keeps no gradients.
EVAL_ROWS = 16384


class ExpressionAE(nn.Module):
    """MLP autoencoder P → hidden → d with a mirrored decoder and a ZINB head over G genes."""

    def __init__(self, n_input: int, hidden: list[int], latent: int, n_genes: int, slope: float = 0.2):
        super().__init__()
        self.encoder = _mlp([n_input, *hidden, latent], slope, last_act=False)
        dec = [latent, *reversed(hidden)]
        self.decoder_body = _mlp(dec, slope, last_act=True)
        self.decoder_out = nn.Linear(dec[-1], n_input)
        self.n_genes = n_genes
        if n_genes > 0:
            self.zinb_mean = nn.Linear(dec[-1], n_genes)
            self.zinb_disp = nn.Linear(dec[-1], n_genes)
            self.zinb_pi = nn.Linear(dec[-1], n_genes)

    def encode(self, x: Tensor) -> Tensor:
        """(N, P) → (N, d).

        Without gradients (an embedding of all cells) the rows go through ``EVAL_ROWS`` at a time: the layers are
        row-wise, so Z is the same, and the widest layer's N × 512 activations are never held at once.
        """
        if torch.is_grad_enabled() or len(x) <= EVAL_ROWS:
            return self.encoder(x)
        return torch.cat([self.encoder(x[i : i + EVAL_ROWS]) for i in range(0, len(x), EVAL_ROWS)])

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(N, d) → (X̂ (N, P), last hidden layer (N, h))."""
        h = self.decoder_body(z)
        return self.decoder_out(h), h

    def zinb(self, hidden: Tensor) -> ZINBParams:
        """ZINB parameters (N × G each) from the decoder's last hidden layer."""
        mean = torch.exp(self.zinb_mean(hidden).clamp(max=15.0)).clamp(1e-5, 1e6)
        disp = nn.functional.softplus(self.zinb_disp(hidden)).clamp(1e-4, 1e4)
        pi = torch.sigmoid(self.zinb_pi(hidden))
        return ZINBParams(mean, disp, pi)


class GraphLayer(nn.Module):
    """H_out = Â σ(H W); also returns (σ(H W), Â σ(H W)) for the propagation regulariser."""

    def __init__(self, n_in: int, n_out: int, activation: bool):
        super().__init__()
        self.weight = nn.Linear(n_in, n_out, bias=False)
        nn.init.xavier_uniform_(self.weight.weight)
        self.activation = activation

    def forward(self, h: Tensor, adj: Tensor, shard=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """H (N × n_in), Â (N × N) → (ÂH', (H', ÂH')) with H' = σ(H W).

        With a ``shard`` (:class:`~scsc.distributed.RowShard`, no gradients) H is this rank's rows only and so is
        the output: H' is gathered whole, because Â's rows reach every cell's H'.
        """
        s = self.weight(h)
        if self.activation:
            s = torch.tanh(s)
        if shard is not None:
            out = torch.sparse.mm(shard.rows_of(adj), shard.gather(s))
            return out, (s, out)
        out = torch.sparse.mm(adj, s)
        return out, (s, out)


class GraphAE(nn.Module):
    """Graph autoencoder (IGAE): P → gae_hidden → d, decoder d → reversed hidden → P."""

    def __init__(self, n_input: int, hidden: list[int], latent: int):
        super().__init__()
        enc = [n_input, *hidden, latent]
        dec = [latent, *reversed(hidden), n_input]
        self.enc_layers = nn.ModuleList(
            GraphLayer(a, b, activation=i < len(enc) - 2) for i, (a, b) in enumerate(pairwise(enc))
        )
        self.dec_layers = nn.ModuleList(
            GraphLayer(a, b, activation=i < len(dec) - 2) for i, (a, b) in enumerate(pairwise(dec))
        )

    @staticmethod
    def _run(
        layers: nn.ModuleList, h: Tensor, adj: Tensor, keep: bool = True, shard=None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        pairs = []
        for layer in layers:
            h, pair = layer(h, adj, shard=shard)
            if keep:
                pairs.append(pair)
        return h, pairs

    def encode(
        self, x: Tensor, adj: Tensor, keep_pairs: bool = True, shard=None
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """(N, P), Â → (Z_g (N, d), [(H_l, ÂH_l)] per layer; empty with ``keep_pairs=False``, which frees each
        layer's activations as soon as the next layer has them).

        ``shard`` (:class:`~scsc.distributed.RowShard`; embeddings only, ``keep_pairs=False``): X is still whole,
        Z_g holds rows ``shard.lo:shard.hi``.
        """
        if shard is not None:
            if keep_pairs:
                raise ValueError("a sharded graph encoding keeps no layer activations (keep_pairs=False)")
            x = shard.take(x)
        return self._run(self.enc_layers, x, adj, keep_pairs, shard)

    def decode(self, z: Tensor, adj: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """(N, d), Â → (Ẑ (N, P), [(H_l, ÂH_l)] per layer)."""
        return self._run(self.dec_layers, z, adj)


class SiameseEncoder(nn.Module):
    """Both branches; either may be absent in the subclasses below."""

    use_ae = True
    use_graph = True
    #: ``encode_views`` can embed a distributed run's cells a shard of rows per rank (``shard=``).
    takes_shard = True

    def __init__(self, config: RunConfig, *, n_input: int, n_genes: int, **_: object):
        super().__init__()
        m = config.model
        self.ae = ExpressionAE(n_input, m.ae_hidden, m.latent, n_genes) if self.use_ae else None
        self.gae = GraphAE(n_input, m.gae_hidden, m.latent) if self.use_graph else None
        self.latent = m.latent
        self.zinb_cells = config.loss.zinb_cells

    def encode_views(self, views: Views, propagation: bool = True, shard=None) -> Branches:
        """Both views (N × P, sparse N × N) through the same branches → embeddings N × d (METHOD §4).

        ``propagation=False`` drops the graph layers' activations as soon as each view is done (an embedding
        needs only Z; on a million cells they are gigabytes). ``shard`` (:class:`~scsc.distributed.RowShard`,
        with ``propagation=False``): the views are whole, the embeddings this rank's rows of them.
        """
        out = Branches(None, None)
        if self.ae is not None:
            x1, x2 = (views.x1, views.x2) if shard is None else (shard.take(views.x1), shard.take(views.x2))
            out.ae_views = [self.ae.encode(x1), self.ae.encode(x2)]
            out.z_ae = 0.5 * (out.ae_views[0] + out.ae_views[1])
        if self.gae is not None:
            g1, p1 = self.gae.encode(views.x1, views.adj1, keep_pairs=propagation, shard=shard)
            g2, p2 = self.gae.encode(views.x2, views.adj2, keep_pairs=propagation, shard=shard)
            out.graph_views = [g1, g2]
            out.z_g = 0.5 * (g1 + g2)
            out.propagation = p1 + p2
        return out

    def reconstruction_terms(
        self, z: Tensor, data, adj: Tensor, want: set[str], generator: torch.Generator | None
    ) -> tuple[dict[str, Tensor], list]:
        """``rec_x``, ``zinb`` and ``rec_graph`` of the fused Z (N × d), those in ``want``; and the graph
        decoder's (H, ÂH) pairs for the propagation regulariser."""
        terms: dict[str, Tensor] = {}
        props: list = []
        if self.ae is not None and ({"rec_x", "zinb"} & want):
            x_hat, hidden = self.ae.decode(z)
            if "rec_x" in want:
                terms["rec_x"] = torch.mean((x_hat - data.x) ** 2)
            if "zinb" in want and data.counts is not None and self.ae.n_genes > 0:
                terms["zinb"] = self._zinb(hidden, data, generator)
        if self.gae is not None and ({"rec_graph", "prop"} & want):
            z_hat, props = self.gae.decode(z, adj)
            if "rec_graph" in want:
                terms["rec_graph"] = torch.mean((z_hat - torch.sparse.mm(adj, data.x)) ** 2)
        return terms, props

    def _zinb(self, hidden: Tensor, data, generator: torch.Generator | None) -> Tensor:
        """ZINB negative log-likelihood of the counts (N × G) under the decoder's hidden layer (N × h)."""
        # The N × G likelihood dominates an epoch: a uniform cell sample estimates its mean.
        m = self.zinb_cells
        if 0 < m < data.n_cells:
            idx = torch.randperm(data.n_cells, generator=generator)[:m].to(hidden.device)
            # index_select: its backward is deterministic on several CPU threads (see losses._pair_dots)
            return zinb_nll_chunked(
                self.ae.zinb, torch.index_select(hidden, 0, idx), data.counts[idx], data.size_factors[idx]
            )
        return zinb_nll_chunked(self.ae.zinb, hidden, data.counts, data.size_factors)

    def pretrain_stages(self, config: RunConfig) -> list[PretrainStage]:
        """METHOD §7: the expression AE on cells, the graph AE on the graph, then both jointly."""
        p, n_neg = config.pretrain, config.loss.adj_negatives
        stages = []
        if self.ae is not None:
            stages.append(
                PretrainStage(
                    "pretrain_ae",
                    "pretrain: expression AE",
                    self.ae,
                    p.ae_lr,
                    p.ae_epochs,
                    _ae_loss,
                    cells=True,
                )
            )
        if self.gae is not None:
            stages.append(
                PretrainStage(
                    "pretrain_gae",
                    "pretrain: graph AE",
                    self.gae,
                    p.gae_lr,
                    p.gae_epochs,
                    partial(_gae_loss, n_neg=n_neg, adj_weight=p.gae_adj_weight),
                )
            )
        if self.ae is not None and self.gae is not None:
            stages.append(
                PretrainStage(
                    "pretrain_joint",
                    "pretrain: joint",
                    self,
                    p.joint_lr,
                    p.joint_epochs,
                    partial(_joint_loss, n_neg=n_neg, p=p),
                )
            )
        return stages


def _ae_loss(ae: ExpressionAE, xb: Tensor) -> tuple[Tensor, dict]:
    """Expression reconstruction of a batch of cells (B × P)."""
    x_hat, _ = ae.decode(ae.encode(xb))
    loss = 10.0 * torch.mean((x_hat - xb) ** 2)
    return loss, {"rec_x": loss}


def _gae_loss(
    gae: GraphAE, d, ax: Tensor, generator: torch.Generator, *, n_neg: int, adj_weight: float
) -> tuple[Tensor, dict]:
    """Graph AE: reconstruct ÂX (N × P) and the edges of Â."""
    z, _ = gae.encode(d.x, d.adj)
    z_hat, _ = gae.decode(z, d.adj)
    terms = {
        "rec_graph": torch.mean((z_hat - ax) ** 2),
        "rec_adj": adjacency_loss(z, d.edge_index, d.edge_weight, n_neg, generator),
    }
    return terms["rec_graph"] + adj_weight * terms["rec_adj"], terms


def _joint_loss(
    enc: SiameseEncoder, d, ax: Tensor, generator: torch.Generator, *, n_neg: int, p
) -> tuple[Tensor, dict]:
    """Both branches together, with their embeddings pulled towards each other."""
    z_ae = enc.ae.encode(d.x)
    x_hat, _ = enc.ae.decode(z_ae)
    z_g, _ = enc.gae.encode(d.x, d.adj)
    z_hat, _ = enc.gae.decode(z_g, d.adj)
    terms = {
        "rec_x": torch.mean((x_hat - d.x) ** 2),
        "rec_graph": torch.mean((z_hat - ax) ** 2),
        "rec_adj": adjacency_loss(z_g, d.edge_index, d.edge_weight, n_neg, generator),
        "align": torch.mean((z_ae - z_g) ** 2),
    }
    loss = (
        terms["rec_x"]
        + p.joint_rec_graph * terms["rec_graph"]
        + p.joint_adj * terms["rec_adj"]
        + p.joint_align * terms["align"]
    )
    return loss, terms


class AEOnlyEncoder(SiameseEncoder):
    use_graph = False


class GraphOnlyEncoder(SiameseEncoder):
    use_ae = False


@hookimpl
def scsc_register_components(registry):
    registry.add(
        "encoder",
        "siamese",
        SiameseEncoder,
        "expression AE with ZINB decoder + graph AE, weights shared across views (default)",
    )
    registry.add("encoder", "ae", AEOnlyEncoder, "expression autoencoder branch only")
    registry.add("encoder", "graph", GraphOnlyEncoder, "graph autoencoder branch only")
