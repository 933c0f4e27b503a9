"""scsc: scSiameseClu single-cell clustering on AnnData, in linear memory.

Public API::

    import scsc
    adata = scsc.read("data.h5")              # .h5 / .h5ad / 10x / csv → AnnData of raw counts
    adata = scsc.cluster(adata, n_clusters=8)
    scsc.list_components()                     # registered augmenters, encoders, fusions, heads
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .threads import apply_wait_policy

apply_wait_policy()  # before torch is imported: OpenMP reads the wait policy when it starts

from ._lazy import submodule_getattr  # noqa: E402 (after apply_wait_policy(), which must run first)
from .errors import ConfigError, InputError, ScscError  # noqa: E402 (after apply_wait_policy())

if TYPE_CHECKING:  # what static tools and IDEs see; at run time the names below load on first access
    from .api import cluster, make_config, pretrain, run
    from .config import RunConfig
    from .data.io import read, write_h5ad
    from .data.simulate import simulate
    from .plugins import get_registry  # noqa: F401  (a public name of the package, not of __all__)
    from .session import RunControl, RunSession

# The rest loads on first use (PEP 562): torch, scanpy and scikit-learn take about 5 s to import, and the
# command line's --help, `scsc info` or a bad argument should not wait for them.
_LAZY = {
    "cluster": "api",
    "make_config": "api",
    "pretrain": "api",
    "run": "api",
    "RunConfig": "config",
    "read": "data.io",
    "write_h5ad": "data.io",
    "simulate": "data.simulate",
    "get_registry": "plugins",
    "RunControl": "session",
    "RunSession": "session",
}
_submodule = submodule_getattr(__name__)


def __getattr__(name: str):
    """The public names above, and every submodule (``scsc.annotate.find_markers``, ``scsc.api.run``,
    ``scsc.data.io``, …), as ``import scsc`` gave them when it imported everything at once."""
    import importlib

    if name not in _LAZY:
        return _submodule(name)
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"annotate"})


def list_components() -> list[dict[str, str]]:
    """Every registered component as a list of dicts (kind, name, provider, summary)."""
    from .plugins import get_registry

    return [
        {"kind": c.kind, "name": c.name, "provider": c.provider, "summary": c.summary}
        for c in get_registry().all()
    ]


__all__ = [
    "ConfigError",
    "InputError",
    "RunConfig",
    "RunControl",
    "RunSession",
    "ScscError",
    "__version__",
    "cluster",
    "list_components",
    "make_config",
    "pretrain",
    "read",
    "run",
    "simulate",
    "write_h5ad",
]
