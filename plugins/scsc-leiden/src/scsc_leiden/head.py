"""The ``leiden`` clustering head.

It implements scsc's head contract (``scsc.components.base.ClusterHead``) by subclassing the built-in Sinkhorn
head and replacing only ``init``: the clusters come from Leiden communities of the embedding's kNN graph rather
than KMeans, handed to the head's public ``start_from``; the OT column marginal is their (unequal) sizes, and
minibatch training gets each batch's share of them.
The graph and the communities are scsc's own Leiden helpers (``scsc.leiden``: scanpy's 15-NN connectivities and
igraph Leiden), the same as the estimate of K and the scanpy peers use. Memory stays linear in the number of
cells (a k-nearest-neighbour graph, no N × N matrix).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from scsc.components.cluster import SinkhornHead
from scsc.leiden import knn_connectivities, leiden, leiden_at_k


def _merge_to(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Merge the smallest communities into the community with the nearest mean until ``k`` remain."""
    labels = labels.copy()
    while labels.max() + 1 > k:
        sizes = np.bincount(labels)
        small = int(np.argmin(sizes))
        means = np.stack([z[labels == c].mean(0) for c in range(len(sizes))])
        d = ((means - means[small]) ** 2).sum(1)
        d[small] = np.inf
        labels[labels == small] = int(np.argmin(d))
        _, labels = np.unique(labels, return_inverse=True)
    return labels


def partition(z: np.ndarray, k: int | None, resolution: float, seed: int) -> np.ndarray:
    """Leiden labels (N,) of ``z`` (N × d) at ``resolution``; with ``k``, the resolution is bisected to give ``k``
    communities (``scsc.leiden.leiden_at_k``), and communities beyond ``k`` are merged into their nearest."""
    graph = knn_connectivities(z, seed=seed)
    labels = leiden(graph, resolution, seed)
    if k is None or labels.max() + 1 == k:
        return labels
    labels = leiden_at_k(graph, k, seed)
    return _merge_to(z, labels, k) if labels.max() + 1 > k else labels


class LeidenHead(SinkhornHead):
    """Sinkhorn head whose clusters, centroids and OT proportions come from Leiden communities."""

    def init(self, z: Tensor, n_clusters: int) -> np.ndarray:
        """Leiden on the embedding ``z`` (N × d) with (up to) ``n_clusters`` communities; returns labels (N,)."""
        x = z.detach().cpu().numpy().astype(np.float64)
        labels = partition(x, n_clusters, self.cfg.leiden_resolution, self.seed)
        k = int(labels.max()) + 1
        centers = np.stack([x[labels == c].mean(0) for c in range(k)]).astype(np.float32)
        return self.start_from(z, labels, centers)
