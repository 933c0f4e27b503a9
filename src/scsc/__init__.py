"""scsc: scSiameseClu single-cell clustering on AnnData, in linear memory.

Public API::

    import scsc
    adata = scsc.read("data.h5")              # .h5 / .h5ad / 10x / csv → AnnData of raw counts
    adata = scsc.cluster(adata, n_clusters=8)
    scsc.list_components()                     # registered augmenters, encoders, fusions, heads
"""

__version__ = "0.1.0"

from .threads import apply_wait_policy  # noqa: E402  (before torch is imported: OpenMP reads it at start)

apply_wait_policy()

from .errors import ConfigError, InputError, ScscError

# The rest loads on first use (PEP 562): torch, scanpy and scikit-learn take about 5 s to import, and the
# command line's --help, `scsc info` or a bad argument should not wait for them.
_LAZY = {
    "cluster": "api", "make_config": "api", "pretrain": "api", "run": "api",
    "RunConfig": "config",
    "read": "data.io", "write_h5ad": "data.io",
    "simulate": "data.simulate",
    "get_registry": "plugins",
    "RunControl": "session", "RunSession": "session",
}


def __getattr__(name: str):
    """The public names above, and every submodule (``scsc.annotate.find_markers``, ``scsc.api.run``, …), as
    ``import scsc`` gave them when it imported everything at once."""
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'scsc' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"annotate"})


def list_components() -> list[dict[str, str]]:
    """Every registered component as a list of dicts (kind, name, provider, summary)."""
    from .plugins import get_registry

    return [{"kind": c.kind, "name": c.name, "provider": c.provider, "summary": c.summary}
            for c in get_registry().all()]


__all__ = ["ConfigError", "InputError", "RunConfig", "ScscError", "__version__", "cluster", "list_components",
           "make_config", "pretrain", "read", "run", "RunControl", "RunSession", "simulate", "write_h5ad"]
