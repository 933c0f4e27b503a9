"""The pluggy component registry: built-in and third-party components register the same way."""

from .hookspecs import hookimpl, hookspec
from .manager import KINDS, Component, Registry, get_registry

__all__ = ["KINDS", "Component", "Registry", "get_registry", "hookimpl", "hookspec"]
