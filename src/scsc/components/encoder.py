"""Encoders (component kind ``encoder``, METHOD §4): an expression autoencoder and a graph autoencoder.

Both branches are applied to the two views with the same weights (siamese). ``siamese`` has both branches,
``ae`` only the expression branch, ``graph`` only the graph branch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..plugins.hookspecs import hookimpl


class ZINBParams(NamedTuple):
    """Per-cell, per-gene ZINB parameters (each N × G)."""

    mean: Tensor
    disp: Tensor
    pi: Tensor


def _mlp(sizes: list[int], slope: float, last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


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
        """(N, P) → (N, d)."""
        return self.encoder(x)

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

    def forward(self, h: Tensor, adj: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        s = self.weight(h)
        if self.activation:
            s = torch.tanh(s)
        out = torch.sparse.mm(adj, s)
        return out, (s, out)


class GraphAE(nn.Module):
    """Graph autoencoder (IGAE): P → gae_hidden → d, decoder d → reversed hidden → P."""

    def __init__(self, n_input: int, hidden: list[int], latent: int):
        super().__init__()
        enc = [n_input, *hidden, latent]
        dec = [latent, *reversed(hidden), n_input]
        self.enc_layers = nn.ModuleList(
            GraphLayer(a, b, activation=i < len(enc) - 2) for i, (a, b) in enumerate(zip(enc[:-1], enc[1:]))
        )
        self.dec_layers = nn.ModuleList(
            GraphLayer(a, b, activation=i < len(dec) - 2) for i, (a, b) in enumerate(zip(dec[:-1], dec[1:]))
        )

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, adj: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        pairs = []
        for layer in layers:
            h, pair = layer(h, adj)
            pairs.append(pair)
        return h, pairs

    def encode(self, x: Tensor, adj: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """(N, P), Â → (Z_g (N, d), [(H_l, ÂH_l)] per layer)."""
        return self._run(self.enc_layers, x, adj)

    def decode(self, z: Tensor, adj: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """(N, d), Â → (Ẑ (N, P), [(H_l, ÂH_l)] per layer)."""
        return self._run(self.dec_layers, z, adj)


class SiameseEncoder(nn.Module):
    """Both branches; either may be absent in the subclasses below."""

    use_ae = True
    use_graph = True

    def __init__(self, config: RunConfig, *, n_input: int, n_genes: int, **_: object):
        super().__init__()
        m = config.model
        self.ae = ExpressionAE(n_input, m.ae_hidden, m.latent, n_genes) if self.use_ae else None
        self.gae = GraphAE(n_input, m.gae_hidden, m.latent) if self.use_graph else None
        self.latent = m.latent


class AEOnlyEncoder(SiameseEncoder):
    use_graph = False


class GraphOnlyEncoder(SiameseEncoder):
    use_ae = False


@hookimpl
def scsc_register_components(registry):
    registry.add("encoder", "siamese", SiameseEncoder,
                 "expression AE with ZINB decoder + graph AE, weights shared across views (default)")
    registry.add("encoder", "ae", AEOnlyEncoder, "expression autoencoder branch only")
    registry.add("encoder", "graph", GraphOnlyEncoder, "graph autoencoder branch only")
