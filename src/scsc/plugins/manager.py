"""Plugin manager: registers the built-ins through the public hook, then entry points of group ``scsc``.

Set ``SCSC_BLOCK_PLUGINS=name1,name2`` to skip named entry-point plugins (or built-in modules, by their
registered name such as ``scsc.components.cluster``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from ..errors import ConfigError
from . import hookspecs
from .hookspecs import PROJECT

KINDS = ("augment", "encoder", "fusion", "cluster")
BLOCK_ENV = "SCSC_BLOCK_PLUGINS"
BUILTIN_MODULES = (
    "scsc.components.augment",
    "scsc.components.encoder",
    "scsc.components.fusion",
    "scsc.components.cluster",
)


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str
    provider: str


class Registry:
    """Components by kind and name; filled by plugins through ``scsc_register_components``."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Component] = {}
        #: Config sections registered by plugins: name → dataclass (``RunConfig.section(name)``).
        self.config_sections: dict[str, type] = {}
        self._provider = "?"

    def add_config_section(self, name: str, settings: type) -> None:
        """Register ``settings`` (a dataclass whose fields all have defaults) as config section
        ``[plugin.<name>]``; its values are validated and coerced like the built-in sections'."""
        import dataclasses

        if not dataclasses.is_dataclass(settings):
            raise ConfigError(f"plugin {self._provider}: config section {name!r} must be a dataclass")
        if name in self.config_sections:
            raise ConfigError(f"config section {name!r} is registered twice (again by {self._provider})")
        try:
            settings()
        except TypeError:
            raise ConfigError(
                f"plugin {self._provider}: every field of config section {name!r} needs a default"
            ) from None
        self.config_sections[name] = settings

    def add(self, kind: str, name: str, factory: Callable[..., Any], summary: str = "") -> None:
        """Register ``factory`` as component ``name`` of ``kind``; a clash names both providers."""
        if kind not in KINDS:
            raise ConfigError(
                f"plugin {self._provider}: unknown component kind {kind!r} (kinds: {', '.join(KINDS)})"
            )
        key = (kind, name)
        if key in self._items:
            other = self._items[key].provider
            raise ConfigError(
                f"{kind} component {name!r} is registered twice: by {other} and by {self._provider}"
            )
        self._items[key] = Component(
            kind, name, factory, summary.strip().splitlines()[0] if summary else "", self._provider
        )

    def get(self, kind: str, name: str) -> Component:
        """The component, or a :class:`ConfigError` listing the valid names."""
        try:
            return self._items[(kind, name)]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "none"
            raise ConfigError(f"unknown {kind} component {name!r}; valid: {valid}") from None

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self._items if k == kind)

    def all(self) -> list[Component]:
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(self._items.values(), key=lambda c: (order[c.kind], c.name))

    def build(self, kind: str, name: str, config: Any, **context: Any) -> Any:
        """Instantiate component ``name`` of ``kind`` with the run config and context."""
        return self.get(kind, name).factory(config, **context)


def _blocked() -> set[str]:
    return {p.strip() for p in os.environ.get(BLOCK_ENV, "").split(",") if p.strip()}


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the built-ins and entry-point plugins registered and validated."""
    import importlib

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = _blocked()
    for name in blocked:
        pm.set_blocked(name)
    for modname in BUILTIN_MODULES:
        # A blocked name is skipped by pluggy itself (register returns None).
        pm.register(importlib.import_module(modname), name=modname)
    pm.load_setuptools_entrypoints(PROJECT)
    pm.check_pending()
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Ask every registered plugin to add its components."""
    pm = pm or make_plugin_manager()
    registry = Registry()
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        impl = getattr(plugin, "scsc_register_components", None)
        if impl is None:
            continue
        dist = dict(pm.list_plugin_distinfo()).get(plugin)
        registry._provider = f"{name} ({dist.project_name} {dist.version})" if dist else name
        impl(registry=registry)
    registry._provider = "?"
    return registry


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry (built once; ``refresh=True`` re-reads plugins and the block list)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = build_registry()
    return _REGISTRY
