"""Resumable runs: the whole training state written every N epochs, and read back to continue exactly.

A run is a fixed sequence of stages (:data:`STAGES`). After every ``every``-th epoch of a stage, and after its
last epoch, :class:`Checkpointer` writes ``checkpoint.pt`` atomically with the stage and the next epoch, the
model (encoder, fusion, head), the stage's optimizer, every random state, the loss history, K and how it was
chosen, the initial KMeans labels, the pretrained embedding and the state at the end of pretraining, the
timings so far, the effective config and the data fingerprint. ``pretrain.pt`` files (:func:`save_checkpoint`,
:func:`load_checkpoint`) are written and read here too.
A run started with ``resume=True`` restores that state at the saved point, so it continues as if it had never
stopped: same seed, same machine → same labels.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .data.io import atomic_path
from .errors import ConfigError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The stages of a run, in order. Warm-up and clustering share epoch numbers (0 … cluster.epochs − 1).
STAGES = ("pretrain_ae", "pretrain_gae", "pretrain_joint", "cluster_warmup", "cluster")
#: File name of the checkpoint inside a run folder.
FILE_NAME = "checkpoint.pt"
#: Marks a file as a run checkpoint (a pretrain.pt or model.pt is not one).
FORMAT = "scsc-run-checkpoint/1"


# ----------------------------------------------------------------------------- reading and validation
def read_torch_file(path: str | Path, missing: str) -> Any:
    """``torch.load`` on CPU; a missing file raises :class:`InputError` with ``missing``, a foreign one too."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001  (unpickling a foreign or truncated file raises assorted errors)
        raise InputError(f"{path}: not a scsc checkpoint (cannot be loaded)") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read a run checkpoint; a missing or foreign file raises :class:`InputError` naming it."""
    state = read_torch_file(path, "no checkpoint to resume from (run without --resume to start afresh)")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not a scsc run checkpoint")
    return state


def first_difference(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two nested config dicts, or None."""
    for key in list(saved) + [k for k in now if k not in saved]:
        a, b = saved.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            inner = first_difference(a, b, name + ".")
            if inner:
                return inner
        elif a != b:
            return name
    return None


def check_config(state: dict[str, Any], config: RunConfig, where: str) -> None:
    """Refuse to resume with a config other than the one the checkpoint was written with."""
    saved = tomllib.loads(state["config"])
    now = tomllib.loads(config.to_toml())  # the same TOML round trip, so 1 and 1.0 compare alike
    key = first_difference(saved, now)
    if key is not None:

        def value(d: dict) -> Any:
            for part in key.split("."):
                d = d.get(part, "unset") if isinstance(d, dict) else "unset"
            return d

        raise ConfigError(
            f"{where}: config differs from the checkpoint's at {key} "
            f"(checkpoint {value(saved)!r}, now {value(now)!r}); resume with the same options"
        )


def check_same_data(
    saved: dict[str, Any],
    now: dict[str, Any],
    where: str,
    *,
    written: str = "written for",
    rtol: float = 1e-6,
) -> None:
    """Refuse a checkpoint whose data fingerprint ``saved`` is not ``now`` (both from
    :func:`~scsc.data.prepare.fingerprint`): cell, input and gene counts must match and the sum of absolute
    input values agree to ``rtol``. ``written`` says how the checkpoint relates to its data in the message."""
    for key in ("n_cells", "n_input", "n_genes"):
        if saved.get(key) != now[key]:
            raise InputError(
                f"{where}: checkpoint was {written} different data ({key} {saved.get(key)} ≠ {now[key]})"
            )
    if not np.isclose(saved.get("abs_sum", 0.0), now["abs_sum"], rtol=rtol):
        raise InputError(f"{where}: checkpoint was {written} different data or preprocessing")


# ----------------------------------------------------------------------------- pretrain.pt
def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary name, then rename (never a half-written checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a pretraining checkpoint (``pretrain.pt``); a missing or foreign file raises :class:`InputError`."""
    payload = read_torch_file(path, "checkpoint not found")
    if not isinstance(payload, dict) or "encoder" not in payload or "fingerprint" not in payload:
        raise InputError(f"{path}: not a scsc pretraining checkpoint")
    return payload


# ----------------------------------------------------------------------------- model and random state
def head_state(head: nn.Module) -> dict[str, Any]:
    """The head's tensors, which parameters are frozen, and its target (not a buffer, but it steers training)."""
    return {
        "tensors": {k: v.detach().clone() for k, v in head.state_dict().items()},
        "frozen": [k for k, p in head.named_parameters() if not p.requires_grad],
        "target": getattr(head, "target", None),
    }


def restore_head(head: nn.Module, state: dict[str, Any], device: torch.device | str) -> None:
    """Put saved tensors back into ``head``, replacing each parameter and buffer rather than copying into it.

    ``init`` gives the head new K × d centroids, so the freshly built head has other shapes than the saved one
    and ``load_state_dict`` would refuse them.
    """
    for name, value in state["tensors"].items():
        owner_name, _, attr = name.rpartition(".")
        owner = head.get_submodule(owner_name)
        value = value.to(device)
        if attr in owner._parameters:
            setattr(owner, attr, nn.Parameter(value.clone(), requires_grad=name not in state["frozen"]))
        else:
            setattr(owner, attr, value.clone())
    if hasattr(head, "target"):
        target = state["target"]
        head.target = None if target is None else target.to(device)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from (the AE stage's NumPy Generator is saved by its owner)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Set every random state saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- timings
class Timings(dict):
    """Seconds per phase of a run; a resumed run adds its own time to the time saved in the checkpoint."""

    def __init__(self, saved: dict[str, float] | None = None):
        super().__init__(saved or {})
        self._open: dict[str, tuple[float, float]] = {}

    def start(self, phase: str) -> None:
        """Start (or continue) timing ``phase``."""
        self._open[phase] = (time.perf_counter(), self.get(phase, 0.0))

    def stop(self, phase: str) -> None:
        """Stop timing ``phase``; its value is the saved time plus the time since :meth:`start`."""
        t0, base = self._open.pop(phase)
        self[phase] = base + time.perf_counter() - t0

    def snapshot(self) -> dict[str, float]:
        """Every phase as it stands now, the running ones included."""
        now = time.perf_counter()
        return {**self, **{k: base + now - t0 for k, (t0, base) in self._open.items()}}


# ----------------------------------------------------------------------------- the checkpointer
class Checkpointer:
    """Writes the state of one run every ``every`` epochs to ``path`` and, when resuming, hands it back.

    Args:
        path: the checkpoint file; None disables checkpoints (the training loops then run as before).
        every: save after every this many epochs of a stage, and after its last epoch; 0 disables.
        config: the effective config, saved as TOML and compared on resume.
        resume: continue from ``path``; it must exist and hold a checkpoint of this config.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        every: int = 10,
        config: RunConfig | None = None,
        resume: bool = False,
    ):
        self.path = None if path is None else Path(path)
        self.every = max(0, int(every))
        self.config_toml = config.to_toml() if config is not None else ""
        self.saved: dict[str, Any] | None = None
        if resume:
            if self.path is None:
                raise ConfigError("resume needs the checkpoint file to continue from (checkpoint=)")
            self.saved = load(self.path)
            check_config(self.saved, config, str(self.path))
        saved = self.saved or {}
        #: The run's loss history so far; the training loops append to this list.
        self.history: list[dict] = list(saved.get("history", []))
        self.timings = Timings(saved.get("timings"))
        self.fingerprint: dict[str, Any] = saved.get("fingerprint", {})
        #: Set once known: K, the initial KMeans labels and the pretrained embedding Z (N × d).
        self.k: int | None = saved.get("k")
        self.init_labels: np.ndarray | None = saved.get("init_labels")
        self.z_pre: np.ndarray | None = saved.get("z_pre")
        #: How K was chosen (None when it was given) and the state every K's clustering stage starts from
        #: (encoder, fusion and random states at the end of pretraining).
        self.k_selection = saved.get("k_selection")
        self.pretrained_state: dict[str, Any] | None = saved.get("pretrained_state")
        self.model: nn.Module | None = None
        self.generator: torch.Generator | None = None
        self.ae_rng: np.random.Generator | None = None

    # ------------------------------------------------------------------ where the run stands
    @property
    def enabled(self) -> bool:
        """Whether checkpoints are written."""
        return self.path is not None and self.every > 0

    @property
    def resumed_stage(self) -> str | None:
        """The stage the saved run stopped in, or None for a fresh run."""
        return None if self.saved is None else self.saved["stage"]

    @property
    def past_pretraining(self) -> bool:
        """The saved run had finished pretraining (its state includes the pretrained embedding)."""
        return self.resumed_stage is not None and not self.resumed_stage.startswith("pretrain")

    def first_epoch(self, stage: str, start: int, end: int) -> int:
        """The epoch ``stage`` (epochs ``start`` … ``end`` − 1) begins at: ``end`` when the saved run was past it."""
        if self.saved is None:
            return start
        here, there = STAGES.index(stage), STAGES.index(self.resumed_stage)
        if here < there:
            return end
        return self.saved["epoch"] if here == there else start

    # ------------------------------------------------------------------ restoring
    def attach(self, model: nn.Module, generator: torch.Generator, fingerprint: dict[str, Any]) -> None:
        """Tell the checkpointer what to save; on resume, the data must match the checkpoint's."""
        self.model, self.generator = model, generator
        if self.saved is not None:
            check_same_data(self.saved["fingerprint"], fingerprint, str(self.path))
        self.fingerprint = fingerprint
        if self.enabled:
            # A kill during torch.save leaves its temporary file behind (the rename never happened).
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp*"):
                stale.unlink(missing_ok=True)

    def restore(self) -> None:
        """Put back the saved model and random states; call it where the saved stage begins."""
        if self.saved is None:
            return
        model, device = self.model, self.model.config.device
        model.encoder.load_state_dict(self.saved["model"]["encoder"])
        model.fusion.load_state_dict(self.saved["model"]["fusion"])
        restore_head(model.head, self.saved["model"]["head"], device)
        restore_rng(self.saved["rng"], self.generator)

    def numpy_rng(self, seed: int) -> np.random.Generator:
        """The AE stage's shuffling generator: seeded, or in its saved state when resuming pretraining."""
        rng = np.random.default_rng(seed)
        if self.saved is not None and self.saved["rng"].get("ae") is not None and not self.past_pretraining:
            rng.bit_generator.state = self.saved["rng"]["ae"]
        self.ae_rng = rng
        return rng

    def stage(self, name: str) -> StageCheckpoint:
        """The view of this checkpointer that one training loop uses."""
        return StageCheckpoint(self, name)

    # ------------------------------------------------------------------ saving
    def save(self, stage: str, next_epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Write the whole state atomically (temporary name, then rename)."""
        model = self.model
        rng = rng_state(self.generator)
        rng["ae"] = None if self.ae_rng is None else self.ae_rng.bit_generator.state
        state = {
            "format": FORMAT,
            "stage": stage,
            "epoch": int(next_epoch),
            "model": {
                "encoder": model.encoder.state_dict(),
                "fusion": model.fusion.state_dict(),
                "head": head_state(model.head),
            },
            "optimizer": optimizer.state_dict(),
            "rng": rng,
            "history": list(self.history),
            "k": self.k,
            "init_labels": self.init_labels,
            "z_pre": self.z_pre,
            "k_selection": self.k_selection,
            "pretrained_state": self.pretrained_state,
            "timings": self.timings.snapshot(),
            "config": self.config_toml,
            "fingerprint": self.fingerprint,
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def remove(self) -> None:
        """Delete the checkpoint (the run has finished and its results are safe)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class StageCheckpoint:
    """One stage's handle on a :class:`Checkpointer`: restores its optimizer, saves after its epochs."""

    def __init__(self, owner: Checkpointer, name: str):
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        self.owner, self.name = owner, name

    def first_epoch(self, start: int, end: int) -> int:
        """See :meth:`Checkpointer.first_epoch`."""
        return self.owner.first_epoch(self.name, start, end)

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimizer state when the run resumes inside this stage."""
        saved = self.owner.saved
        if saved is not None and saved["stage"] == self.name:
            optimizer.load_state_dict(saved["optimizer"])

    def epoch_done(self, epoch: int, last: int, optimizer: torch.optim.Optimizer) -> None:
        """Save after every ``every``-th epoch and after the stage's ``last`` epoch."""
        owner = self.owner
        if owner.enabled and ((epoch + 1) % owner.every == 0 or epoch == last):
            owner.save(self.name, epoch + 1, optimizer)


def disabled() -> Checkpointer:
    """A :class:`Checkpointer` that writes and restores nothing."""
    return Checkpointer()
