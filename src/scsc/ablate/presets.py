"""Built-in ablation studies: the published ablations of scSiameseClu as lists of variants.

A variant is a plain dict in the study-file format: ``name``, optional component names (``augment``,
``encoder``, ``fusion``, ``cluster``) and an optional ``set`` table of dotted config keys. The first variant of
every preset is the reference (``full model``) that the summary compares against.
"""

from __future__ import annotations

from typing import Any

FULL = "full model"

_CR_OFF = {
    "loss.cr_sample_ae": 0,
    "loss.cr_sample_graph": 0,
    "loss.cr_feature_ae": 0,
    "loss.cr_feature_graph": 0,
}

#: The paper's loss and module ablations (Xu et al. 2025, ablation tables), as scsc configs.
LOSSES: list[dict[str, Any]] = [
    {"name": FULL, "description": "dual augmentation, siamese encoder and fusion, Sinkhorn head"},
    {
        "name": "w/o siamese fusion",
        "fusion": "mean",
        "description": "mean of the branch embeddings: no adaptive fusion, propagation, attention or refinement terms",
    },
    {"name": "w/o ZINB", "set": {"loss.zinb": 0}, "description": "no ZINB likelihood of the raw counts"},
    {
        "name": "w/o clustering loss",
        "cluster": "kmeans",
        "description": "no clustering loss; KMeans on the final embedding Z beside the model input",
    },
    {
        "name": "w/o cross-correlation",
        "set": dict(_CR_OFF),
        "description": "no sample- or feature-level cross-correlation terms",
    },
    {
        "name": "w/o graph correlation",
        "set": {"loss.cr_sample_graph": 0, "loss.cr_feature_graph": 0},
        "description": "no cross-correlation terms of the graph branch",
    },
    {
        "name": "w/o propagation",
        "set": {"loss.prop": 0},
        "description": "no propagation regulariser (JS between H and ÂH)",
    },
    {
        "name": "w/o reconstruction",
        "set": {"loss.rec_x": 0, "loss.rec_graph": 0, "loss.rec_adj": 0},
        "description": "no expression, graph or adjacency reconstruction in the clustering stage",
    },
]

#: Augmentation swaps (``augment: dual`` is the full model).
AUGMENT: list[dict[str, Any]] = [
    {"name": f"augment: {name}", "augment": name, "description": text}
    for name, text in (
        ("dual", "expression noise + edge-removal and diffusion graph views (default)"),
        ("noise", "expression noise only"),
        ("graph", "graph views only"),
        ("none", "no augmentation"),
    )
]

#: Clustering-head swaps (``head: sinkhorn`` is the full model, ``head: kmeans`` the same as w/o clustering loss).
HEADS: list[dict[str, Any]] = [
    {"name": f"head: {name}", "cluster": name, "description": text}
    for name, text in (
        ("sinkhorn", "optimal-transport target (default)"),
        ("dec", "DEC sharpened target"),
        ("kmeans", "KMeans on Z beside the model input, no clustering loss"),
    )
] + [
    {
        "name": "head: Z alone",
        "set": {"cluster.input_weight": 0, "cluster.kmeans_restarts": 10},
        "description": "Sinkhorn head on Z without the model input beside it, KMeans start with 10 restarts "
        "(the published head)",
    }
]

PRESETS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "paper": (
        "every published ablation: losses and modules, augmentation swaps, head swaps",
        LOSSES + AUGMENT + HEADS,
    ),
    "losses": ("the loss and module ablations only", LOSSES),
    "augment": ("full model and the augmentation swaps", [LOSSES[0], *AUGMENT]),
    "heads": ("full model and the clustering-head swaps", [LOSSES[0], *HEADS]),
}


def preset_variants(name: str) -> list[dict[str, Any]]:
    """The variants of preset ``name`` (deep copies); :class:`KeyError` if unknown."""
    import copy

    return copy.deepcopy(PRESETS[name][1])


def preset_names() -> list[str]:
    return list(PRESETS)
