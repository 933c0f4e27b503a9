"""What every training stage shares: the run state, progress reporting and the one epoch loop."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..checkpoint import Checkpointer, StageCheckpoint, disabled
from ..config import RunConfig
from ..data.batches import BatchPlan
from ..data.bundle import TrainData
from ..distributed import Context
from ..model import ScSiameseClu


class Reporter(Protocol):
    """Receives progress; the CLI shows it as rich progress bars."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, terms: dict[str, float]) -> None: ...

    def stop(self, stage: str) -> None: ...


class SilentReporter:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, terms: dict[str, float]) -> None:
        pass

    def stop(self, stage: str) -> None:
        pass


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a CPU generator for augmentation noise and sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainState:
    """The state the training stages of one run share.

    ``data`` holds all N cells; ``batches`` is the minibatch plan (None: full batch); ``generator`` draws the
    augmentation noise and every sample; ``history`` gets one row per epoch of every stage; ``checkpoint``
    saves and restores the whole state; ``context`` is this process's rank in a data-parallel run.
    """

    model: ScSiameseClu
    data: TrainData
    config: RunConfig
    generator: torch.Generator
    reporter: Reporter = field(default_factory=SilentReporter)
    history: list[dict] = field(default_factory=list)
    checkpoint: Checkpointer = field(default_factory=disabled)
    batches: BatchPlan | None = None
    context: Context = field(default_factory=Context)

    def batch(self, stream: str, epoch: int) -> tuple[TrainData, np.ndarray | None]:
        """The data epoch ``epoch`` of ``stream`` trains on: all cells, or this rank's batch with its
        subgraph, and the batch's rows (B,) (None for all cells)."""
        if self.batches is None:
            return self.data, None
        rows = self.batches.batch(stream, epoch)
        return self.data.subset(rows), rows


class LossStep(nn.Module):
    """One stage's loss as a module, so that DistributedDataParallel can wrap it: forward → (loss, terms)."""

    def __init__(self, net: nn.Module, loss_fn: Callable):
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(self.net, *args)


def optimizer_step(step: nn.Module, opt: torch.optim.Optimizer, *args) -> tuple[torch.Tensor, dict]:
    """``step(*args)`` → (loss, terms), then one gradient step of ``opt`` on the loss."""
    loss, terms = step(*args)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss, terms


#: One epoch of a stage: epoch number → (named terms as floats, total loss).
EpochFn = Callable[[int], tuple[dict[str, float], float]]


def run_epochs(
    state: TrainState,
    stage: StageCheckpoint,
    label: str,
    epochs: range,
    opt: torch.optim.Optimizer,
    epoch_fn: EpochFn,
    log_as: str | None = None,
) -> list[dict]:
    """The loop of every stage: run ``epoch_fn`` for each epoch, log a history row (stage ``log_as``, default
    the checkpoint stage's name), report progress under ``label`` and checkpoint after the epochs that
    ``stage`` saves after (the last included). Returns ``state.history``."""
    state.reporter.start(label, len(epochs))
    for epoch in epochs:
        terms, total = epoch_fn(epoch)
        state.history.append({"stage": log_as or stage.name, "epoch": epoch, **terms, "total": total})
        state.reporter.advance(label, terms)
        stage.epoch_done(epoch, epochs.stop - 1, opt)
    state.reporter.stop(label)
    return state.history


def rows_tensor(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Cell indices (B,) as an int64 tensor on ``device``."""
    return torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(device)
