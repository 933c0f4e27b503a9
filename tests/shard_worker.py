"""Run by tests/test_shards.py under torchrun: one rank reads its shard of a file, preprocesses it with the
statistics added up over the ranks, deals out the batch plan and fetches its cells' counts; it saves what it
holds to OUT/rank{R}.npz for the test to compare with one process."""

from __future__ import annotations

import sys

import numpy as np

from scsc.config import RunConfig
from scsc.data.io import read
from scsc.data.prepare import plan, prepare
from scsc.data.shards import hold_cells
from scsc.distributed import from_environment, shutdown


def main(path: str, out: str, batch_size: int) -> None:
    ctx = from_environment("cpu")
    cfg = RunConfig().override([f"minibatch.batch_size={batch_size}"])
    adata = read(path, shard=ctx.shard)
    prepared, data = prepare(adata, cfg, context=ctx)
    batches = plan(data, cfg).for_rank(ctx.rank, ctx.world)
    data = hold_cells(data, batches.cells, ctx)
    rows = batches.batch("cluster", 0)
    np.savez(f"{out}/rank{ctx.rank}.npz", x=prepared.x, size_factors=prepared.size_factors,
             cell_mask=prepared.cell_mask, hvg=np.array(prepared.hvg), shard_rows=prepared.rows,
             n_shard=adata.n_obs, held=data.counts_rows, counts=data.counts_csr.toarray(), batch=rows,
             batch_counts=data.subset(rows).counts.numpy(), owned=batches.cells)
    shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
