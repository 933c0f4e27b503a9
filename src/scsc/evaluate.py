"""Scores against true labels: only ever called on a final result, never during training."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics


def _codes(values) -> np.ndarray:
    _, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes


def cluster_accuracy(y_true, y_pred) -> tuple[float, np.ndarray]:
    """Accuracy under the best one-to-one matching of clusters to labels (Hungarian); also the mapped labels."""
    t, p = _codes(y_true), _codes(y_pred)
    size = max(t.max(), p.max()) + 1
    w = np.zeros((size, size), dtype=np.int64)
    np.add.at(w, (p, t), 1)
    rows, cols = linear_sum_assignment(-w)
    mapping = dict(zip(rows, cols, strict=True))
    mapped = np.array([mapping[c] for c in p])
    return float((mapped == t).mean()), mapped


def score(y_true, y_pred) -> dict[str, float]:
    """ACC (Hungarian), NMI, ARI and macro-F1 of predicted clusters (N,) against true labels (N,)."""
    t = _codes(y_true)
    acc, mapped = cluster_accuracy(y_true, y_pred)
    return {
        "acc": acc,
        "nmi": float(metrics.normalized_mutual_info_score(t, _codes(y_pred))),
        "ari": float(metrics.adjusted_rand_score(t, _codes(y_pred))),
        "f1": float(metrics.f1_score(t, mapped, average="macro")),
    }
