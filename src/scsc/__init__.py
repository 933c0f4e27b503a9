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

from .api import cluster, make_config, pretrain, run  # noqa: E402
from .config import RunConfig  # noqa: E402
from .data.io import read, write_h5ad  # noqa: E402
from .data.simulate import simulate  # noqa: E402
from .errors import ConfigError, InputError, ScscError  # noqa: E402
from .plugins import get_registry  # noqa: E402
from .session import RunControl, RunSession  # noqa: E402
from . import annotate  # noqa: E402,F401  (scsc.annotate.find_markers, annotate_clusters, transfer_labels)


def list_components() -> list[dict[str, str]]:
    """Every registered component as a list of dicts (kind, name, provider, summary)."""
    return [{"kind": c.kind, "name": c.name, "provider": c.provider, "summary": c.summary}
            for c in get_registry().all()]


__all__ = ["ConfigError", "InputError", "RunConfig", "ScscError", "__version__", "cluster", "list_components",
           "make_config", "pretrain", "read", "run", "RunControl", "RunSession", "simulate", "write_h5ad"]
