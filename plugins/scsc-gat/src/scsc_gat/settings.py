"""``[plugin.gat]``: the plugin's config section, importable without torch-geometric."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GATSettings:
    """``[plugin.gat]``: attention heads of the first layer, its width per head, attention dropout."""

    heads: int = 4
    hidden: int = 64
    dropout: float = 0.0
