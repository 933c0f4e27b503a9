"""scsc-leiden: a Leiden-initialised clustering head registered with scsc through the ``scsc`` entry points."""

from .head import LeidenHead, partition

__version__ = "0.1.0"

__all__ = ["LeidenHead", "__version__", "partition"]
