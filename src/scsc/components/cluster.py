"""Clustering heads (component kind ``cluster``, METHOD §6.5).

A head is initialised by KMeans on the pretrained embedding, gives soft assignments Q (N × K), may refresh a
target, returns its named loss terms and owns the final prediction.

The built-in heads cluster Z beside the model input (``cluster.input_weight``): each cell is the row
[z_i ‖ w·s·(x_i − x̄)], x the PCA input the encoders read (N × P), s the scale that gives the input Z's root mean
square norm at the start. The input part is fixed; gradients reach the encoder through z only. Over seeds it
anchors the partition to what the data show before training (docs/method.md, "The head clusters Z beside
its input"). ``input_weight = 0`` clusters Z alone, as published.

- ``sinkhorn``: Student-t Q; target P = entropic OT plan between cells (uniform) and clusters (the KMeans
  proportions) with cost −log Q and ε = 1/λ, solved by POT; loss KL(P ‖ Q); predicts argmax P.
- ``dec``: Student-t Q; target the DEC sharpened distribution q²/f; predicts argmax Q.
- ``kmeans``: no loss; predicts KMeans on the final embedding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..losses import kl_target, soft_readout
from ..plugins.hookspecs import hookimpl

#: The graph an estimated K's partition start is found on (:meth:`StudentTHead.init_from`) holds the model input
#: at most at Z's own size (weight 1), whatever ``cluster.input_weight``: with the input at 3 × Z's size that
#: graph splits Zheng's sorted PBMC as the input does (start ARI 0.712 → 0.581 on the tuning collection, ten
#: seeds); at weight 1 it keeps the estimate's gain (0.715; docs/method.md, "How much of the input").
START_GRAPH_INPUT_WEIGHT = 1.0


def student_t(z: Tensor, centroids: Tensor, nu: float = 1.0) -> Tensor:
    """q_ij ∝ (1 + ‖z_i − μ_j‖²/ν)^{-(ν+1)/2}, rows normalised; z is N × d, centroids K × d → N × K."""
    d2 = (z * z).sum(1, keepdim=True) - 2 * z @ centroids.T + (centroids * centroids).sum(1)[None, :]
    q = (1.0 + d2.clamp_min(0) / nu).pow(-(nu + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def _rms(a: Tensor) -> Tensor:
    """Root mean square row norm of ``a`` (N × d), a scalar tensor."""
    return a.pow(2).sum(dim=1).mean().sqrt()


def kmeans(z: np.ndarray, k: int, seed: int, restarts: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """KMeans (``restarts`` k-means++ starts, the lowest inertia kept) on ``z`` (N × d) → (labels (N,),
    centroids (K × d))."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit(z.astype(np.float64))
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def sinkhorn_plan(q: np.ndarray, proportions: np.ndarray, lam: float, n_iter: int, tol: float) -> np.ndarray:
    """Entropic OT plan (N × K, rows rescaled to sum to one) between uniform cells and ``proportions``.

    Cost −log Q with ε = 1/λ, so the Gibbs kernel is Q^λ: the reference's "Q^λ then Sinkhorn–Knopp".
    Falls back to the log-domain solver when the plain one under- or overflows.
    """
    import ot

    n = q.shape[0]
    a = np.full(n, 1.0 / n)
    b = proportions / proportions.sum()
    cost = -np.log(np.clip(q.astype(np.float64), 1e-30, None))
    cost -= cost.min(axis=1, keepdims=True)  # row shifts do not change the plan, they keep Q^λ in range
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(a, b, cost, reg=1.0 / lam, numItermax=n_iter, stopThr=tol)
        if not np.isfinite(plan).all() or plan.sum() <= 0:
            plan = ot.sinkhorn(
                a, b, cost, reg=1.0 / lam, method="sinkhorn_log", numItermax=n_iter, stopThr=tol
            )
    plan = np.nan_to_num(plan, nan=0.0, posinf=0.0)
    rows = plan.sum(axis=1, keepdims=True)
    empty = rows[:, 0] <= 0
    plan[~empty] /= rows[~empty]
    plan[empty] = q[empty]  # a row with no mass (underflow) keeps its own soft assignment
    return plan


class StudentTHead(nn.Module):
    """Shared part: learnable centroids initialised by KMeans, Student-t soft assignments."""

    def __init__(self, config: RunConfig, **_: object):
        super().__init__()
        #: The run's ``cluster`` settings and seed (public: subclasses read them).
        self.cfg = config.cluster
        self.seed = config.seed
        self.centroids = nn.Parameter(torch.zeros(0))
        self.register_buffer("proportions", torch.zeros(0))
        #: The initial KMeans cluster of every cell (N,); minibatch training derives batch marginals from it.
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long))
        #: Centre (P,) and scale (scalar) of the model input beside Z, fixed at the start (empty: Z alone).
        self.register_buffer("input_mean", torch.zeros(0))
        self.register_buffer("input_scale", torch.zeros(0))
        self.target: Tensor | None = None
        self._batch_proportions: Tensor | None = None
        self._input: Tensor | None = None
        self._rows: Tensor | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def use_input(self, x: Tensor | None) -> None:
        """The model input of all cells (N × P), clustered beside Z when ``cluster.input_weight`` > 0.

        Held by reference, not saved with the head: the run attaches it again after a resume.
        """
        self._input = x if x is not None and self.cfg.input_weight > 0 else None

    def features(self, z: Tensor) -> Tensor:
        """What the head clusters: Z (n × d), or [Z ‖ w·s·(x − x̄)] (n × (d + P)) for the same cells (all cells,
        or the batch given to :meth:`focus`)."""
        if self._input is None or self.input_scale.numel() == 0:
            return z
        x = self._input if self._rows is None else self._input[self._rows]
        return torch.cat([z, self._scaled(x, z.dtype)], dim=1)

    def _scaled(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """The input part w·s·(x − x̄) of the cells of ``x`` (n × P)."""
        return (x.to(dtype) - self.input_mean) * self.input_scale

    def _fix_input_scale(self, z: Tensor) -> None:
        """Centre and scale of the input part from Z (N × d) at the start: the input gets Z's RMS row norm."""
        if self._input is None:
            self.input_mean, self.input_scale = (
                torch.zeros(0, device=z.device),
                torch.zeros(0, device=z.device),
            )
            return
        x = self._input.to(z.dtype)
        mean = x.mean(dim=0)
        scale = self.cfg.input_weight * _rms(z.detach()) / _rms(x - mean).clamp_min(1e-12)
        self.input_mean, self.input_scale = mean.detach(), scale.detach().reshape(())

    def init(self, z: Tensor, n_clusters: int) -> np.ndarray:
        """KMeans on the pretrained embedding ``z`` (N × d), beside the input; returns its labels (N,)."""
        self._rows = None
        self._fix_input_scale(z)
        labels, centers = kmeans(
            self.features(z.detach()).cpu().numpy(), n_clusters, self.seed, self.cfg.kmeans_restarts
        )
        return self._start(z, labels, centers)

    def init_from(
        self, z: Tensor, n_clusters: int, partition: Callable[[np.ndarray], np.ndarray | None]
    ) -> np.ndarray:
        """Start from ``partition(features)`` instead of KMeans's own starts: it is given what the head clusters
        (:meth:`features` of ``z``, N × D), with the input part at most at weight ``START_GRAPH_INPUT_WEIGHT``,
        and returns labels (N,) in 0 … K − 1; their centroids are refined by Lloyd iterations on the head's own
        features (KMeans from them, one start). Returns the labels; when ``partition`` returns None, the head
        starts as :meth:`init` does.

        The run passes the estimate of K's own partition for an estimated K (scsc/k_selection.py): KMeans at
        that K may halve a large type and lump small ones that the cell graph keeps apart (docs/method.md, "The
        head starts from the estimate's partition").
        """
        from sklearn.cluster import KMeans

        self._rows = None
        self._fix_input_scale(z)
        f = self.features(z.detach()).cpu().numpy().astype(np.float64)
        d, weight = z.shape[1], self.cfg.input_weight
        if f.shape[1] > d and weight > START_GRAPH_INPUT_WEIGHT:  # [Z ‖ input part]: the input at weight 1
            labels = partition(np.hstack([f[:, :d], f[:, d:] * (START_GRAPH_INPUT_WEIGHT / weight)]))
        else:
            labels = partition(f)
        if labels is None:
            return self.init(z, n_clusters)
        k = int(labels.max()) + 1
        # Cluster means as one sparse (K × N) product, the one-hot form of scsc.k_selection.
        members = sp.csr_matrix(
            (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels))
        )
        centers = (members @ f) / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]
        km = KMeans(n_clusters=k, init=centers, n_init=1, random_state=self.seed).fit(f)
        return self._start(z, km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32))

    def start_from(self, z: Tensor, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Start from a partition: ``labels`` (N,) in 0 … K − 1 and their ``centers`` (K × d, float32) become
        the centroids, the transport proportions (cluster sizes) and the batch marginals; returns ``labels``.

        ``centers`` may hold Z's columns only: the input's part is then the mean input of each cluster. The
        public way for a head that finds its clusters otherwise (Leiden, a reference) to reuse the rest.
        """
        self._rows = None
        self._fix_input_scale(z)
        if centers.shape[1] == z.shape[1] and self._input is not None:
            part = self._scaled(self._input, z.dtype).detach()
            idx = torch.from_numpy(labels).to(part.device)
            sums = torch.zeros(len(centers), part.shape[1], dtype=part.dtype, device=part.device)
            sums.index_add_(0, idx, part)
            sizes = torch.bincount(idx, minlength=len(centers)).clamp_min(1).to(part.dtype)
            centers = np.concatenate(
                [centers, (sums / sizes[:, None]).cpu().numpy().astype(np.float32)], axis=1
            )
        return self._start(z, labels, centers)

    def _start(self, z: Tensor, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """:meth:`start_from` once the input's scale is fixed and ``centers`` (K × width) are complete."""
        k = len(centers)
        self.centroids = nn.Parameter(torch.from_numpy(np.ascontiguousarray(centers)).to(z.device))
        sizes = np.bincount(labels, minlength=k).astype(np.float64)
        props = np.maximum(sizes, 1.0) / max(sizes.sum(), 1.0)
        self.proportions = torch.from_numpy(props / props.sum()).to(z.device)
        self.assignments = torch.from_numpy(labels).to(z.device)
        return labels

    def focus(self, rows: Tensor | None) -> None:
        """Train on the cells ``rows`` (B,) from now on (None: all cells).

        The transport target of a batch then uses the batch's share of each initial cluster: a batch of
        neighbouring cells holds only some of the types, and forcing the global proportions on it would move
        cells into clusters that are not there. Summed over a round of batches these are the global proportions.
        The input beside Z is then these cells' rows.
        """
        self._rows = rows
        if rows is None or self.assignments.numel() == 0:
            self._batch_proportions = None
            return
        sizes = torch.bincount(self.assignments[rows], minlength=self.n_clusters).double()
        # A small floor keeps every cluster reachable (the plan needs positive marginals).
        props = sizes.clamp_min(0.5)
        self._batch_proportions = props / props.sum()

    @property
    def marginals(self) -> Tensor:
        """Cluster proportions (K,) the transport target must meet: the batch's or the global ones."""
        return self.proportions if self._batch_proportions is None else self._batch_proportions

    def soft_assign(self, z: Tensor) -> Tensor:
        """Q (N × K) of the cells of ``z`` (N × d) beside their input (:meth:`features`)."""
        return student_t(self.features(z), self.centroids)

    def refresh(self, z: Tensor) -> None:
        """Recompute the target from the current embedding (no gradient)."""

    def loss(self, z: Tensor, q: Tensor) -> dict[str, Tensor]:
        if self.target is None:
            self.refresh(z.detach())
        return {"clu": kl_target(self.target, q)}

    def predict(self, z: Tensor) -> np.ndarray:
        return self.soft_assign(z).argmax(dim=1).cpu().numpy()

    def refit(self, z: Tensor) -> None:
        """Move each centroid to the mean of the final embedding ``z`` (N × d) weighted by the head's own target
        (one EM step; K × d, linear in N). A head without a target (``kmeans``) keeps its centroids.

        Called after minibatch training only: a centroid then learns only from the batches that hold its
        cluster, while every batch moves the shared encoder, so centroids can lag the embedding (docs/method.md,
        "The clustering stage in minibatch mode").
        """
        self.refresh(z.detach())
        if self.target is None:
            return
        w = self.target.to(z.dtype)
        with torch.no_grad():
            means = soft_readout(self.features(z.detach()), w)
            empty = w.sum(dim=0) <= 1e-12  # a cluster the target leaves empty keeps its centroid
            means[empty] = self.centroids[empty]
            self.centroids.copy_(means)
        self.target = None


class SinkhornHead(StudentTHead):
    """Optimal-transport target with the predefined (KMeans) cluster proportions."""

    def refresh(self, z: Tensor) -> None:
        with torch.no_grad():
            q = self.soft_assign(z).double().cpu().numpy()
        plan = sinkhorn_plan(
            q,
            self.marginals.cpu().numpy(),
            self.cfg.sinkhorn_lambda,
            self.cfg.sinkhorn_iters,
            self.cfg.sinkhorn_tol,
        )
        self.target = torch.from_numpy(plan.astype(np.float32)).to(z.device)

    def predict(self, z: Tensor) -> np.ndarray:
        self.refresh(z.detach())
        return self.target.argmax(dim=1).cpu().numpy()


class DECHead(StudentTHead):
    """Classic DEC target p_ij ∝ q_ij² / f_j."""

    def refresh(self, z: Tensor) -> None:
        with torch.no_grad():
            q = self.soft_assign(z)
            w = q**2 / q.sum(dim=0, keepdim=True).clamp_min(1e-12)
            self.target = w / w.sum(dim=1, keepdim=True)


class KMeansHead(StudentTHead):
    """No clustering loss; KMeans on the final embedding. Centroids stay fixed (used for readouts only)."""

    def _start(self, z: Tensor, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
        labels = super()._start(z, labels, centers)
        self.centroids.requires_grad_(False)
        return labels

    def loss(self, z: Tensor, q: Tensor) -> dict[str, Tensor]:
        return {}

    def predict(self, z: Tensor) -> np.ndarray:
        return kmeans(
            self.features(z.detach()).cpu().numpy(), self.n_clusters, self.seed, self.cfg.kmeans_restarts
        )[0]


@hookimpl
def scsc_register_components(registry):
    registry.add(
        "cluster",
        "sinkhorn",
        SinkhornHead,
        "Student-t Q, POT entropic OT target with KMeans proportions, KL(P‖Q) (default)",
    )
    registry.add("cluster", "dec", DECHead, "Student-t Q, DEC sharpened target q²/f, KL(P‖Q)")
    registry.add("cluster", "kmeans", KMeansHead, "no clustering loss; KMeans on the final embedding")
