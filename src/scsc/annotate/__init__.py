"""Marker genes, cell-type annotation and reference label transfer for clustered AnnData.

>>> import scsc.annotate as sa
>>> markers = sa.find_markers(result, "scsc_cluster")                # Wilcoxon on log-normalised counts
>>> ann = sa.annotate_clusters(result, "markers.toml")              # obs["scsc_cell_type"]
>>> tr = sa.transfer_labels(result, reference, key="cell_type")     # obs["scsc_transfer"], ..._prob
>>> cv = sa.cross_validate(reference, key="cell_type")              # accuracy, macro_f1 (5-fold)

The command line is ``scsc annotate`` (docs/annotate.md).
"""

from ._common import CLUSTER_KEY, check_clustered, has_gene_names, log_normalize, read_result
from .celltype import (
    UNASSIGNED,
    Annotation,
    AnnotationOptions,
    annotate_clusters,
    match_marker_sets,
    read_marker_sets,
)
from .markers import MARKER_COLUMNS, METHODS, find_markers, top_markers
from .reference import (
    ClassifierOptions,
    ReferenceClassifier,
    Transfer,
    cross_validate,
    shared_genes,
    transfer_labels,
)

__all__ = [
    "CLUSTER_KEY",
    "MARKER_COLUMNS",
    "METHODS",
    "UNASSIGNED",
    "Annotation",
    "AnnotationOptions",
    "ClassifierOptions",
    "ReferenceClassifier",
    "Transfer",
    "annotate_clusters",
    "check_clustered",
    "cross_validate",
    "find_markers",
    "has_gene_names",
    "log_normalize",
    "match_marker_sets",
    "read_marker_sets",
    "read_result",
    "shared_genes",
    "top_markers",
    "transfer_labels",
]
