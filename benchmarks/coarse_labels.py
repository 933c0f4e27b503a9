"""A coarser, lineage-level annotation of each tuning dataset, for choosing defaults at two granularities.

An annotation's granularity is the annotator's choice, and a default chosen on one level alone can favour
splitting or lumping. Each tuning dataset is therefore also scored with its types grouped into lineages:
Zheng's nine sort gates into B cells, monocytes, NK cells, CD4 T and CD8 T cells (5); Haber's 15 epithelial
types into stem/transit-amplifying, enterocyte progenitors, enterocytes, and the four secretory types (7);
Camp's seven groups into apical progenitors, basal progenitors and neurons (3); Ding's nine PBMC types into B
cells, monocytes (CD14+, CD16+), dendritic cells (conventional, plasmacytoid), NK cells, CD4 T, cytotoxic T cells
and megakaryocytes (7), grouped as Zheng's; van Galen's 15 bone-marrow types into stem/progenitor cells (HSC,
Prog), myeloid cells (GMP, ProMono, Mono), dendritic cells (cDC, pDC), erythroid cells (earlyEry, lateEry), B
lineage (ProB, B, Plasma) and T/NK cells (T, CTL, NK) (6). The groups follow the type names and were fixed
before anything was scored at that level. Tuning collection only: the scoring set keeps its own annotation.
"""

from __future__ import annotations

import numpy as np

_ZHENG = {
    "bcells": "B",
    "monocytes": "monocyte",
    "nk": "NK",
    "memoryt": "CD4 T",
    "naivet": "CD4 T",
    "regulatoryt": "CD4 T",
    "thelper": "CD4 T",
    "cytotoxict": "CD8 T",
    "naivecytotoxic": "CD8 T",
}


_DING = {
    "B cell": "B",
    "CD14+ monocyte": "monocyte",
    "CD16+ monocyte": "monocyte",
    "Dendritic cell": "DC",
    "Plasmacytoid dendritic cell": "DC",
    "Natural killer cell": "NK",
    "CD4+ T cell": "CD4 T",
    "Cytotoxic T cell": "CD8 T",
    "Megakaryocyte": "megakaryocyte",
}
_VAN_GALEN = {
    "HSC": "stem/progenitor",
    "Prog": "stem/progenitor",
    "GMP": "myeloid",
    "ProMono": "myeloid",
    "Mono": "myeloid",
    "cDC": "DC",
    "pDC": "DC",
    "earlyEry": "erythroid",
    "lateEry": "erythroid",
    "ProB": "B lineage",
    "B": "B lineage",
    "Plasma": "B lineage",
    "T": "T/NK",
    "CTL": "T/NK",
    "NK": "T/NK",
}


def _haber(label: str) -> str:
    if label.startswith(("Stem", "TA.")):
        return "stem/TA"
    if label.startswith("Enterocyte.Progenitor"):
        return "enterocyte progenitor"
    if label.startswith("Enterocyte"):
        return "enterocyte"
    return label  # Goblet, Paneth, Endocrine, Tuft


def _camp(label: str) -> str:
    return label.rstrip("0123456789")  # AP1, AP2 → AP; BP1, BP2 → BP; N1–N3 → N


COARSE = {
    "Zheng_sortedPBMC_MUDAN": _ZHENG.__getitem__,
    "Haber_intestine_10x_scDesign2": _haber,
    "Camp_fetal_brain_SOUP": _camp,
    "Ding2020_PBMC_10xv2v3_scDesign3Py": _DING.__getitem__,
    "vanGalen2019_BM_SeqWell": _VAN_GALEN.__getitem__,
}


def coarse_labels(stem: str, labels: np.ndarray) -> np.ndarray:
    """The lineage-level labels (N,) of tuning dataset ``stem`` from its own labels (N,).

    Raises KeyError for a dataset without a lineage map (the scoring set has none, on purpose)."""
    group = COARSE[stem]
    return np.array([group(v.decode() if isinstance(v, bytes) else str(v)) for v in labels], dtype=object)
