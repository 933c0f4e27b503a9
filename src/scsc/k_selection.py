"""Choosing the number of clusters K without labels: over-cluster, then merge what the cell graph joins.

1. Leiden (resolution ``cluster.leiden_resolution``) on the 15-NN graph of the pretrained embedding Z gives
   a fine partition; Leiden at its default resolution splits large types into several communities.
2. The two most connected clusters are merged, again and again, down to one cluster. The connectivity of two
   clusters is the PAGA measure (Wolf et al., Genome Biology 2019): the weight of the graph edges between them
   over the weight expected if edges were placed at random given the clusters' sizes and degrees. Two halves
   of one type share many edges (about 0.3–0.5); two distinct types share almost none.
   With ``cluster.k_min_size`` > 0 (off by default), a cluster of fewer than that fraction of the cells is
   merged first, into the cluster it is most connected to, and does not count as a cluster of its own.
3. Score of K: the connectivity of the most connected pair of clusters when there are K of them, i.e. of the
   merge that would go from K to K − 1 (lower: every pair of the K clusters is better separated). The chosen K
   is the largest K whose score is at most ``cluster.k_threshold``: every split it keeps is supported by a gap
   in the graph.
4. The clustering head starts from a partition at the chosen K found the same way on what it clusters
   ([Z ‖ input] as the head gives it, the input at most at Z's size; :func:`partition_at`): KMeans's own
   starts at that K may halve a large type and lump small ones that the graph keeps apart.
5. The estimate is *clear* when the next split (K + 1) is at least ``CLEAR_RATIO`` times more connected than
   the weakest split kept; otherwise it is reported as not clear-cut, with the neighbouring K values to compare
   (splits that grow gradually more connected, as along a continuum, do not single out one K).

Above 2,000 cells the score is the mean over five random subsamples of 2,000 cells: on a graph of fixed degree
a split's connectivity falls as cells are added, so without this the estimate grows with the number of cells.
The subsample size was chosen on the tuning collection and the threshold 0.1 on its five datasets
(docs/decisions.md, "The merge rule" and "The threshold on five datasets"). Linear in the number of cells: a
kNN graph, Leiden, and per merge one K × K matrix of edge weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .leiden import EXACT_MAX_CELLS, knn_connectivities, leiden

#: Above this many cells K is estimated on random subsamples of this many (the size of the tuning datasets
#: the threshold was chosen on): on a fixed 15-NN graph the connectivity of a split falls as cells are added,
#: so the estimate grew with the number of cells (Zheng's PBMC: 6, 9, 13 and 14 clusters on 300, 600, 1,200
#: and 2,140 of its cells).
SAMPLE_CELLS = 2000
#: Subsamples whose scores are averaged.
SAMPLE_REPEATS = 5


@dataclass(frozen=True)
class Subsampling:
    """How :func:`select_k` scores large data: above ``max_cells`` cells, on ``repeats`` seeded random
    subsamples of ``max_cells`` cells, their scores averaged (defaults: ``SAMPLE_CELLS``, ``SAMPLE_REPEATS``)."""

    max_cells: int = SAMPLE_CELLS
    repeats: int = SAMPLE_REPEATS


#: The subsampling of a run (the sizes the threshold was chosen at).
SUBSAMPLING = Subsampling()
#: The estimate is called clear when the next split (K + 1 clusters) is at least this many times more connected
#: than the weakest split kept (the score of K), scores below ``SCORE_FLOOR`` counting as ``SCORE_FLOOR``. On
#: simulated types every run had a ratio of 10 or more; on the tuning collection's annotated continua and
#: T-cell subsets at most 3.4, and at most 3.9 on 120–220-cell samples of them (docs/method.md, "Estimating K").
CLEAR_RATIO = 5.0
SCORE_FLOOR = 0.01


@dataclass
class KSelection:
    """The chosen K and the evidence for it.

    Attributes:
        k: the chosen number of clusters.
        scores: K → connectivity of the most connected pair of clusters at K (lower is better separated), for
            every K on the merge path from the Leiden partition down to 2.
        threshold: the largest score a chosen K may have.
        runner_up: other K values with the lowest scores (best first).
        resolution: the Leiden resolution of the starting partition.
        reason: one line that says why ``k`` was chosen.
    """

    k: int
    scores: dict[int, float]
    threshold: float
    runner_up: list[int] = field(default_factory=list)
    resolution: float = 1.0
    reason: str = ""
    #: Where the clustering head started at K: "partition" (:func:`partition_at`), "kmeans", or "" (not yet).
    head_start: str = ""
    #: The candidate K values the choice was restricted to (``--n-clusters 6,8,10``); empty: any K. A tuple,
    #: so that a selection saved in a checkpoint before this field existed reads back with it empty.
    candidates: tuple[int, ...] = ()

    @property
    def gap(self) -> float | None:
        """score(K + 1) / max(score(K), ``SCORE_FLOOR``): how many times more connected the next split is than
        the weakest split kept; None when K has no score or K + 1 is not on the merge path (Leiden found no
        finer partition; above ``SAMPLE_CELLS`` cells: not on every subsample)."""
        s, nxt = self.scores.get(self.k), self.scores.get(self.k + 1)
        if s is None or nxt is None:
            return None
        return float(nxt / max(s, SCORE_FLOOR))

    @property
    def clear(self) -> bool:
        """Whether the graph singles out K: every kept split is below the threshold and the next split is at
        least ``CLEAR_RATIO`` times more connected (or there is no finer community). False where splits grow
        gradually more connected, as along a continuum: neighbouring K values are then about as well supported."""
        s = self.scores.get(self.k)
        if s is None or s > self.threshold:
            return False
        gap = self.gap
        return gap is None or gap >= CLEAR_RATIO

    def verdict(self) -> str:
        """One line for users: whether K is clear-cut, and what to compare when it is not."""
        gap = self.gap
        if self.clear:
            if gap is None:
                return (
                    f"clear: every split up to K = {self.k} is separated, and Leiden found no finer community "
                    f"to test"
                )
            return (
                f"clear: the next split (K = {self.k + 1}) is {gap:.0f}× more connected than the weakest "
                f"one kept"
            )
        if self.candidates:  # every candidate was clustered already: compare those rather than run again
            others = [k for k in self.candidates if k != self.k]
            compare = (
                f"compare obs['scsc_cluster_k<K>'] for K = {', '.join(map(str, others))}"
                if others
                else "compare it with other values of --n-clusters"
            )
        else:
            low, high = max(2, self.k - 2), self.k + 2
            compare = f"compare them with --n-clusters {low}:{high}"
        if not self.scores:
            why = "Leiden found a single community, so no split could be tested"
        elif self.k not in self.scores:
            why = f"K = {self.k} is not on the merge path, so nothing was measured at it"
        elif self.scores[self.k] > self.threshold:
            why = (
                f"K = {self.k} is not separated below the threshold (connectivity {self.scores[self.k]:.3f} > "
                f"{self.threshold:g})"
            )
        elif gap is not None and gap < 1:
            why = (
                f"a finer split (K = {self.k + 1}) is separated at least as well ({self.scores[self.k + 1]:.3f} "
                f"against {self.scores[self.k]:.3f})"
            )
        else:
            why = f"the next split (K = {self.k + 1}) is only {gap:.1f}× more connected than the weakest one kept"
        return f"not clear-cut: {why}, so neighbouring K values are about as well supported; {compare}"

    def to_uns(self) -> dict[str, Any]:
        """A dict of plain values and arrays for ``uns["scsc"]["k_selection"]`` (writable to h5ad)."""
        ks = np.array(sorted(self.scores), dtype=np.int64)
        gap = self.gap
        return {
            "k": int(self.k),
            "method": "leiden_merge",
            "score": "max_pair_connectivity",
            "threshold": float(self.threshold),
            "resolution": float(self.resolution),
            "k_values": ks,
            "scores": np.array([self.scores[k] for k in ks], dtype=np.float64),
            "runner_up": np.array(self.runner_up, dtype=np.int64),
            "reason": self.reason,
            "clear": bool(self.clear),
            "gap": float("nan") if gap is None else gap,
            "clear_ratio": CLEAR_RATIO,
            "head_start": self.head_start,
            "candidates": np.array(self.candidates, dtype=np.int64),
        }


def cluster_connectivity(graph: sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """PAGA connectivity between the clusters of ``labels`` (N,) on ``graph`` (N × N) → K × K, zero diagonal.

    c_ij = w_ij / ((d_i n_j + d_j n_i) / (N − 1)), w_ij the edge weight between clusters i and j, d_i the total
    edge weight at the cells of i, n_i its size.
    """
    n = labels.shape[0]
    k = int(labels.max()) + 1
    h = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, k))
    w = np.asarray((h.T @ graph @ h).todense(), dtype=np.float64)
    deg = w.sum(axis=1)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    expected = (deg[:, None] * sizes[None, :] + deg[None, :] * sizes[:, None]) / max(n - 1, 1)
    c = np.divide(w, expected, out=np.zeros_like(w), where=expected > 0)
    np.fill_diagonal(c, 0.0)
    return c


def merge_path(
    graph: sp.csr_matrix, labels: np.ndarray, min_size: int = 0
) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """Merge the most connected pair of clusters until two are left.

    A cluster of fewer than ``min_size`` cells is first merged into the cluster it is most connected to,
    smallest first, and a K at which such a cluster exists gets no score and no partition: it does not count
    as a cluster of its own.

    Returns K → score (the largest pairwise connectivity at K clusters) and K → labels (N,), for every K from
    the number of clusters in ``labels`` down to 2.
    """
    labels = np.unique(labels, return_inverse=True)[1]
    scores: dict[int, float] = {}
    partitions: dict[int, np.ndarray] = {}
    while True:
        k = int(labels.max()) + 1
        if k < 2:
            break
        c = cluster_connectivity(graph, labels)
        np.fill_diagonal(c, -np.inf)  # a pair of two different clusters, even when none shares an edge
        sizes = np.bincount(labels, minlength=k)
        if k > 2 and sizes.min() < min_size:
            i = int(np.argmin(sizes))
            j = int(np.argmax(c[i]))
        else:
            i, j = np.unravel_index(int(np.argmax(c)), c.shape)
            scores[k] = float(c[i, j])
            partitions[k] = labels.copy()
            if k == 2:
                break
        labels = np.where(labels == max(i, j), min(i, j), labels)
        labels = np.unique(labels, return_inverse=True)[1]
    return scores, partitions


def choose_k(
    scores: dict[int, float], threshold: float, allowed: Sequence[int] | None = None
) -> tuple[int, list[int], str]:
    """The chosen K, runner-ups and the reason, from K → score (see the module docstring).

    ``allowed`` restricts the choice (K values without a score are never chosen unless none has one).
    """
    ks = sorted(k for k in scores if allowed is None or k in set(allowed))
    if not ks:  # every allowed K lies beyond the merge path: the closest one to it
        k = min(allowed, key=lambda a: min(abs(a - s) for s in scores)) if scores else min(allowed)
        return int(k), [], "no allowed K on the merge path; the closest was taken"
    passing = [k for k in ks if scores[k] <= threshold]
    if passing:
        k = max(passing)
        reason = (
            f"largest K whose most connected pair of clusters has connectivity "
            f"{scores[k]:.3f} ≤ {threshold:g}"
        )
    else:
        k = min(ks, key=lambda a: (scores[a], a))
        reason = f"no K has connectivity ≤ {threshold:g}; K with the lowest connectivity ({scores[k]:.3f})"
    runner_up = [a for a in sorted(ks, key=lambda a: (scores[a], -a)) if a != k][:3]
    return int(k), runner_up, reason


def _merge_path_of(
    z: np.ndarray,
    resolution: float,
    seed: int,
    target: int,
    min_fraction: float = 0.0,
    exact_max_cells: int = EXACT_MAX_CELLS,
) -> tuple[dict[int, float], dict[int, np.ndarray], float]:
    """The merge path of the cells ``z`` (n × d): K → score, K → labels (n,), and the Leiden resolution it
    started from. The resolution is doubled (up to 4 times) until the path reaches ``target`` clusters; clusters
    of fewer than ``min_fraction`` × n cells do not count (:func:`merge_path`). The graph's neighbours are exact
    up to ``exact_max_cells`` cells (:func:`~scsc.leiden.knn_connectivities`)."""
    graph = knn_connectivities(z, seed=seed, exact_max_cells=exact_max_cells)
    min_size = int(np.ceil(min_fraction * z.shape[0]))
    res = resolution
    for attempt in range(5):
        labels = leiden(graph, res, seed)
        last = attempt == 4
        # Fewer communities than the target: no merge path can reach it, so none is computed.
        if last or labels.max() + 1 >= target:
            scores, partitions = merge_path(graph, labels, min_size)
            if last or max(partitions, default=1) >= target:
                break
        res *= 2
    return scores, partitions, res


def partition_at(
    x: np.ndarray,
    k: int,
    resolution: float = 1.0,
    seed: int = 0,
    min_fraction: float = 0.0,
    exact_max_cells: int = EXACT_MAX_CELLS,
) -> np.ndarray | None:
    """Labels (N,) in 0 … k − 1 of the rows of ``x`` (N × D): Leiden on their 15-NN graph (the resolution doubled
    up to 4 times until the merge path reaches ``k`` clusters), merged down to ``k`` along the merge path; None
    when it never does. All cells, never a subsample: linear in N (a kNN graph, Leiden, a K × K
    matrix per merge). On the tuning collection, centroids of a 1,000-cell subsample's partition lost what the
    partition gains over KMeans (docs/method.md, "The head starts from the estimate's partition"). Clusters of
    fewer than ``min_fraction`` × N cells are merged first, as in :func:`select_k`; the graph's neighbours are
    exact up to ``exact_max_cells`` cells (``graph.exact_max_cells`` in a run)."""
    return _merge_path_of(x, resolution, seed, k, min_fraction, exact_max_cells)[1].get(k)


def _subsamples(n: int, subsample: Subsampling, seed: int) -> list[np.ndarray | None]:
    """The sorted rows of each seeded random subsample of ``subsample.max_cells`` out of ``n`` cells; [None] (all
    cells) when there are no more than that."""
    if n <= subsample.max_cells:
        return [None]
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, subsample.max_cells, replace=False)) for _ in range(subsample.repeats)]


def select_k(
    z: np.ndarray,
    threshold: float = 0.1,
    resolution: float = 1.0,
    seed: int = 0,
    allowed: Sequence[int] | None = None,
    *,
    subsample: Subsampling = SUBSAMPLING,
    min_fraction: float = 0.0,
    exact_max_cells: int = EXACT_MAX_CELLS,
) -> KSelection:
    """Estimate K from the embedding ``z`` (N × d) without labels (see the module docstring).

    Above ``subsample.max_cells`` cells the merge path is computed on ``subsample.repeats`` seeded random
    subsamples of that many cells (:class:`Subsampling`) and the scores of each K are averaged (a K enters when
    every subsample reaches it): the score falls as cells are added, so the threshold holds at the size it was
    chosen at, whatever the size of the data.
    ``allowed`` (candidate K values) restricts the choice; when its largest value exceeds the Leiden count,
    the resolution is raised so that the merge path reaches it. A cluster of fewer than ``min_fraction`` of
    the (subsampled) cells does not count: it is merged into its most connected neighbour first. The graphs'
    neighbours are exact up to ``exact_max_cells`` cells (``graph.exact_max_cells`` in a run).
    """
    n, max_cells, repeats = z.shape[0], subsample.max_cells, subsample.repeats
    target = max(allowed) if allowed else 0
    runs = [
        _merge_path_of(
            z if rows is None else z[rows], resolution, seed, target, min_fraction, exact_max_cells
        )
        for rows in _subsamples(n, subsample, seed)
    ]
    common = set.intersection(*(set(sc) for sc, _, _ in runs))
    scores = {k: float(np.mean([sc[k] for sc, _, _ in runs])) for k in sorted(common)}
    res = max(r for _, _, r in runs)
    if not scores:  # Leiden found a single community: nothing supports a split
        k = 2 if not allowed else min(allowed)
        return KSelection(
            k=k,
            scores={},
            threshold=threshold,
            resolution=res,
            reason="Leiden found a single community",
            candidates=tuple(sorted(allowed or [])),
        )
    k, runner_up, reason = choose_k(scores, threshold, allowed)
    if n > max_cells:
        reason += f" (mean over {repeats} subsamples of {max_cells:,} cells)"
    return KSelection(
        k=k,
        scores=scores,
        threshold=threshold,
        runner_up=runner_up,
        resolution=res,
        reason=reason,
        candidates=tuple(sorted(allowed or [])),
    )


def parse_k(text: str | int | Sequence[int] | None) -> tuple[int | None, list[int]]:
    """``--n-clusters`` → (fixed K or None, candidate K values).

    ``auto`` or None: (None, []); ``8``: (8, []); ``6,8,10``: (None, [6, 8, 10]); ``5:15``: (None, [5, …, 15]).
    Raises ValueError with a message for anything else, or any K below 2.
    """
    if text is None:
        return None, []
    if isinstance(text, (int, np.integer)):
        ks: list[int] = [int(text)]
        single = True
    elif isinstance(text, str):
        t = text.strip().lower()
        if t in {"", "auto"}:
            return None, []
        try:
            if ":" in t:
                lo, hi = (int(v) for v in t.split(":"))
                if hi < lo:
                    raise ValueError
                ks, single = list(range(lo, hi + 1)), False
            elif "," in t:
                ks, single = sorted({int(v) for v in t.split(",") if v.strip()}), False
            else:
                ks, single = [int(t)], True
        except ValueError:
            raise ValueError(
                f"--n-clusters {text!r}: expected auto, a number (8), a list (6,8,10) or a range (5:15)"
            ) from None
    else:
        ks, single = sorted({int(v) for v in text}), False
    if not ks or min(ks) < 2:
        raise ValueError(f"--n-clusters {text!r}: every number of clusters must be at least 2")
    return (ks[0], []) if single else (None, ks)
