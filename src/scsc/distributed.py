"""Data-parallel training with PyTorch distributed (``torchrun`` → DistributedDataParallel).

Every process (rank) reads and preprocesses the same data and builds the same minibatch plan (both are
deterministic), so no data is sent between ranks. At epoch e of a graph stage, rank r trains on batch
``e · W + r`` of the plan (W ranks): the W batches of one optimizer step are disjoint subgraphs, and
DistributedDataParallel averages their gradients. Rank 0 initialises the clustering head (KMeans, and the
Leiden estimate of K) and broadcasts it; it alone writes checkpoints and results. Every rank computes the
final embedding and labels with the same weights, and the run checks that the labels agree.

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

    def batch_index(self, epoch: int) -> int:
        """Index in a batch stream of the batch this rank trains on at ``epoch``."""
        return epoch * self.world + self.rank

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

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


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
