"""The Python API on AnnData: what the CLI calls and what a notebook imports.

>>> import scsc
>>> adata = scsc.read("data.h5")                    # any supported format → AnnData of raw counts
>>> adata = scsc.cluster(adata, n_clusters=8)       # obsm["X_scsc"], obs["scsc_cluster"], uns["scsc"]

A run is a :class:`~scsc.session.RunSession` (scsc/session.py); these functions build the config and drive it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig, check_device
from .errors import ConfigError
from .k_selection import parse_k
from .plugins import Registry
from .session import RunControl, RunResult, RunSession, versions
from .train import Reporter

__all__ = [
    "ALIASES",
    "RunControl",
    "RunResult",
    "check_device",
    "cluster",
    "load_checkpoint",
    "make_config",
    "pretrain",
    "run",
    "save_checkpoint",
    "versions",
]

#: Short keyword names accepted by :func:`cluster` and :func:`pretrain`.
ALIASES = {
    "augment": "components.augment",
    "encoder": "components.encoder",
    "fusion": "components.fusion",
    "head": "components.cluster",
    "epochs": "cluster.epochs",
    "lr": "cluster.lr",
    "k": "graph.k",
    "n_hvg": "preprocess.n_hvg",
    "n_pcs": "preprocess.n_pcs",
    "log_normalized": "preprocess.log_normalized",
    "batch_key": "preprocess.batch_key",
    "batch_size": "minibatch.batch_size",
}


#: Keywords that drive a run rather than configure it (fields of :class:`RunControl`).
_CONTROL_FIELDS = {"checkpoint", "checkpoint_every", "resume", "keep_checkpoint", "context", "source"}


def make_config(config: RunConfig | str | Path | None = None, **overrides: Any) -> RunConfig:
    """A :class:`RunConfig` from a config object or TOML path plus keyword overrides.

    Keywords are top-level fields (``seed``, ``device``), aliases (``augment``, ``encoder``, ``fusion``,
    ``head``, ``epochs``, ``lr``, ``k``, ``batch_size``, …) or ``section__key`` names such as ``loss__zinb=0``.
    """
    if config is None:
        cfg = RunConfig()
    elif isinstance(config, RunConfig):
        cfg = config.copy()
    else:
        cfg = RunConfig.from_toml(config)
    moved = sorted(set(overrides) & _CONTROL_FIELDS)
    if moved:  # keywords of scsc.run / scsc.pretrain before RunControl held them
        raise ConfigError(
            f"{', '.join(k + '=' for k in moved)} now go into control=scsc.RunControl(...), "
            f"e.g. control=RunControl(checkpoint=..., resume=True)"
        )
    dotted = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "n_clusters":
            try:
                fixed, candidates = parse_k(value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if fixed is not None or candidates:
                dotted["cluster.n_clusters"] = fixed
                dotted["cluster.k_candidates"] = candidates
        else:
            dotted[ALIASES.get(key, key.replace("__", "."))] = value
    return cfg.override(dotted)


# ----------------------------------------------------------------------------- public API
def pretrain(
    adata: ad.AnnData,
    config: RunConfig | str | Path | None = None,
    *,
    reporter: Reporter | None = None,
    registry: Registry | None = None,
    control: RunControl | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the three pretraining stages (METHOD §7) on ``adata`` (raw counts, N × G).

    Returns a checkpoint dict (``encoder`` state, ``config``, ``fingerprint`` of the preprocessed data,
    ``history``, ``timings``) that :func:`cluster` accepts as ``pretrained=`` and :func:`save_checkpoint`
    writes. ``control`` (checkpoints, resume, distributed rank) works as in :func:`run` (these are the first steps
    of the same :class:`~scsc.session.RunSession`); the run checkpoint is left in place for the caller to remove
    once the result is saved.
    """
    cfg = make_config(config, **overrides)
    session = RunSession(adata, cfg, reporter=reporter, registry=registry, control=control)
    session.prepare()
    session.pretrain()
    timings = {key: float(session.timings[key]) for key in ("preprocess_graph", "pretrain")}
    return {**session.record, "timings": timings}


def cluster(
    adata: ad.AnnData,
    n_clusters: int | str | Sequence[int] | None = None,
    config: RunConfig | str | Path | None = None,
    *,
    pretrained: dict[str, Any] | str | Path | None = None,
    reporter: Reporter | None = None,
    registry: Registry | None = None,
    copy: bool = True,
    **overrides: Any,
) -> ad.AnnData:
    """Cluster the cells of ``adata`` (raw counts, N × G) with scSiameseClu.

    ``n_clusters``: ``None`` or ``"auto"`` estimates K (scsc/k_selection.py); an int fixes it; a list such as
    ``[6, 8, 10]``, ``"6,8,10"`` or a range ``"5:15"`` clusters every candidate from one pretraining
    (``obs["scsc_cluster_k<K>"]``) and keeps the one the estimate prefers as ``obs["scsc_cluster"]``.

    Returns an AnnData of the kept cells (cells with no counts are dropped) with ``obsm["X_scsc"]`` (N × d
    embedding), ``obs["scsc_cluster"]`` (categorical labels) and ``uns["scsc"]`` (config, versions, K, how K was
    chosen in ``uns["scsc"]["k_selection"]``, and metrics when ``obs["label"]`` holds true labels; those are
    read only for the final scores).
    """
    result = run(
        adata, n_clusters, config, pretrained=pretrained, reporter=reporter, registry=registry, **overrides
    )
    if not copy and result.adata.n_obs == adata.n_obs:
        adata.obsm["X_scsc"] = result.adata.obsm["X_scsc"]
        for key in result.adata.obs:
            if key.startswith("scsc_cluster"):
                adata.obs[key] = result.adata.obs[key].to_numpy()
        adata.uns["scsc"] = result.adata.uns["scsc"]
        return adata
    return result.adata


def run(
    adata: ad.AnnData,
    n_clusters: int | str | Sequence[int] | None = None,
    config: RunConfig | str | Path | None = None,
    *,
    pretrained: dict[str, Any] | str | Path | None = None,
    reporter: Reporter | None = None,
    registry: Registry | None = None,
    control: RunControl | None = None,
    **overrides: Any,
) -> RunResult:
    """:func:`cluster` with every intermediate returned as a :class:`RunResult`.

    ``control`` (:class:`~scsc.session.RunControl`) drives the run without changing what it computes: a
    checkpoint file written during training and ``resume`` from it (the result then equals an uninterrupted
    run's), whether to keep that file afterwards, the distributed rank under ``torchrun``, and the input's name
    for messages. For example ``control=RunControl(checkpoint="run/checkpoint.pt", resume=True)``.
    """
    cfg = make_config(config, n_clusters=n_clusters, **overrides)
    session = RunSession(
        adata, cfg, pretrained=pretrained, reporter=reporter, registry=registry, control=control
    )
    session.prepare()
    session.pretrain()
    session.choose_k()
    session.train()
    session.other_k()
    return session.result()
