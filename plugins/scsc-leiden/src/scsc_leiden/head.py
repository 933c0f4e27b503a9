"""The ``leiden`` clustering head.

It implements scsc's head contract (``scsc.components.base.ClusterHead``) by subclassing the built-in Sinkhorn
head and replacing only ``init``: the clusters come from Leiden communities of the embedding's kNN graph rather
than KMeans, handed to the head's public ``start_from``; the OT column marginal is their (unequal) sizes, and
minibatch training gets each batch's share of them.
Memory stays linear in the number of cells (a k-nearest-neighbour graph, no N × N matrix).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from scsc.components.cluster import SinkhornHead

N_NEIGHBORS = 15
MAX_SEARCH = 24


def knn_graph(z: np.ndarray, n_neighbors: int = N_NEIGHBORS):
    """Undirected igraph Graph of the exact kNN of ``z`` (N × d), edge weights 1 (connectivities)."""
    import igraph as ig
    from sklearn.neighbors import NearestNeighbors

    n = z.shape[0]
    k = max(1, min(n_neighbors, n - 1))
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    rows = np.repeat(np.arange(n), k)
    cols = idx[:, 1:].reshape(-1)
    pairs = np.unique(np.sort(np.stack([rows, cols], axis=1), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return ig.Graph(n=n, edges=pairs.tolist(), directed=False)


def leiden_labels(graph, resolution: float, seed: int) -> np.ndarray:
    """Leiden communities (RB configuration, i.e. modularity with a resolution), relabelled by size."""
    import leidenalg

    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                    resolution_parameter=float(resolution), seed=int(seed), n_iterations=2)
    labels = np.asarray(part.membership, dtype=np.int64)
    order = np.argsort(-np.bincount(labels), kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return remap[labels]


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
    """Leiden labels of ``z``; with ``k``, the resolution is searched (bisection) to give ``k`` communities."""
    graph = knn_graph(z)
    labels = leiden_labels(graph, resolution, seed)
    if k is None or labels.max() + 1 == k:
        return labels
    lo, hi = (0.0, resolution) if labels.max() + 1 > k else (resolution, None)
    best = labels
    res = resolution
    for _ in range(MAX_SEARCH):
        res = (lo + hi) / 2 if hi is not None else res * 2
        cand = leiden_labels(graph, res, seed)
        n = cand.max() + 1
        if abs(n - k) < abs(best.max() + 1 - k) or (abs(n - k) == abs(best.max() + 1 - k) and n > k):
            best = cand
        if n == k:
            return cand
        if n > k:
            hi = res
        else:
            lo = res
    return _merge_to(z, best, k) if best.max() + 1 > k else best


class LeidenHead(SinkhornHead):
    """Sinkhorn head whose clusters, centroids and OT proportions come from Leiden communities."""

    def init(self, z: Tensor, n_clusters: int) -> np.ndarray:
        """Leiden on the embedding ``z`` (N × d) with (up to) ``n_clusters`` communities; returns labels (N,)."""
        x = z.detach().cpu().numpy().astype(np.float64)
        labels = partition(x, n_clusters, self.cfg.leiden_resolution, self.seed)
        k = int(labels.max()) + 1
        centers = np.stack([x[labels == c].mean(0) for c in range(k)]).astype(np.float32)
        return self.start_from(z, labels, centers)
