"""Loss terms of METHOD §6, each in linear memory in the number of cells N.

No function here forms an N × N tensor: the sample-level cross-correlation uses the d × d identity
Σ_ij S_ij² = ⟨UᵀU, VᵀV⟩_F, and the adjacency reconstruction is an unbiased estimate from the edges plus
uniformly sampled cell pairs. ``tests/test_losses.py`` checks every fast form against its dense definition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def cross_correlation_sample(u: Tensor, v: Tensor) -> Tensor:
    """Sample-level correlation reduction L_N for two views U, V (N × d), exact in O(N·d²).

    With rows L2-normalised and S = U Vᵀ (never formed):
    L_N = mean_i (S_ii − 1)² + mean_{i≠j} S_ij².
    """
    n = u.shape[0]
    u = F.normalize(u, dim=1)
    v = F.normalize(v, dim=1)
    diag = (u * v).sum(dim=1)
    total_sq = ((u.T @ u) * (v.T @ v)).sum()
    off_sq = total_sq - (diag**2).sum()
    on = ((diag - 1.0) ** 2).mean()
    if n < 2:
        return on
    return on + off_sq / (n * (n - 1))


def correlation_to_identity(c: Tensor) -> Tensor:
    """MSE of a square correlation matrix (d × d) to the identity: mean diag (c−1)² + mean off-diag c²."""
    d = c.shape[0]
    diag = torch.diagonal(c)
    on = ((diag - 1.0) ** 2).mean()
    if d < 2:
        return on
    off = ((c**2).sum() - (diag**2).sum()) / (d * (d - 1))
    return on + off


def soft_readout(z: Tensor, q: Tensor) -> Tensor:
    """Cluster-level readout (K × d): soft-assignment-weighted means Qᵀ Z / Σ_i Q_ik.

    Independent of the row order of ``z`` (N × d) and ``q`` (N × K), unlike contiguous chunk means.
    """
    weights = q / q.sum(dim=0, keepdim=True).clamp_min(1e-12)
    return weights.T @ z


def cross_correlation_feature(u: Tensor, v: Tensor, q: Tensor) -> Tensor:
    """Feature-level correlation reduction L_F on the K × d readouts of views U, V (N × d).

    Readout columns are L2-normalised over the K clusters; the d × d correlation is pushed to identity.
    """
    ru = F.normalize(soft_readout(u, q), dim=0)
    rv = F.normalize(soft_readout(v, q), dim=0)
    return correlation_to_identity(ru.T @ rv)


def js_divergence(h: Tensor, ah: Tensor) -> Tensor:
    """Jensen–Shannon divergence JS(softmax(ÂH) ‖ softmax(H)), mean over the N rows of H (N × d).

    Under autograd its intermediates (about ten N × d tensors per call, and a step makes six calls) are
    recomputed in the backward pass instead of kept: the same value and gradient, far less memory per step.
    """
    if torch.is_grad_enabled() and (h.requires_grad or ah.requires_grad):
        return checkpoint(_js_divergence, h, ah, use_reentrant=False, preserve_rng_state=False)
    return _js_divergence(h, ah)


def _js_divergence(h: Tensor, ah: Tensor) -> Tensor:
    log_p = F.log_softmax(ah, dim=1)
    log_q = F.log_softmax(h, dim=1)
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.log((0.5 * (p + q)).clamp_min(1e-30))
    return 0.5 * ((p * (log_p - log_m)).sum(dim=1) + (q * (log_q - log_m)).sum(dim=1)).mean()


def zinb_nll(
    counts: Tensor, mean: Tensor, disp: Tensor, pi: Tensor, size_factors: Tensor, eps: float = 1e-10
) -> Tensor:
    """Mean negative log-likelihood of ``counts`` (N × G) under ZINB(mean·s_i, disp, pi).

    ``mean``, ``disp``, ``pi`` are N × G (decoder outputs); ``size_factors`` is (N,). Gradients flow through
    every parameter, the mean included.
    """
    mu = mean * size_factors[:, None]
    theta = disp
    log_theta_mu = torch.log(theta + mu + eps)
    # Negative binomial log-probability.
    nb = (
        torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1.0)
        + theta * (torch.log(theta + eps) - log_theta_mu)
        + counts * (torch.log(mu + eps) - log_theta_mu)
    )
    nb_zero = theta * (torch.log(theta + eps) - log_theta_mu)
    zero_case = torch.log(pi + (1.0 - pi) * torch.exp(nb_zero) + eps)
    nonzero_case = torch.log(1.0 - pi + eps) + nb
    ll = torch.where(counts < 0.5, zero_case, nonzero_case)
    return -ll.mean()


#: Up to this many counts (cells × genes) the ZINB term keeps its intermediates for the backward pass (about
#: twenty float32 tensors of this size: ~170 MB at 2^21); above, it recomputes them chunk by chunk.
ZINB_KEEP_MAX = 1 << 21


def zinb_nll_chunked(
    params: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    hidden: Tensor,
    counts: Tensor,
    size_factors: Tensor,
    chunk: int = 256,
) -> Tensor:
    """:func:`zinb_nll` of ``counts`` (N × G) under ``params(hidden)``, computed over row chunks.

    ``params`` maps decoder states (n × h) to (mean, disp, pi), each n × G. When gradients are needed and the
    block has more than ``ZINB_KEEP_MAX`` counts, each chunk runs under activation checkpointing: the forward
    pass keeps no n × G intermediate and the backward pass recomputes one chunk at a time, so peak memory
    follows ``chunk`` × G instead of about twenty N × G tensors. Smaller blocks (the default 1,024 sampled
    cells × 2,000 genes) skip the recomputation, which was half the term's time. The value is the same either
    way and equals the unchunked mean up to the order of float summation.
    """
    from torch.utils.checkpoint import checkpoint

    n = hidden.shape[0]
    if n <= chunk:
        return zinb_nll(counts, *params(hidden), size_factors)

    def chunk_sum(h: Tensor, c: Tensor, s: Tensor) -> Tensor:
        return zinb_nll(c, *params(h), s) * c.shape[0]

    # The reentrant form runs the forward pass without saving anything (the non-reentrant form kept every
    # chunk's intermediates alive until backward here); it needs an input that requires grad.
    grad = torch.is_grad_enabled() and hidden.requires_grad and counts.numel() > ZINB_KEEP_MAX
    # DistributedDataParallel counts each weight's gradient once per step; the reentrant form runs a second
    # backward per chunk and DDP then refuses the step ("mark a variable ready only once"). Under DDP the ZINB
    # term sees at most loss.zinb_cells cells, so the non-reentrant form's memory stays small.
    reentrant = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    total = hidden.new_zeros(())
    for i in range(0, n, chunk):
        args = (hidden[i : i + chunk], counts[i : i + chunk], size_factors[i : i + chunk])
        total = total + (checkpoint(chunk_sum, *args, use_reentrant=reentrant) if grad else chunk_sum(*args))
    return total / n


def adjacency_loss(
    z: Tensor,
    edge_index: Tensor,
    edge_weight: Tensor,
    n_negatives: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unbiased estimate of mean_{ij} (σ(z_i·z_j) − Â_ij)² over all N² pairs, in O(E + sampled pairs).

    Uses Σ_{ij}(s−a)² = Σ_edges[(s−a)² − s²] + Σ_all s², with Σ_all s² estimated from
    ``n_negatives × E`` uniformly sampled pairs. ``edge_index`` (2 × E) and ``edge_weight`` (E,) hold the
    non-zero entries of Â; ``z`` is N × d.
    """
    n = z.shape[0]
    src, dst = edge_index
    s_edge = torch.sigmoid(_pair_dots(z, src, dst))
    edge_part = ((s_edge - edge_weight) ** 2 - s_edge**2).sum()
    m = max(1, n_negatives * edge_index.shape[1])
    i = torch.randint(0, n, (m,), generator=generator, device="cpu").to(z.device)
    j = torch.randint(0, n, (m,), generator=generator, device="cpu").to(z.device)
    s_rand = torch.sigmoid(_pair_dots(z, i, j))
    all_part = (s_rand**2).mean() * (n * n)
    return (edge_part + all_part) / (n * n)


def _pair_dots(z: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """z_i · z_j for index pairs (M,) of ``z`` (N × d) → (M,).

    ``index_select`` rather than ``z[i]``: the backward of advanced indexing accumulates with atomic adds on
    several CPU threads, so the same seed gave other weights from run to run; index_select's is ordered.
    """
    return (torch.index_select(z, 0, i) * torch.index_select(z, 0, j)).sum(dim=1)


def kl_target(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """KL(P ‖ Q) averaged over the N rows; P, Q are N × K row-stochastic (log Q taken here)."""
    return (p * (torch.log(p.clamp_min(eps)) - torch.log(q.clamp_min(eps)))).sum(dim=1).mean()
