"""Submodules as attributes on first access (PEP 562), for packages that import nothing when imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def submodule_getattr(package: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``package.name`` imports the submodule ``name`` the first time
    (importing it also binds it on the package, so later lookups never come back here); anything else raises
    AttributeError."""

    def __getattr__(name: str) -> Any:
        import importlib
        import importlib.util

        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
