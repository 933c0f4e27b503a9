"""Run by tests/test_shards.py under torchrun: one rank reads its shard of a file, preprocesses it with the
statistics added up over the ranks, deals out the batch plan and fetches its cells' counts; it saves what it
holds to OUT/rank{R}.npz for the test to compare with one process. It also embeds all cells twice, whole and
a shard of rows per rank (small gather blocks, so that columns go in several rounds)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from scsc.config import RunConfig
from scsc.data.graph import ppr_diffusion
from scsc.data.io import read
from scsc.data.prepare import plan, prepare
from scsc.data.shards import hold_cells
from scsc.distributed import RowShard, from_environment, shutdown
from scsc.session import build_model, fingerprint
from scsc.train import embed_cells, pretrained_embedding, seed_everything


def main(path: str, out: str, batch_size: int) -> None:
    ctx = from_environment("cpu")
    cfg = RunConfig().override([f"minibatch.batch_size={batch_size}"])
    adata = read(path, shard=ctx.shard)
    prepared, data = prepare(adata, cfg, context=ctx)
    batches = plan(data, cfg).for_rank(ctx.rank, ctx.world)
    data = hold_cells(data, batches.cells, ctx)
    rows = batches.batch("cluster", 0)
    embeddings = _embeddings(cfg, prepared, data, batches, ctx)
    whole, shared = (ppr_diffusion(data.knn, block_rows=100, context=c) for c in (None, ctx))
    embeddings.update(ppr_whole=whole.toarray(), ppr_shared=shared.toarray())
    np.savez(
        f"{out}/rank{ctx.rank}.npz",
        x=prepared.x,
        size_factors=prepared.size_factors,
        cell_mask=prepared.cell_mask,
        hvg=np.array(prepared.hvg),
        shard_rows=prepared.rows,
        n_shard=adata.n_obs,
        held=data.counts_rows,
        counts=data.counts_csr.toarray(),
        batch=rows,
        batch_counts=data.subset(rows).counts.numpy(),
        owned=batches.cells,
        **embeddings,
    )
    shutdown(ctx)


def _embeddings(cfg, prepared, data, batches, ctx) -> dict[str, np.ndarray]:
    """The pretrained embedding and Z of a seeded model (with attention and per-cell fusion weights at work),
    computed whole on this rank and sharded over the ranks."""
    RowShard.GATHER_BYTES = 16 * 1024
    cfg = cfg.override(["model.fusion_weights=cell"])
    generator = seed_everything(0)
    model = build_model(cfg, fingerprint(prepared), None)
    with torch.no_grad():
        model.fusion.beta.fill_(0.5)
        model.fusion.a.uniform_(generator=generator)
    z_whole = pretrained_embedding(model, data, batches)
    z_shard = pretrained_embedding(model, data, batches, ctx)
    model.augment.prepare(data, z_whole.numpy())
    return {
        "z_pre_whole": z_whole.numpy(),
        "z_pre_shard": z_shard.numpy(),
        "z_whole": embed_cells(model, data, batches).numpy(),
        "z_shard": embed_cells(model, data, batches, ctx).numpy(),
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
