"""Minibatches of cells for large data: subgraphs of the kNN graph that keep most of its edges.

Cells are first cut into coarse *parts* of about ``batch_size / parts_per_batch`` cells by k-means on the PCA
input (kNN neighbours are close in that space, so most edges stay inside a part; a part too large for a batch
is split along its widest PCA direction). A *round* then groups all parts into batches of at most
``batch_size`` cells: a random part starts a batch and the unassigned parts with the most kNN edges into the
batch join it until it is full. Rounds are reshuffled, so edges between parts are inside a batch in some
rounds and the batch contents vary between epochs (the stochastic multi-partition scheme of Cluster-GCN).

Every batch is a function of (seed, stage, epoch) only, so a resumed run sees the batches of an
uninterrupted one. In a distributed run the parts are dealt out to the ranks once (:meth:`BatchPlan.for_rank`:
connected groups of parts, one per rank, of about N / W cells) and each rank groups only its own parts into
batches, so a rank needs the counts of its own cells only. Memory: O(N + E + parts²) for the plan; a batch is
at most ``batch_size`` cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..config import MinibatchConfig
from ..errors import ConfigError

#: Stage names that draw batches, each from its own random stream.
STREAMS = ("pretrain_ae", "pretrain_gae", "pretrain_joint", "cluster_warmup", "cluster", "embed")


def resolve_batch_size(config: MinibatchConfig, n_cells: int) -> int:
    """The batch size a run uses: 0 (full batch) or a number of cells below ``n_cells``.

    ``config.batch_size`` None means automatic: full batch up to ``config.auto_above`` cells, batches of
    ``config.auto_batch_size`` above. A batch size of at least ``n_cells`` is full batch.
    """
    size = config.batch_size
    if size is None:
        size = config.auto_batch_size if n_cells > config.auto_above else 0
    return 0 if size <= 0 or size >= n_cells else int(size)


def distributed_batch_size(config: MinibatchConfig, n_cells: int, world: int) -> int:
    """The batch size of a data-parallel run of ``world`` ranks whose config asks for no batches.

    ``auto_batch_size``, but small enough that a round of batches gives every rank at least one:
    min(auto_batch_size, ⌈n_cells / world⌉).
    """
    return int(max(1, min(config.auto_batch_size, -(-n_cells // max(1, world)))))


@dataclass
class BatchPlan:
    """Coarse parts of the cells and the rules that group them into batches.

    Attributes:
        parts: cell indices of each part (sorted int64 arrays, disjoint, covering all N cells).
        affinity: kNN edge counts between parts (n_parts × n_parts, CSR, zero diagonal).
        batch_size: the most cells in a batch.
        seed: run seed; with the stage and epoch it fixes every batch.
        owned: in a distributed run, the parts this rank trains on (indices into ``parts``); None: all.
    """

    parts: list[np.ndarray]
    affinity: sp.csr_matrix
    batch_size: int
    seed: int
    owned: np.ndarray | None = None
    _rounds: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict, repr=False)
    _offsets: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @property
    def n_cells(self) -> int:
        return int(sum(len(p) for p in self.parts))

    def round(self, stream: str, index: int) -> list[np.ndarray]:
        """The batches (sorted cell indices) of round ``index`` of ``stream``; together they hold every cell once."""
        key = (stream, index)
        if key not in self._rounds:
            rng = np.random.default_rng([self.seed, STREAMS.index(stream), index])
            if self.owned is None or stream == "embed":
                self._rounds[key] = _group(self.parts, self.affinity, self.batch_size, rng)
            else:
                mine = self.owned
                self._rounds[key] = _group(
                    [self.parts[i] for i in mine], self.affinity[mine][:, mine], self.batch_size, rng
                )
            if len(self._rounds) > 64:  # a long run only ever needs the current round again
                self._rounds.pop(next(iter(self._rounds)))
        return self._rounds[key]

    def batch(self, stream: str, epoch: int) -> np.ndarray:
        """Cells (sorted indices) of the batch that epoch ``epoch`` of ``stream`` trains on.

        Epochs walk through the batches of round 0, then round 1, and so on.
        """
        offsets = self._offsets.setdefault(stream, [0])
        r = 0
        while True:
            if r + 1 >= len(offsets):
                offsets.append(offsets[-1] + len(self.round(stream, r)))
            if epoch < offsets[r + 1]:
                return self.round(stream, r)[epoch - offsets[r]]
            r += 1

    @property
    def cells(self) -> np.ndarray:
        """The cells (sorted indices among N) of the parts this rank trains on: all N in one process."""
        if self.owned is None:
            return np.arange(self.n_cells)
        return np.sort(np.concatenate([self.parts[i] for i in self.owned]))

    def for_rank(self, rank: int, world: int) -> BatchPlan:
        """This plan as rank ``rank`` of ``world`` sees it: its own parts, grouped into its own batches.

        The parts are dealt out as :func:`_group` forms batches: from a random free part, the free parts most
        connected to the group join it until it holds N / ``world`` cells; the last rank takes the rest. So a
        rank's cells form few connected regions and the kNN edges between ranks are few. Every rank computes
        the same deal (seeded).
        """
        if world <= 1:
            return self
        if len(self.parts) < world:
            raise ConfigError(
                f"{len(self.parts)} parts of the cells cannot give each of {world} ranks its own; "
                "pass a smaller --batch-size"
            )
        sizes = np.array([len(p) for p in self.parts])
        rng = np.random.default_rng([self.seed, len(STREAMS)])
        free = np.ones(len(self.parts), dtype=bool)
        owner = np.full(len(self.parts), world - 1)
        target = self.n_cells / world
        for r in range(world - 1):
            start = int(rng.choice(np.flatnonzero(free)))
            members, size = [start], sizes[start]
            free[start] = False
            pull = self.affinity[start].toarray().ravel()
            # Leave every later rank at least one part.
            while size < target and free.sum() > world - 1 - r:
                score = np.where(free, pull, -1.0)
                best = int(np.argmax(score))
                if score[best] <= 0:
                    best = int(rng.choice(np.flatnonzero(free)))
                free[best] = False
                members.append(best)
                size += sizes[best]
                pull += self.affinity[best].toarray().ravel()
            owner[members] = r
        return BatchPlan(
            parts=self.parts,
            affinity=self.affinity,
            batch_size=self.batch_size,
            seed=self.seed,
            owned=np.flatnonzero(owner == rank),
        )

    def eval_batches(self) -> list[np.ndarray]:
        """A fixed grouping of all cells, used for every embedding of the whole data set."""
        return self.round("embed", 0)

    def edge_coverage(self, knn: sp.csr_matrix, batches: list[np.ndarray]) -> float:
        """Fraction of the edges of ``knn`` (N × N) whose two ends share a batch of ``batches``."""
        owner = np.empty(knn.shape[0], dtype=np.int64)
        for i, rows in enumerate(batches):
            owner[rows] = i
        coo = knn.tocoo()
        return float(np.mean(owner[coo.row] == owner[coo.col])) if coo.nnz else 1.0


def plan_batches(
    x: np.ndarray, knn: sp.csr_matrix, config: MinibatchConfig, batch_size: int, seed: int = 0
) -> BatchPlan:
    """Cut the cells into parts by k-means on ``x`` (N × P) and count the ``knn`` (N × N) edges between parts."""
    from sklearn.cluster import MiniBatchKMeans

    n = x.shape[0]
    part_size = max(1, batch_size // max(1, config.parts_per_batch))
    n_parts = max(1, math.ceil(n / part_size))
    km = MiniBatchKMeans(
        n_clusters=n_parts, random_state=seed, n_init=1, batch_size=4096, max_iter=20, max_no_improvement=5
    )
    labels = km.fit_predict(x.astype(np.float32))
    parts = []
    for p in np.unique(labels):
        parts += _split(np.flatnonzero(labels == p), x, max(1, batch_size // 2))
    member = np.empty(n, dtype=np.int64)
    for i, rows in enumerate(parts):
        member[rows] = i
    ind = sp.csr_matrix((np.ones(n, dtype=np.float32), (np.arange(n), member)), shape=(n, len(parts)))
    affinity = (ind.T @ sp.csr_matrix(knn, dtype=np.float32) @ ind).tocsr()
    affinity.setdiag(0)
    affinity.eliminate_zeros()
    return BatchPlan(parts=parts, affinity=affinity, batch_size=batch_size, seed=seed)


def _split(rows: np.ndarray, x: np.ndarray, limit: int) -> list[np.ndarray]:
    """Halve ``rows`` along the widest direction of their ``x`` until no piece exceeds ``limit`` cells."""
    if len(rows) <= limit:
        return [np.sort(rows)]
    pts = x[rows] - x[rows].mean(axis=0)
    # The leading right-singular vector of the part: halving along it keeps neighbours together.
    direction = np.linalg.svd(pts[: min(len(pts), 2000)], full_matrices=False)[2][0]
    order = np.argsort(pts @ direction, kind="stable")
    half = len(rows) // 2
    return _split(rows[order[:half]], x, limit) + _split(rows[order[half:]], x, limit)


def _group(
    parts: list[np.ndarray], affinity: sp.csr_matrix, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One round: every part in exactly one batch of at most ``batch_size`` cells (a part alone may be more)."""
    sizes = np.array([len(p) for p in parts])
    free = np.ones(len(parts), dtype=bool)
    batches = []
    for start in rng.permutation(len(parts)):
        if not free[start]:
            continue
        free[start] = False
        members, size = [start], sizes[start]
        pull = affinity[start].toarray().ravel()
        while True:
            fits = free & (size + sizes <= batch_size)
            if not fits.any():
                break
            score = np.where(fits, pull, -1.0)
            best = int(np.argmax(score))
            if score[best] <= 0:  # nothing connected fits: a random free part that fits fills the batch
                best = int(rng.choice(np.flatnonzero(fits)))
            free[best] = False
            members.append(best)
            size += sizes[best]
            pull += affinity[best].toarray().ravel()
        batches.append(np.sort(np.concatenate([parts[m] for m in members])))
    return batches
