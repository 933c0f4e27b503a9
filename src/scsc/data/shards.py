"""The cells of a distributed run split over its ranks: each rank keeps the counts of the cells it trains on.

A rank reads and preprocesses a contiguous shard of the file's cells (:meth:`Context.shard`,
:func:`scsc.data.preprocess.preprocess`); the minibatch plan then deals the cells out again by graph region
(:meth:`BatchPlan.for_rank`), so the counts move once between ranks (:func:`hold_cells`). The PCA input X,
the kNN graph and the size factors are small (N × P, N × k) and every rank holds them whole.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ..distributed import Context
from .bundle import TrainData


def hold_cells(data: TrainData, cells: np.ndarray, context: Context) -> TrainData:
    """``data`` with the HVG counts of ``cells`` (sorted indices among N) instead of this rank's shard.

    Each rank in turn sends its shard of the counts to all; every rank keeps the rows it needs, so a rank holds
    at most its shard, one other shard and its own cells' rows at once. A no-op in one process.
    """
    if not context.active or data.counts_csr is None or data.counts_rows is None:
        return data
    have = data.counts_rows
    bounds = context.all_concat(np.array([[have[0] if len(have) else 0, len(have)]], dtype=np.int64))
    pieces = []
    for src, (first, n) in enumerate(bounds):
        m = data.counts_csr
        mine = [m.data, m.indices, m.indptr] if context.rank == src else None
        values, indices, indptr = context.broadcast_arrays(mine, src)
        shard = sp.csr_matrix((values, indices, indptr), shape=(int(n), m.shape[1]))
        take = cells[(cells >= first) & (cells < first + n)] - first
        pieces.append(shard[take])
        del shard, values, indices, indptr
    counts = sp.csr_matrix(sp.vstack(pieces, format="csr"))
    return replace(data, counts_csr=counts, counts_rows=np.asarray(cells, dtype=np.int64))
