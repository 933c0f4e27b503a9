"""The component contracts: what the model and the trainer may call on an augmenter, encoder, fusion or head.

Each kind is a :class:`typing.Protocol` (structural: a plugin need not import or subclass anything from here)
and optional behaviour is a declared class attribute, never guessed from a signature:

- :class:`Fusion`: ``takes_rows`` (``forward`` accepts the cells of a minibatch, for per-cell parameters) and
  ``takes_groups`` (``forward`` can confine all-pairs steps to groups of cells);
- :class:`ClusterHead`: ``focus(rows)`` is part of the contract; :class:`HeadBase` gives a no-op one;
- :class:`Encoder`: a black box to the trainer. It maps the two views to named branch embeddings
  (:class:`Branches`), adds its reconstruction terms to the clustering loss and declares its own pretraining
  stages (:class:`PretrainStage`).

Shapes: N cells (or B in a minibatch), P input features, G counted genes, d latent dimensions, K clusters.
See docs/plugins.md for a worked example of each kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

#: The pretraining stages an encoder may declare, in the order they run (each at most once). A "cells" stage
#: trains on shuffled minibatches of cells without the graph; the others on the graph (all cells or a batch).
PRETRAIN_STAGES = ("pretrain_ae", "pretrain_gae", "pretrain_joint")


class Views(NamedTuple):
    """Two views: expression matrices (N × P) and sparse graphs (N × N)."""

    x1: Tensor
    x2: Tensor
    adj1: Tensor
    adj2: Tensor


@dataclass
class Branches:
    """What an encoder makes of the two views.

    ``z_ae`` / ``z_g``: the expression and graph branch embeddings (N × d each; either may be None);
    ``ae_views`` / ``graph_views``: each branch's embedding of view 1 and view 2 (for the cross-correlation
    terms); ``propagation``: (H, ÂH) pairs of graph layers for the propagation regulariser.
    """

    z_ae: Tensor | None
    z_g: Tensor | None
    ae_views: list[Tensor] | None = None
    graph_views: list[Tensor] | None = None
    propagation: list[tuple[Tensor, Tensor]] = field(default_factory=list)


@dataclass
class PretrainStage:
    """One pretraining stage an encoder declares (:meth:`Encoder.pretrain_stages`).

    ``name``: one of :data:`PRETRAIN_STAGES` (it names the stage in checkpoints, batch streams and loss.csv);
    ``label``: the progress bar's text; ``module``: what the stage trains (and DistributedDataParallel wraps);
    ``loss``: for a ``cells`` stage ``loss(module, x_batch (B × P)) → (loss, terms)``, otherwise
    ``loss(module, data, ax, generator) → (loss, terms)`` with ``data`` the :class:`~scsc.data.bundle.TrainData`
    of all cells or one batch and ``ax`` = Â X of that data (B × P).
    """

    name: str
    label: str
    module: nn.Module
    lr: float
    epochs: int
    loss: Callable[..., tuple[Tensor, dict[str, Tensor]]]
    cells: bool = False

    def __post_init__(self) -> None:
        if self.name not in PRETRAIN_STAGES:
            raise ValueError(f"pretraining stage {self.name!r} is not one of {PRETRAIN_STAGES}")


@runtime_checkable
class Augmenter(Protocol):
    """Makes the two views of every clustering epoch (METHOD §3)."""

    adj_main: Tensor | None

    def prepare(self, data: Any, embedding: np.ndarray | None) -> None:
        """Once, after pretraining: ``embedding`` is the pretrained N × d embedding."""

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> Views:
        """The two views of one epoch."""

    def clean_views(self, x: Tensor) -> Views:
        """The views without random noise (for the reported embedding)."""

    def focus(self, rows: np.ndarray | None) -> None:
        """Minibatch mode: restrict the graphs to the cells ``rows`` (B,); None: all cells."""


@runtime_checkable
class Encoder(Protocol):
    """The siamese branches (METHOD §4), a black box to the trainer."""

    def encode_views(self, views: Views, propagation: bool = True) -> Branches:
        """Both views through the shared branches; ``propagation=False`` may drop the layer activations."""

    def reconstruction_terms(
        self, z: Tensor, data: Any, adj: Tensor, want: set[str], generator: torch.Generator | None
    ) -> tuple[dict[str, Tensor], list]:
        """Named reconstruction terms of the fused Z (N × d) among ``want``, and further (H, ÂH) pairs."""

    def pretrain_stages(self, config: Any) -> list[PretrainStage]:
        """The stages that pretrain this encoder, in order (an empty list: no pretraining)."""


@runtime_checkable
class Fusion(Protocol):
    """From the branch embeddings to Z, plus the refinement terms (METHOD §5–6)."""

    takes_rows: ClassVar[bool]
    takes_groups: ClassVar[bool]

    def __call__(self, z_ae: Tensor | None, z_g: Tensor | None, adj: Tensor, **kwargs: Any) -> Tensor:
        """Z (N × d); ``rows=`` (B,) when ``takes_rows``, ``groups=`` (index tensors) when ``takes_groups``."""

    def terms(
        self,
        ae_views: list[Tensor] | None,
        graph_views: list[Tensor] | None,
        propagation: list[tuple[Tensor, Tensor]],
        q: Tensor | None,
    ) -> dict[str, Tensor]:
        """Named refinement terms."""


@runtime_checkable
class ClusterHead(Protocol):
    """The clustering head (METHOD §6.4)."""

    def init(self, z: Tensor, n_clusters: int) -> np.ndarray:
        """Set up K clusters on Z (N × d); initial labels (N,) in 0 … K − 1."""

    def soft_assign(self, z: Tensor) -> Tensor:
        """Q (N × K), rows summing to 1."""

    def refresh(self, z: Tensor) -> None:
        """Recompute the target from the detached Z."""

    def loss(self, z: Tensor, q: Tensor) -> dict[str, Tensor]:
        """Named loss terms (``{}`` for none)."""

    def predict(self, z: Tensor) -> np.ndarray:
        """Final labels (N,)."""

    def focus(self, rows: Tensor | None) -> None:
        """Minibatch mode: the next refresh/loss concern the cells ``rows`` (B,); None: all cells."""


class HeadBase(nn.Module):
    """A base for heads that need nothing in minibatch mode: :meth:`focus` does nothing."""

    def focus(self, rows: Tensor | None) -> None:
        """No per-batch state."""


#: The Protocol of each kind (docs/plugins.md).
PROTOCOLS: dict[str, type] = {
    "augment": Augmenter,
    "encoder": Encoder,
    "fusion": Fusion,
    "cluster": ClusterHead,
}


def _methods(protocol: type) -> tuple[str, ...]:
    """The methods a Protocol declares (in order), ``__call__`` included; capability flags are not methods."""
    return tuple(
        name
        for name, value in vars(protocol).items()
        if callable(value) and (name == "__call__" or not name.startswith("_"))
    )


#: The methods each kind must have, read from its Protocol; capability flags are optional.
REQUIRED = {kind: _methods(protocol) for kind, protocol in PROTOCOLS.items()}


def check_contract(kind: str, name: str, component: object) -> None:
    """Refuse a component that lacks a method of its kind's contract, naming what is missing."""
    from ..errors import ConfigError

    missing = [m for m in REQUIRED[kind] if not callable(getattr(component, m, None))]
    if missing:
        raise ConfigError(
            f"{kind} component {name!r} ({type(component).__name__}) lacks "
            f"{', '.join(m + '()' for m in missing)}; see docs/plugins.md for the {kind} contract"
        )


def capability(component: object, name: str) -> bool:
    """A declared capability flag of ``component`` (False when a component written before it does not say)."""
    return bool(getattr(component, name, False))
