"""Reading, preprocessing and the cell graph: the data path (METHOD §1–3)."""

from .._lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)  # scsc.data.<module> after a bare ``import scsc``
