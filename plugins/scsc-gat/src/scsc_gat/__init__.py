"""scsc-gat: a graph-attention encoder plugin for scsc (component ``encoder = "gat"``)."""

__version__ = "0.1.0"
