"""Study files: which datasets, seeds, base config and variants an ablation study runs.

A study is a TOML file::

    datasets = ["../shared/datasets/Maayan_Mouse_Pancreas_cell_2.h5"]   # relative to this file (or the cwd)
    seeds = [0, 1]
    preset = "paper"              # optional: start from a built-in list of variants (scsc.ablate.presets)
    baseline = "full model"       # optional: the variant the summary compares against (default: the first)

    [base.cluster]                # any RunConfig section: the config every variant starts from
    epochs = 30

    [[variants]]
    name = "full model"

    [[variants]]
    name = "w/o ZINB"
    set = { "loss.zinb" = 0 }     # dotted config keys

    [[variants]]
    name = "Leiden head"
    cluster = "leiden"            # component names: augment, encoder, fusion, cluster

Everything is checked before any training starts: TOML syntax, unknown top-level or variant keys, unknown
config keys and loss terms, bad values, unknown component names (against the live registry, plugins
included), duplicate names and missing dataset files. Every problem is reported at once, each with the line of
the study file it comes from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError, ScscError
from .presets import FULL, PRESETS, preset_variants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMPONENT_KEYS = ("augment", "encoder", "fusion", "cluster")
TOP_KEYS = ("title", "datasets", "seeds", "preset", "baseline", "base", "variants")
VARIANT_KEYS = ("name", "description", "set", *COMPONENT_KEYS)
DATASET_KEYS = ("path", "name", "layer", "label_key", "transpose", "n_clusters")
DATA_SUFFIXES = (".h5", ".hdf5", ".h5ad", ".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")

#: Config sections (and keys) that change pretraining: variants equal on these share one checkpoint.
PRETRAIN_SECTIONS = ("preprocess", "graph", "model", "pretrain")
PRETRAIN_KEYS = ("seed", "device", "components.encoder", "loss.adj_negatives")


class StudyError(ConfigError):
    """A study file that cannot be run; the message lists every problem with its line."""


def _dataset_options(
    layer: str | None, label_key: str | None, transpose: bool, n_clusters: int | None
) -> dict[str, Any]:
    """The reading options and K of a ``[[datasets]]`` entry that differ from the defaults (as TOML keys)."""
    out: dict[str, Any] = {
        "layer": layer,
        "label_key": label_key,
        "transpose": True if transpose else None,
        "n_clusters": n_clusters,
    }
    return {key: value for key, value in out.items() if value not in (None, "")}


# ----------------------------------------------------------------------------- model
@dataclass
class DatasetSpec:
    """One input file of a study."""

    name: str
    path: Path
    layer: str | None = None
    label_key: str | None = None
    transpose: bool = False
    #: Number of clusters for this data set (None: the config's cluster.n_clusters, else Leiden's estimate).
    n_clusters: int | None = None

    def read(self):
        from ..data.io import read

        return read(self.path, layer=self.layer, label_key=self.label_key, transpose=self.transpose)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            **_dataset_options(self.layer, self.label_key, self.transpose, self.n_clusters),
        }


@dataclass
class Variant:
    """One variant: component names and dotted config overrides on top of the study's base config."""

    name: str
    components: dict[str, str] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def apply(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this variant's ``set`` values, then its component names (in place)."""
        cfg.override(dict(self.sets))
        cfg.override({f"components.{k}": v for k, v in self.components.items()})
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update(self.components)
        if self.sets:
            out["set"] = dict(self.sets)
        return out


@dataclass
class Study:
    """A validated study: every (dataset, variant, seed) cell can be built into a RunConfig."""

    datasets: list[DatasetSpec]
    seeds: list[int]
    variants: list[Variant]
    base: RunConfig
    baseline: str
    title: str = "ablation study"
    source: Path | None = None

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def config(self, variant: Variant, seed: int, dataset: DatasetSpec | None = None) -> RunConfig:
        """The run configuration of one cell: base config, the data set's K, the variant's changes, the seed."""
        cfg = self.base.copy()
        if dataset is not None and dataset.n_clusters is not None:
            cfg.cluster.n_clusters = dataset.n_clusters
        cfg = variant.apply(cfg)
        cfg.seed = int(seed)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "datasets": [d.to_dict() for d in self.datasets],
            "seeds": self.seeds,
            "baseline": self.baseline,
            "base": self.base.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
        }

    def to_toml(self) -> str:
        """A self-contained study file (resolved paths, presets expanded, command-line overrides folded in)."""
        import tomli_w

        data = self.to_dict()
        data["base"].pop("seed", None)
        header = (
            "# Resolved by scsc ablate: re-run with `scsc ablate study.toml --out <this folder>` to resume.\n"
        )
        return header + tomli_w.dumps(data)


# ----------------------------------------------------------------------------- hashing
def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_hash(cfg: RunConfig) -> str:
    """Identity of a whole run configuration (equal hash, equal run)."""
    return _digest(cfg.to_dict())


def pretrain_key(cfg: RunConfig) -> str:
    """Identity of the part of a configuration that pretraining depends on.

    Pretraining (METHOD §7) sees only the data path (preprocess, graph), the encoder and its sizes (model),
    the pretraining schedule, the seed, the device and the adjacency-loss negatives; clustering-stage weights,
    the augmenter, the fusion block and the head do not change it, so variants that differ only there share
    one checkpoint.
    """
    d = cfg.to_dict()
    part = {s: d.get(s, {}) for s in PRETRAIN_SECTIONS}
    if d.get("plugin"):  # a plugin encoder's settings change pretraining (other plugins' only split sharing)
        part["plugin"] = d["plugin"]
    for dotted in PRETRAIN_KEYS:
        node: Any = d
        for p in dotted.split("."):
            node = node.get(p) if isinstance(node, dict) else None
        part[dotted] = node
    return _digest(part)


# ----------------------------------------------------------------------------- locating lines
class _Lines:
    """Best-effort line numbers of keys in the study text, for error messages."""

    HEADER = re.compile(r"^\s*\[")
    VARIANT = re.compile(r"^\s*\[\[\s*variants\s*\]\]")
    BASE = re.compile(r"^\s*\[\s*base\s*[.\]]")

    def __init__(self, path: Path | None, text: str | None):
        self.path = path
        self.lines = text.splitlines() if text else []

    def _find(self, tokens: list[str], start: int = 0, end: int | None = None) -> int | None:
        end = len(self.lines) if end is None else end
        for token in tokens:
            if not token:
                continue
            for i in range(start, end):
                if token in self.lines[i].split("#", 1)[0]:
                    return i + 1
        return None

    def variant(self, index: int, *tokens: str) -> int | None:
        heads = [i for i, line in enumerate(self.lines) if self.VARIANT.match(line)]
        if index < len(heads):
            start = heads[index]
            end = next(
                (i for i in range(start + 1, len(self.lines)) if self.HEADER.match(self.lines[i])),
                len(self.lines),
            )
            return self._find(list(tokens), start, end) or start + 1
        return self._find(list(tokens))

    def base(self, *tokens: str) -> int | None:
        for i, line in enumerate(self.lines):
            if self.BASE.match(line):
                end = next(
                    (
                        j
                        for j in range(i + 1, len(self.lines))
                        if self.HEADER.match(self.lines[j]) and not self.BASE.match(self.lines[j])
                    ),
                    len(self.lines),
                )
                hit = self._find(list(tokens), i, end)
                if hit:
                    return hit
        return self._find(list(tokens))

    def key(self, *tokens: str) -> int | None:
        return self._find(list(tokens))


class _Problems:
    def __init__(self, lines: _Lines):
        self.lines = lines
        self.items: list[tuple[int | None, str]] = []

    def add(self, line: int | None, message: str) -> None:
        self.items.append((line, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        where = str(self.lines.path) if self.lines.path else "study"
        rows = [f"{where}:{line}: {msg}" if line else f"{where}: {msg}" for line, msg in self.items]
        if len(rows) == 1:
            raise StudyError(rows[0])
        raise StudyError(f"{len(rows)} problems in the study (nothing was run):\n  " + "\n  ".join(rows))


# ----------------------------------------------------------------------------- key checks
def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def check_key(dotted: str) -> str | None:
    """Why ``dotted`` is not a settable RunConfig key (``None`` when it is)."""
    parts = dotted.split(".")
    obj: Any = RunConfig()
    if parts[0] == "plugin":  # plugin sections: the registered section's dataclass decides
        if len(parts) < 3:
            return f"{dotted!r} is a section; name a key inside it (e.g. plugin.<section>.<key>)"
        try:
            obj = obj.section(parts[1])
        except ScscError as exc:
            return str(exc).split(": ", 1)[-1]
        parts = parts[2:]
        prefix = f"plugin.{dotted.split('.')[1]}"
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(obj)]
            if part not in names or i < len(parts) - 1:
                return f"unknown key {'.'.join(parts)!r} in section [{prefix}] (valid: {', '.join(names)})"
        return None
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        section = ".".join(parts[:i])
        if part not in names:
            if section == "loss":
                return f"unknown loss term {part!r} (valid: {', '.join(names)})"
            if section:
                return f"unknown key {part!r} in section [{section}] (valid: {', '.join(names)})"
            return f"unknown config section or key {part!r} (valid: {', '.join(names)})"
        obj = getattr(obj, part)
        if i < len(parts) - 1 and not dataclasses.is_dataclass(obj):
            return f"{'.'.join(parts[: i + 1])!r} is a value, not a section"
    if dataclasses.is_dataclass(obj):
        return f"{dotted!r} is a section; name a key inside it (e.g. {dotted}.<key>)"
    return None


def _value_error(dotted: str, value: Any) -> str | None:
    try:
        RunConfig().override({dotted: value})
    except ScscError as exc:
        return f"{dotted}: " + str(exc).split(": ")[-1]
    return None


# ----------------------------------------------------------------------------- parsing
def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    text = path.read_text()
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"at line (\d+), column (\d+)", msg)
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            lines = text.splitlines()
            shown = lines[line - 1] if 0 < line <= len(lines) else ""
            reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
            raise StudyError(
                f"{path}:{line}:{col}: invalid TOML: {reason}\n  {line} | {shown}\n"
                f"  {' ' * len(str(line))} | {' ' * (col - 1)}^"
            ) from None
        raise StudyError(f"{path}: invalid TOML: {msg}") from None


def load_study(
    path: str | Path,
    *,
    preset: str | None = None,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    epochs: int | None = None,
    registry=None,
) -> Study:
    """Parse and validate a study file; command-line ``preset``, ``seeds``, ``sets`` and ``epochs`` win."""
    path = Path(path)
    data, text = _read_toml(path)
    return build_study(
        data, source=path, text=text, preset=preset, seeds=seeds, sets=sets, epochs=epochs, registry=registry
    )


@dataclass(frozen=True)
class ReadOptions:
    """How :func:`study_from_data` reads its data files (as ``scsc.read`` with these arguments)."""

    layer: str | None = None
    label_key: str | None = None
    transpose: bool = False


def study_from_data(
    paths: list[str | Path],
    *,
    preset: str = "paper",
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    epochs: int | None = None,
    n_clusters: int | None = None,
    read: ReadOptions = ReadOptions(),
    registry=None,
) -> Study:
    """A study of a preset's variants on data files named on the command line, read as ``read`` says."""
    datasets: list[Any] = []
    for p in paths:
        datasets.append(
            {"path": str(p), **_dataset_options(read.layer, read.label_key, read.transpose, n_clusters)}
        )
    data = {"title": f"preset {preset!r}", "datasets": datasets, "preset": preset}
    return build_study(
        data, source=None, text=None, preset=preset, seeds=seeds, sets=sets, epochs=epochs, registry=registry
    )


def _dataset(
    entry: Any, index: int, base_dir: Path | None, lines: _Lines, problems: _Problems
) -> DatasetSpec | None:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        problems.add(
            lines.key("datasets"), f"datasets[{index}]: expected a path string or a table with 'path'"
        )
        return None
    line = lines.key(entry["path"]) or lines.key("datasets")
    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        problems.add(
            line, f"datasets[{index}]: unknown key(s) {', '.join(unknown)} (valid: {', '.join(DATASET_KEYS)})"
        )
    raw = Path(entry["path"]).expanduser()
    tried = []
    candidates = (
        [raw]
        if raw.is_absolute()
        else [c for c in ((base_dir / raw) if base_dir else None, Path.cwd() / raw) if c is not None]
    )
    path = None
    for cand in candidates:
        tried.append(str(cand))
        if cand.exists():
            path = cand.resolve()
            break
    if path is None:
        problems.add(
            line, f"dataset not found: {entry['path']} (looked for {' and '.join(dict.fromkeys(tried))})"
        )
        return None
    if path.is_file() and not path.name.lower().endswith(DATA_SUFFIXES):
        problems.add(
            line,
            f"dataset {entry['path']}: unsupported format (expected one of "
            f"{', '.join(DATA_SUFFIXES)} or a 10x mtx folder)",
        )
    k = entry.get("n_clusters")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
        problems.add(line, f"datasets[{index}]: n_clusters must be an integer of at least 2, got {k!r}")
        k = None
    name = entry.get("name") or path.name.split(".")[0]
    return DatasetSpec(
        name=str(name),
        path=path,
        layer=entry.get("layer"),
        label_key=entry.get("label_key"),
        transpose=bool(entry.get("transpose", False)),
        n_clusters=k,
    )


def _variant_sets(
    sets_raw: Any, label: str, at: Callable[..., int | None], registry, problems: _Problems
) -> dict[str, Any]:
    """The valid entries of a variant's ``set`` table (dotted key → value); ``at(*tokens)``: a problem's line."""
    sets: dict[str, Any] = {}
    if not isinstance(sets_raw, dict):
        problems.add(
            at("set"), f'{label}: set must be a table of dotted keys, e.g. set = {{ "loss.zinb" = 0 }}'
        )
        return sets
    for dotted, value in _flatten(sets_raw).items():
        last = dotted.split(".")[-1]
        why = check_key(dotted)
        if dotted == "seed":
            why = "the seed is set by the study's seeds list, not per variant"
        if why:
            problems.add(at(dotted, last), f"{label}: set key {dotted!r}: {why}")
            continue
        why = _value_error(dotted, value)
        if why:
            problems.add(at(dotted, last), f"{label}: set {why}")
            continue
        if dotted.startswith("components."):
            try:
                registry.get(dotted.split(".", 1)[1], value)
            except ScscError as exc:
                problems.add(at(dotted, last), f"{label}: {exc}")
                continue
        sets[dotted] = value
    return sets


def _variant(
    raw: Any, index: int, from_preset: bool, file_index: int, lines: _Lines, registry, problems: _Problems
) -> Variant | None:
    def at(*tokens: str) -> int | None:
        return None if from_preset else lines.variant(file_index, *tokens)

    if not isinstance(raw, dict):
        problems.add(at(), f"variants[{index}]: expected a table ([[variants]])")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(at("name"), f'variants[{index}]: every variant needs a non-empty name = "..."')
        return None
    label = f"variant {name!r}"
    unknown = [k for k in raw if k not in VARIANT_KEYS]
    for k in unknown:
        hint = (
            ' (use set = { "section.key" = value } for config values)'
            if k in {"loss", "model", "cluster"} or "." in k
            else ""
        )
        problems.add(at(k), f"{label}: unknown key {k!r}; valid: {', '.join(VARIANT_KEYS)}{hint}")
    components: dict[str, str] = {}
    for kind in COMPONENT_KEYS:
        if kind in raw:
            value = raw[kind]
            if not isinstance(value, str):
                problems.add(at(kind), f"{label}: {kind} must be a component name (a string)")
                continue
            try:
                registry.get(kind, value)
            except ScscError as exc:
                problems.add(at(f'"{value}"', kind), f"{label}: {exc}")
                continue
            components[kind] = value
    sets = _variant_sets(raw.get("set", {}), label, at, registry, problems)
    description = raw.get("description", "")
    return Variant(name=name.strip(), components=components, sets=sets, description=str(description))


def build_study(
    data: dict[str, Any],
    *,
    source: Path | None,
    text: str | None,
    preset: str | None = None,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    epochs: int | None = None,
    registry=None,
) -> Study:
    """Validate a parsed study dict (see the module docstring) into a :class:`Study`.

    Every problem is collected first and reported at once (:class:`StudyError`), in the order of the checks.
    """
    from ..plugins import get_registry

    registry = registry or get_registry()
    lines = _Lines(source, text)
    problems = _Problems(lines)
    base_dir = source.parent.resolve() if source is not None else None

    for key in data:
        if key not in TOP_KEYS:
            problems.add(lines.key(key), f"unknown top-level key {key!r}; valid: {', '.join(TOP_KEYS)}")
    datasets = _datasets(data.get("datasets"), base_dir, lines, problems)
    study_seeds = _seeds(seeds if seeds is not None else data.get("seeds", [0]), lines, problems)
    base = _base_config(data.get("base", {}), sets, epochs, registry, lines, problems)
    variants = _variants(data, preset or data.get("preset"), registry, lines, problems)
    # every cell must build into a valid config
    for v in variants:
        try:
            cfg = v.apply(base.copy())
            for kind in COMPONENT_KEYS:
                registry.get(kind, getattr(cfg.components, kind))
        except ScscError as exc:
            problems.add(None, f"variant {v.name!r}: {exc}")
    baseline = _baseline(data.get("baseline"), variants, lines, problems)
    problems.raise_if_any()
    title = str(data.get("title") or (source.stem if source else "ablation study"))
    return Study(
        datasets=datasets,
        seeds=study_seeds,
        variants=variants,
        base=base,
        baseline=baseline,
        title=title,
        source=source,
    )


def _datasets(raw_ds: Any, base_dir: Path | None, lines: _Lines, problems: _Problems) -> list[DatasetSpec]:
    """The valid entries of ``datasets`` (a path, a table or a list of them); names must be distinct."""
    datasets: list[DatasetSpec] = []
    if isinstance(raw_ds, (str, dict)):
        raw_ds = [raw_ds]
    if not raw_ds or not isinstance(raw_ds, list):
        problems.add(
            lines.key("datasets"),
            'datasets: give a non-empty list of data files, e.g. datasets = ["data.h5"]',
        )
        raw_ds = []
    for i, entry in enumerate(raw_ds):
        ds = _dataset(entry, i, base_dir, lines, problems)
        if ds is not None:
            datasets.append(ds)
    names = [d.name for d in datasets]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.add(
            lines.key("datasets"),
            f'two datasets are named {dup!r}; give them distinct names ({{ path = "...", name = "..." }})',
        )
    return datasets


def _seeds(raw_seeds: Any, lines: _Lines, problems: _Problems) -> list[int]:
    """The study's seeds (an integer or a list of non-negative integers), repeats dropped."""
    if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool):
        raw_seeds = [raw_seeds]
    if (
        not isinstance(raw_seeds, list)
        or not raw_seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw_seeds)
    ):
        problems.add(
            lines.key("seeds"),
            f"seeds: expected a non-empty list of non-negative integers, got {raw_seeds!r}",
        )
        raw_seeds = []
    elif len(set(raw_seeds)) != len(raw_seeds):
        problems.add(lines.key("seeds"), f"seeds: {raw_seeds!r} repeats a seed")
    return [int(s) for s in dict.fromkeys(raw_seeds)]


def _base_config(
    raw_base: Any, sets: list[str] | None, epochs: int | None, registry, lines: _Lines, problems: _Problems
) -> RunConfig:
    """The base config: defaults, the study's [base] tables, then the command line's ``sets``, ``epochs``."""
    base = RunConfig()
    if not isinstance(raw_base, dict):
        problems.add(lines.key("base"), "base: expected a table of config sections ([base.cluster] ...)")
        raw_base = {}
    for dotted, value in _flatten(raw_base).items():
        last = dotted.split(".")[-1]
        why = "the seed comes from the study's seeds list" if dotted == "seed" else check_key(dotted)
        why = why or _value_error(dotted, value)
        if why:
            problems.add(lines.base(last), f"[base] {why if why.startswith(dotted) else f'{dotted}: {why}'}")
            continue
        base.override({dotted: value})
    if sets:
        try:
            base.override(list(sets))
        except ScscError as exc:
            problems.add(None, str(exc))
    if epochs is not None:
        base.cluster.epochs = int(epochs)
    for kind in COMPONENT_KEYS:
        try:
            registry.get(kind, getattr(base.components, kind))
        except ScscError as exc:
            problems.add(lines.base(getattr(base.components, kind)), f"[base] {exc}")
    return base


def _variants(
    data: dict[str, Any], preset_name: str | None, registry, lines: _Lines, problems: _Problems
) -> list[Variant]:
    """The valid variants with distinct names: the preset's first, then the file's own."""
    raw_variants: list[tuple[Any, bool, int]] = []
    if preset_name is not None:
        if preset_name not in PRESETS:
            problems.add(lines.key("preset"), f"unknown preset {preset_name!r}; valid: {', '.join(PRESETS)}")
        else:
            raw_variants += [(v, True, -1) for v in preset_variants(preset_name)]
    file_variants = data.get("variants", [])
    if not isinstance(file_variants, list):
        problems.add(lines.key("variants"), "variants: expected an array of tables ([[variants]])")
        file_variants = []
    raw_variants += [(v, False, i) for i, v in enumerate(file_variants)]
    if not raw_variants and preset_name is None:
        problems.add(None, 'no variants: add [[variants]] tables or preset = "paper"')
    variants: list[Variant] = []
    for i, (raw, from_preset, file_index) in enumerate(raw_variants):
        v = _variant(raw, i, from_preset, file_index, lines, registry, problems)
        if v is None:
            continue
        if any(o.name == v.name for o in variants):
            problems.add(
                None if from_preset else lines.variant(file_index, "name"),
                f"variant name {v.name!r} is used twice",
            )
            continue
        variants.append(v)
    return variants


def _baseline(baseline: Any, variants: list[Variant], lines: _Lines, problems: _Problems) -> str:
    """The variant the summary compares against: ``baseline``, else ``full model``, else the first."""
    if baseline is not None and not any(v.name == baseline for v in variants):
        problems.add(
            lines.key("baseline"),
            f"baseline {baseline!r} is not a variant name (variants: {', '.join(v.name for v in variants)})",
        )
    if baseline is None:
        baseline = next((v.name for v in variants if v.name == FULL), variants[0].name if variants else "")
    return baseline


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0,1,2"`` or ``"0-4"`` → ``[0, 1, 2]`` / ``[0, 1, 2, 3, 4]``."""
    if text is None:
        return None
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(
                f"--seeds {text!r}: expected comma-separated integers such as 0,1,2 or a range 0-4"
            ) from None
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seed given")
    return seeds
