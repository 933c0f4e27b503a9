"""Typed run configuration with every default of the method (docs/method.md).

A :class:`RunConfig` is a tree of dataclasses. It round-trips through TOML (one table per section) and takes
dotted overrides such as ``loss.zinb=0`` from the command line. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class PreprocessConfig:
    """METHOD §1: filtering, normalisation, HVG selection and PCA."""

    min_cells: int = 3
    #: 2000 HVGs as in the standard scanpy pipeline (the paper's 1000 lost distinct types). 20 PCs, chosen on the
    #: tuning collection: KMeans on the pretrained embedding, mean ARI 0.47 with 10 or 20 PCs against 0.41 with 50
    #: (docs/method.md, "Defaults chosen on the tuning collection").
    n_hvg: int = 2000
    n_pcs: int = 20
    scale_clip: float = 10.0
    #: Above this many cells, scale and PCA run in row chunks (exact covariance PCA, no dense cells × HVG
    #: block); up to it, the dense scanpy path (arpack PCA). The two agree up to component signs and rounding.
    dense_max_cells: int = 50_000
    #: The input is already log-normalised: skip normalisation and disable the ZINB term.
    log_normalized: bool = False
    #: An ``obs`` column naming each cell's batch (run, donor, chemistry): HVGs are chosen within each batch and
    #: the PCA input is corrected by Harmony (scsc/data/batch_correct.py). None: no correction.
    batch_key: str | None = None


@dataclass
class GraphConfig:
    """METHOD §2–3: kNN cell graph and the sparse diffusion view."""

    k: int = 10
    #: Above this many cells the kNN search is approximate (pynndescent); exact below. It holds for every cell
    #: graph of a run: the model's, the estimate of K's and the one the head's start partition is found on.
    exact_max_cells: int = 50_000
    ppr_alpha: float = 0.5
    #: PPR entries below this value are dropped while the series is summed.
    ppr_eps: float = 1e-4
    #: Keep at most this many PPR entries per row (largest first).
    ppr_topk: int = 32
    #: Fraction of the least similar edges removed for the edge-removal view.
    edge_drop: float = 0.1


@dataclass
class ComponentsConfig:
    """Registered component names (see ``scsc components``)."""

    augment: str = "dual"
    encoder: str = "siamese"
    fusion: str = "siamese"
    cluster: str = "sinkhorn"


@dataclass
class ModelConfig:
    """METHOD §4–5: network sizes and fusion options."""

    ae_hidden: list[int] = field(default_factory=lambda: [128, 256, 512])
    gae_hidden: list[int] = field(default_factory=lambda: [128, 256])
    latent: int = 20
    #: Standard deviation of the multiplicative Normal(1, s) expression noise.
    noise_std: float = 0.1
    #: Shape of the learnable fusion weights a, b: "feature" (1×d) or "cell" (N×d, as published).
    fusion_weights: str = "feature"
    #: Scale of the global attention logits (1.0 as in the reference).
    attention_scale: float = 1.0


@dataclass
class LossConfig:
    """METHOD §6: the weight of every named loss term. A weight of 0 removes the term."""

    rec_x: float = 1.0
    rec_graph: float = 1.0
    rec_adj: float = 0.1
    cr_sample_ae: float = 0.1
    cr_sample_graph: float = 5.0
    cr_feature_ae: float = 1.0
    cr_feature_graph: float = 1.0
    prop: float = 1000.0
    zinb: float = 5.0
    clu: float = 50.0
    #: Non-edges sampled per edge for the adjacency reconstruction estimate.
    adj_negatives: int = 1
    #: Cells sampled per epoch for the ZINB term (an unbiased estimate of its mean; 0 = all cells).
    zinb_cells: int = 1024


@dataclass
class PretrainConfig:
    """METHOD §7: the three pretraining stages."""

    ae_epochs: int = 100
    #: 1024 (published 256): the same epochs in a quarter of the optimizer steps. On the five tuning datasets
    #: (with 30 joint epochs; 5 seeds, both annotation levels, K given and estimated) every mean moved by less
    #: than 0.01 and pretraining took 20–40 % less time (docs/decisions.md, "Pretraining schedule").
    ae_batch_size: int = 1024
    ae_lr: float = 5e-4
    gae_epochs: int = 50
    gae_lr: float = 5e-4
    gae_adj_weight: float = 0.5
    #: 30 (published 200; 75 until December 6): 75 epochs had already been chosen over 200, which shrank the
    #: expression branch against the graph branch; on the five tuning datasets 30 epochs keep every mean within
    #: 0.01 (K given: 0.464 → 0.468, lineages 0.575 → 0.577; K estimated 0.421 → 0.421) and take a quarter of
    #: pretraining off (docs/decisions.md, "Pretraining schedule"). Shorter expression-AE stages lost Camp's
    #: lineages on one seed of five.
    joint_epochs: int = 30
    joint_lr: float = 1e-4
    joint_rec_graph: float = 0.9
    joint_adj: float = 0.1
    joint_align: float = 0.1


@dataclass
class ClusterConfig:
    """METHOD §6.5 and §7: the clustering stage."""

    #: Number of clusters; None estimates it from the pretrained embedding (scsc/k_selection.py).
    n_clusters: int | None = None
    #: 5 (published 50): on the tuning collection (5 seeds) the stage moved mean ARI over its KMeans start by
    #: +0.017 with 5 epochs, +0.007 with 10 and +0.002 with 50 (docs/method.md).
    epochs: int = 5
    lr: float = 5e-3
    #: Sinkhorn sharpness λ (entropic regularisation ε = 1/λ).
    sinkhorn_lambda: float = 5.0
    sinkhorn_iters: int = 1000
    sinkhorn_tol: float = 1e-6
    #: Recompute the transport target every this many epochs.
    refresh_every: int = 1
    #: Weight of the model input beside Z in what the head clusters, [Z ‖ w·s·(x − x̄)] with s giving the input
    #: Z's RMS norm; 0 clusters Z alone (published). Chosen on the tuning collection scored at two annotation
    #: levels (5 seeds, whole runs): 3 (was 1) keeps the own-annotation mean (0.482 → 0.479) and lifts the
    #: lineage-level one from 0.534 to 0.646, where weight 1 lost Camp's three lineages on three seeds of five
    #: (Camp's seed spread 0.27 → 0.008; docs/method.md, "How much of the input").
    input_weight: float = 3.0
    #: k-means++ starts of the head's KMeans (the lowest inertia is kept); 50 (was 10): beside the input, 10
    #: starts left Zheng's seed spread at 0.040, 50 bring it to 0.008.
    kmeans_restarts: int = 50
    #: After minibatch training, move each centroid to the target-weighted mean of the final embedding before
    #: predicting (one EM step; ``head.refit``). Full batch never refits: there it lowered mean ARI on the
    #: tuning collection (0.479 → 0.470); after minibatch training it repairs centroids that lag the embedding
    #: (100k cells: 0.966 → 0.9998 ARI; docs/method.md).
    refit_after_minibatch: bool = True
    #: The first this many of ``epochs`` train without the clustering loss; the head is then initialised again
    #: (KMeans) on the refined embedding. 0 initialises once on the pretrained embedding, as published.
    warmup_epochs: int = 0
    #: Resolution of the Leiden partition that the estimate of K starts from (scsc/k_selection.py).
    leiden_resolution: float = 1.0
    #: Largest connectivity between two clusters (PAGA's measure) that still counts as separated when K is
    #: estimated. 0.1 (0.125 until December 6), chosen again on the five tuning datasets: at both annotation
    #: levels the mean ARI of the estimated K's start is higher with 0.1 than with 0.125 on three sets of
    #: pretrained embeddings (lineages +0.018 to +0.028, own annotation +0.001 to +0.013); planted types are
    #: exact at 0.05–0.125 (docs/decisions.md, "The threshold on five datasets").
    k_threshold: float = 0.1
    #: When K is estimated, a cluster of fewer than this fraction of the cells (of the 2,000-cell subsamples above
    #: that size) does not count as a cluster of its own: it is merged into the cluster it is most connected to
    #: before K is scored (scsc/k_selection.py). 0 (off) by default: 0.01 removed Zheng's over-splitting
    #: satellites on the tuning collection, but it also folds a clearly separated planted type of 16 cells of
    #: 2,000 (docs/method.md, "Satellites: measured, not adopted").
    k_min_size: float = 0.0
    #: Where the head starts when K is estimated: "partition" (the estimate's merge path on the graph of what the
    #: head clusters, at K, refined by Lloyd iterations; scsc/k_selection.py ``partition_at``) or "kmeans"
    #: (KMeans's own starts, as for a given K). Chosen on the tuning collection (whole runs, ten seeds: mean ARI
    #: 0.423 → 0.467; KMeans at the estimated K re-split Zheng's large sorted populations; docs/method.md).
    estimated_start: str = "partition"
    #: Candidate K values, every one clustered from the same pretraining (obs["scsc_cluster_k<K>"]); the main
    #: result is n_clusters when it is set, else the candidate the estimate of K prefers. Empty: one K.
    k_candidates: list[int] = field(default_factory=list)


@dataclass
class MinibatchConfig:
    """Minibatch training for large data: each epoch of a graph stage trains on one subgraph of cells."""

    #: Cells per batch; 0 trains on all cells at once (full batch). None ("auto"): full batch up to
    #: ``auto_above`` cells, batches of ``auto_batch_size`` above.
    batch_size: int | None = None
    auto_above: int = 20_000
    auto_batch_size: int = 8192
    #: Coarse k-means parts per batch; a batch is built from neighbouring parts (scsc/data/batches.py).
    parts_per_batch: int = 4
    #: Cells per epoch of the expression-AE stage in minibatch mode (a random sample; all cells up to this
    #: many). The AE needs no graph, so its epochs are not tied to graph batches.
    ae_cells_per_epoch: int = 65_536


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``config.toml`` beside every result."""

    seed: int = 0
    device: str = "cpu"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    components: ComponentsConfig = field(default_factory=ComponentsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    minibatch: MinibatchConfig = field(default_factory=MinibatchConfig)
    #: Settings of plugin components, one table per section a plugin registers (``[plugin.gat]`` in TOML,
    #: ``--set plugin.gat.heads=2``); validated by the section's dataclass like the built-in sections.
    plugin: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """The settings of plugin section ``name`` (a dataclass instance): as configured, else its defaults."""
        if name in self.plugin:
            return self.plugin[name]
        return _plugin_section_type(name, "config")()

    # ----------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (``None`` values dropped, since TOML has no null; no ``plugin`` table when empty)."""
        out = _drop_none(dataclasses.asdict(self))
        if not out["plugin"]:
            del out["plugin"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build from a nested dict; unknown sections or keys raise :class:`ConfigError`."""
        cfg = cls()
        for key, value in data.items():
            _assign(cfg, key.split("."), value, source)
        return cfg

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> None:
        """Write the config as TOML atomically."""
        from .data.io import atomic_write_text

        atomic_write_text(Path(path), self.to_toml())

    def override(self, assignments: list[str] | dict[str, Any]) -> RunConfig:
        """Apply ``section.key=value`` strings (TOML values) or a ``{dotted: value}`` dict in place."""
        if isinstance(assignments, dict):
            items = list(assignments.items())
        else:
            items = []
            for text in assignments:
                if "=" not in text:
                    raise ConfigError(f"--set {text!r}: expected section.key=value")
                key, raw = text.split("=", 1)
                items.append((key.strip(), _parse_value(raw.strip())))
        for key, value in items:
            _assign(self, key.split("."), value, "--set")
        return self

    def copy(self) -> RunConfig:
        return RunConfig.from_dict(self.to_dict())


def check_device(device: str) -> None:
    """Refuse a device that this machine does not have, with a clear message."""
    if device not in {"cpu"} and not device.startswith("cuda") and device != "mps":
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda"):
        import torch  # only to ask for CUDA: the CPU needs no check, and a bad option fails before torch loads

        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available on this machine; use --device cpu"
            )


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word such as a component name


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


def _plugin_section_type(name: str, source: str) -> type:
    """The dataclass a plugin registered for config section ``name``."""
    from .plugins import get_registry

    sections = get_registry().config_sections
    if name not in sections:
        raise ConfigError(
            f"{source}: unknown plugin section {name!r}; registered: {', '.join(sorted(sections)) or 'none'}"
        )
    return sections[name]


def _assign_plugin(cfg: RunConfig, path: list[str], value: Any, source: str) -> None:
    """``plugin.<section>[.key]`` = value, or a whole ``[plugin]`` / ``[plugin.<section>]`` table."""
    if not path or len(path) == 1:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [plugin{'.' + path[0] if path else ''}] must be a table")
        if not path:
            for name, table in value.items():
                _assign_plugin(cfg, [name], table, source)
            return
    current = cfg.plugin.setdefault(path[0], _plugin_section_type(path[0], source)())
    if len(path) > 1:
        _assign(current, path[1:], value, source)
    else:
        for sub, subval in value.items():
            _assign(current, [sub], subval, f"{source}: [plugin.{path[0]}]")


def _assign(obj: Any, path: list[str], value: Any, source: str, prefix: str = "") -> None:
    """Set ``obj``'s field at the dotted ``path`` to ``value``; ``source`` and ``prefix`` (the sections above
    ``obj``, as in ``graph.``) name the setting in error messages."""
    key = path[0]
    if isinstance(obj, RunConfig) and key == "plugin":
        _assign_plugin(obj, path[1:], value, source)
        return
    names = {f.name: f for f in dataclasses.fields(obj)}
    where = f"{source}: " if source else ""
    if key not in names:
        raise ConfigError(f"{where}unknown key {key!r}; valid keys: {', '.join(names)}")
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        if len(path) > 1:
            _assign(current, path[1:], value, source, f"{prefix}{key}.")
            return
        if not isinstance(value, dict):
            raise ConfigError(f"{where}[{key}] must be a table")
        for sub, subval in value.items():
            _assign(current, [sub], subval, f"{source}: [{key}]" if source else f"[{key}]")
        return
    if len(path) > 1:
        raise ConfigError(f"{where}{key!r} is not a section")
    setattr(obj, key, _coerce(names[key], current, value, f"{where}{prefix}{key}"))


def _coerce(fld: dataclasses.Field, current: Any, value: Any, where: str) -> Any:
    hint = str(fld.type)
    if value is None or (isinstance(value, str) and value.lower() in {"none", "auto"} and "None" in hint):
        if "None" in hint:
            return None
        raise ConfigError(f"{where}: a value is required")
    try:
        if isinstance(current, bool) or hint == "bool":
            if isinstance(value, str):
                if value.lower() not in {"true", "false"}:
                    raise ValueError
                return value.lower() == "true"
            return bool(value)
        if isinstance(value, bool) and hint != "bool":
            raise ValueError  # TOML true/false is not a number: k=true must not become k=1
        if "int" in hint and "list" not in hint and "float" not in hint:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if "float" in hint:
            return float(value)
        if "list" in hint:
            return [int(v) for v in value]
        if "str" in hint:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: invalid value {value!r} (expected {hint})") from None
    return value
