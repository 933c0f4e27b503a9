"""Data-parallel training with PyTorch distributed (``torchrun`` → DistributedDataParallel).

Every process (rank) reads a contiguous shard of the cells (:meth:`Context.shard`); preprocessing adds its
statistics up over the ranks (:meth:`Context.all_sum`), so every rank gets the same PCA input of all cells and
builds the same kNN graph and minibatch plan. The plan deals its parts out to the ranks by graph region and the
counts move once (:mod:`scsc.data.shards`): each rank trains on batches of its own cells, and
DistributedDataParallel averages the W batches' gradients of a step. Rank 0 initialises the clustering head
(KMeans, and the estimate of K) and broadcasts it; it alone writes checkpoints and results. Every rank computes
the final embedding and labels with the same weights, and the run checks that the labels agree.

The transport target of a batch meets that batch's share of each initial cluster, so the W batches of a step
together meet their joint share — the all-reduce of marginals that SwAV needs for random batches is implied.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.tensors import csr_tensor
from .errors import ConfigError


@dataclass
class Context:
    """Where this process stands in a data-parallel run; the default (rank 0 of 1) is a plain run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress, writes checkpoints and writes results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel (gradients averaged over ranks); itself in a plain run."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        # Stages use parts of the model (the AE stage never touches the graph AE): unused parameters are expected.
        return DistributedDataParallel(module, find_unused_parameters=True)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for small objects such as K or the head's state)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_arrays(self, arrays: list[np.ndarray] | None, src: int) -> list[np.ndarray]:
        """Rank ``src``'s ``arrays`` on every rank (sent as tensors, not pickled: for large arrays)."""
        if not self.active:
            return arrays
        import torch.distributed as dist

        meta = [[(a.shape, a.dtype.str) for a in arrays] if self.rank == src else None]
        dist.broadcast_object_list(meta, src=src)
        out = []
        for i, (shape, dtype) in enumerate(meta[0]):
            a = (
                np.ascontiguousarray(arrays[i])
                if self.rank == src
                else np.empty(shape, dtype=np.dtype(dtype))
            )
            dist.broadcast(torch.from_numpy(a), src=src)
            out.append(a)
        return out

    def check_same(self, labels: np.ndarray) -> None:
        """Raise unless every rank holds the same ``labels`` (N,)."""
        if not self.active:
            return
        import torch.distributed as dist

        digest = hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()
        digests: list[str | None] = [None] * self.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError("ranks disagree on the final labels; the run is not data-parallel consistent")

    def shard(self, n: int) -> tuple[int, int]:
        """Rows ``lo:hi`` of ``n`` that this rank reads and preprocesses: contiguous, in rank order, sizes
        differing by at most one."""
        return self.shards(n)[self.rank]

    def shards(self, n: int) -> list[tuple[int, int]]:
        """Every rank's :meth:`shard` of ``n`` rows, in rank order."""
        return [(n * r // self.world, n * (r + 1) // self.world) for r in range(self.world)]

    def all_sum(self, a: np.ndarray) -> np.ndarray:
        """The elementwise sum of every rank's ``a`` (same shape and dtype on every rank); ``a`` itself in a
        plain run."""
        if not self.active:
            return a
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(a)).clone()
        dist.all_reduce(t)
        return t.numpy()

    def all_concat(self, a: np.ndarray) -> np.ndarray:
        """Every rank's ``a`` (n_r × …, n_r may differ) stacked in rank order along axis 0; ``a`` in a plain
        run."""
        if not self.active:
            return a
        import torch.distributed as dist

        if a.dtype == bool:  # gloo gathers no booleans
            return self.all_concat(a.view(np.uint8)).view(bool)
        sizes = self.all_sum(np.eye(self.world, dtype=np.int64)[self.rank] * len(a))
        t = torch.from_numpy(np.ascontiguousarray(a))
        pad = torch.zeros((int(sizes.max()), *t.shape[1:]), dtype=t.dtype)
        pad[: len(t)] = t
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad)
        return np.concatenate([p[: int(n)].numpy() for p, n in zip(parts, sizes, strict=True)])

    def raise_if_any(self, error: Exception | None) -> None:
        """Raise on every rank when any rank has an ``error`` (the lowest rank's), so that no rank waits in a
        collective for one that stopped; in a plain run, raise ``error`` if there is one."""
        if not self.active:
            if error is not None:
                raise error
            return
        import torch.distributed as dist

        errors: list[Exception | None] = [None] * self.world
        dist.all_gather_object(errors, error)
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


class RowShard:
    """This rank's rows of a whole-data computation over N cells, and the collectives that make whole tensors
    of row pieces: a distributed run's embedding of all cells computes each row-wise step on rows ``lo:hi``
    only and gathers what the next step reads across rows (a graph layer's input to Â).

    Rows are cut in blocks of ``m = ⌈N/W⌉`` (the last rank may hold fewer), so the gathered blocks laid end to
    end are the whole tensor with no reordering.
    """

    #: The most bytes one gather moves at a time (gloo stages every gather in a buffer of the whole result).
    GATHER_BYTES = 64 * 1024**2

    def __init__(self, n: int, context: Context):
        self.n, self.context = n, context
        self.block = -(-n // context.world)
        self.lo = min(n, context.rank * self.block)
        self.hi = min(n, self.lo + self.block)

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """Rows ``lo:hi`` of a whole tensor (N × …), a view."""
        return t[self.lo : self.hi]

    def rows_of(self, adj: torch.Tensor) -> torch.Tensor:
        """Rows ``lo:hi`` of a sparse CSR matrix (N × N) → (hi − lo) × N CSR, sharing column indices and
        values."""
        if adj.layout != torch.sparse_csr:
            adj = adj.to_sparse_csr()
        crow = adj.crow_indices()
        first, last = int(crow[self.lo]), int(crow[self.hi])
        return csr_tensor(
            crow[self.lo : self.hi + 1] - first,
            adj.col_indices()[first:last],
            adj.values()[first:last],
            (self.hi - self.lo, adj.shape[1]),
            adj.device,
        )

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """Every rank's rows (``hi − lo`` × c, 2-D) → the whole N × c tensor on every rank.

        Gathered a block of columns at a time, so the collective's staging buffer stays under
        :attr:`GATHER_BYTES` instead of adding a second copy of the whole tensor.
        """
        import torch.distributed as dist

        m, world = self.block, self.context.world
        out = part.new_empty((self.n, part.shape[1]))
        step = max(1, self.GATHER_BYTES // max(1, m * world * part.element_size()))
        for c in range(0, part.shape[1], step):
            mine = part.new_zeros((m, min(step, part.shape[1] - c)))
            mine[: len(part)] = part[:, c : c + step]
            blocks = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(blocks, mine)
            for r, block in enumerate(blocks):
                lo = r * m
                hi = min(self.n, lo + m)
                if hi > lo:
                    out[lo:hi, c : c + step] = block[: hi - lo]
            del blocks
        return out

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of every rank's ``t`` (same shape on every rank), in place."""
        import torch.distributed as dist

        dist.all_reduce(t)
        return t


def from_environment(device: str) -> Context:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR, …).

    Without those variables (a plain launch) the run is a single process. Backend ``nccl`` on CUDA, ``gloo``
    on CPU; on CUDA each process uses the GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda under torchrun, but CUDA is not available")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Context(rank=dist.get_rank(), world=dist.get_world_size())


def shutdown(context: Context) -> None:
    """Leave the process group (a no-op in a plain run)."""
    if context.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
