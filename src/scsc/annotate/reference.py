"""Reference classification: train on a labelled reference, transfer labels to query cells.

Pipeline (fitted on the reference only): shared genes → size factors to the reference's median library
size + ``log1p`` (METHOD §1) → highly variable genes of the reference (``n_hvg``) → scale (clip 10) →
PCA (``n_pcs``) → multinomial logistic regression (scikit-learn). The query goes through the same fitted
transforms. :func:`cross_validate` refits the whole pipeline inside every fold (stratified k-fold).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.io import looks_like_counts
from ..errors import InputError
from ._common import has_gene_names, size_factor_log1p

TRANSFER_KEY = "scsc_transfer"


@dataclass
class ReferenceClassifier:
    """A fitted reference pipeline (module docstring); :meth:`predict_proba` takes the shared genes."""

    genes: list[str]
    target: float
    hvg: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    pca: object
    clf: object
    classes: np.ndarray

    def transform(self, x: sp.csr_matrix, counts: bool) -> np.ndarray:
        """N × len(genes) expression (counts or log-normalised) → N × n_pcs."""
        lx = size_factor_log1p(x, self.target)[0] if counts else sp.csr_matrix(x, dtype=np.float32)
        # cells × reference HVGs (N × ≤2000): linear in N
        dense = np.asarray(lx[:, self.hvg].toarray(), dtype=np.float64)
        z = np.clip((dense - self.mean) / self.std, -10, 10)
        return self.pca.transform(z)

    def predict_proba(self, x: sp.csr_matrix, counts: bool) -> np.ndarray:
        """N × C class probabilities (columns: :attr:`classes`)."""
        return self.clf.predict_proba(self.transform(x, counts))


def _highly_variable(lx: sp.csr_matrix, ok: np.ndarray, n_hvg: int) -> np.ndarray:
    """Column indices of the ``n_hvg`` most variable genes among columns ``ok`` of the log-normalised ``lx``
    (N × G; Seurat flavour), or all of ``ok`` when there are no more."""
    import scanpy as sc

    if ok.size <= n_hvg:
        return ok
    tmp = ad.AnnData(X=lx[:, ok])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_hvg, flavor="seurat")
    return ok[tmp.var["highly_variable"].to_numpy()]


def fit_classifier(
    x: sp.csr_matrix,
    y: np.ndarray,
    genes: list[str],
    counts: bool,
    *,
    n_hvg: int = 2000,
    n_pcs: int = 50,
    seed: int = 0,
    C: float = 1.0,
) -> ReferenceClassifier:
    """Fit the pipeline on reference expression ``x`` (N × G shared genes) with labels ``y`` (N,)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    if counts:
        lx, target = size_factor_log1p(x)
    else:
        lx, target = sp.csr_matrix(x, dtype=np.float32), 1.0
    n_cells_expr = np.asarray((lx > 0).sum(axis=0)).ravel()
    ok = np.flatnonzero(n_cells_expr >= (3 if lx.shape[0] >= 30 else 1))
    if ok.size < 2:
        raise InputError(
            "fewer than 2 shared genes are expressed in the reference; cannot train a classifier"
        )
    hvg = _highly_variable(lx, ok, n_hvg)
    # cells × reference HVGs (N × ≤2000): linear in N
    dense = np.asarray(lx[:, hvg].toarray(), dtype=np.float64)
    mean = dense.mean(axis=0)
    std = dense.std(axis=0)
    std[std == 0] = 1.0
    z = np.clip((dense - mean) / std, -10, 10)
    n_comp = int(max(1, min(n_pcs, z.shape[0] - 1, z.shape[1] - 1)))
    pca = PCA(
        n_components=n_comp,
        svd_solver="randomized" if n_comp < min(z.shape) // 2 else "full",
        random_state=seed,
    )
    emb = pca.fit_transform(z)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny folds
        clf.fit(emb, y)
    return ReferenceClassifier(
        genes=list(genes),
        target=float(target),
        hvg=hvg,
        mean=mean,
        std=std,
        pca=pca,
        clf=clf,
        classes=clf.classes_,
    )


def shared_genes(query: ad.AnnData, reference: ad.AnnData) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Column indices of the genes both share (exact names, else case-insensitive), and their names.

    Raises :class:`InputError` when either side has no gene names or no gene is shared.
    """
    if not has_gene_names(query):
        raise InputError(
            "the query has no gene names (genes are indices only, as in the shared .h5 files), "
            "so its genes cannot be matched to the reference; use --cv alone, or data with "
            "gene names"
        )
    if not has_gene_names(reference):
        raise InputError(
            "the reference has no gene names (genes are indices only), so its genes cannot be "
            "matched to the query"
        )
    qn = pd.Index([str(g) for g in query.var_names])
    rn = pd.Index([str(g) for g in reference.var_names])
    common = qn.intersection(rn, sort=False)
    if len(common) == 0:
        qu, ru = qn.str.upper(), rn.str.upper()
        if qu.is_unique and ru.is_unique:
            common_u = qu.intersection(ru, sort=False)
            if len(common_u):
                return qu.get_indexer(common_u), ru.get_indexer(common_u), list(qn[qu.get_indexer(common_u)])
        raise InputError(
            f"the reference shares no gene with the query ({len(qn)} query genes, e.g. "
            f"{', '.join(qn[:3])}; {len(rn)} reference genes, e.g. {', '.join(rn[:3])})"
        )
    return qn.get_indexer(common), rn.get_indexer(common), list(common)


def _labels(reference: ad.AnnData, key: str) -> np.ndarray:
    if key not in reference.obs:
        cols = ", ".join(map(str, reference.obs.columns)) or "none"
        raise InputError(f"the reference has no obs column {key!r} with cell types; obs columns: {cols}")
    y = reference.obs[key]
    if y.isna().any():
        raise InputError(f"the reference column {key!r} has {int(y.isna().sum())} missing labels")
    y = y.astype(str).to_numpy()
    if len(np.unique(y)) < 2:
        raise InputError(
            f"the reference column {key!r} holds a single cell type; a classifier needs at least 2"
        )
    return y


@dataclass
class Transfer:
    """What :func:`transfer_labels` found.

    Attributes:
        labels: (N,) predicted reference type per query cell (``unassigned`` below ``min_probability``).
        probability: (N,) probability of the predicted type.
        proba: N × C probabilities (columns: reference types).
        genes: shared genes used (names in the query).
        n_hvg: genes the classifier used (reference HVGs among the shared genes).
        model: the fitted :class:`ReferenceClassifier`.
    """

    labels: np.ndarray
    probability: np.ndarray
    proba: pd.DataFrame
    genes: list[str]
    n_hvg: int
    model: ReferenceClassifier


@dataclass(frozen=True)
class ClassifierOptions:
    """Sizes of the reference pipeline of :func:`transfer_labels` (module docstring).

    Attributes:
        n_hvg: highly variable genes of the reference (among the shared genes) the classifier uses.
        n_pcs: PCA components fitted on the reference.
    """

    n_hvg: int = 2000
    n_pcs: int = 50


def transfer_labels(
    query: ad.AnnData,
    reference: ad.AnnData,
    key: str = "cell_type",
    *,
    layer: str | None = None,
    min_probability: float = 0.0,
    key_added: str = TRANSFER_KEY,
    seed: int = 0,
    classifier: ClassifierOptions = ClassifierOptions(),
) -> Transfer:
    """Train a classifier on ``reference`` (labels in ``obs[key]``) and label every cell of ``query``.

    Args:
        query: N cells × G genes, raw counts (or log-normalised values) in ``X`` or ``layers[layer]``.
            Changed in place: ``obs[key_added]`` (categorical predicted type), ``obs[key_added + "_prob"]``
            (its probability) and ``obsm[key_added + "_proba"]`` (N × C DataFrame).
        reference: R cells × G' genes, raw counts (or log-normalised) in ``X``, types in ``obs[key]``.
        min_probability: cells whose best probability is below this are ``unassigned``.
        classifier: highly variable genes and PCA components of the pipeline (:class:`ClassifierOptions`).

    Returns:
        A :class:`Transfer`.
    """
    y = _labels(reference, key)
    qi, ri, genes = shared_genes(query, reference)
    qx = query.layers[layer] if layer is not None else query.X
    qx = sp.csr_matrix(qx)[:, qi]
    rx = sp.csr_matrix(reference.X)[:, ri]
    r_counts = looks_like_counts(ad.AnnData(X=rx))
    q_counts = looks_like_counts(ad.AnnData(X=qx))
    model = fit_classifier(rx, y, genes, r_counts, n_hvg=classifier.n_hvg, n_pcs=classifier.n_pcs, seed=seed)
    proba = model.predict_proba(qx, q_counts)
    best = proba.argmax(axis=1)
    prob = proba[np.arange(len(best)), best]
    labels = model.classes[best].astype(object)
    if min_probability > 0:
        labels = np.where(prob < min_probability, "unassigned", labels)
    cats = [str(c) for c in model.classes] + (["unassigned"] if (labels == "unassigned").any() else [])
    proba_df = pd.DataFrame(proba, index=query.obs_names, columns=[str(c) for c in model.classes])
    query.obs[key_added] = pd.Categorical(labels, categories=cats)
    query.obs[f"{key_added}_prob"] = prob.astype(np.float32)
    query.obsm[f"{key_added}_proba"] = proba_df
    return Transfer(
        labels=labels, probability=prob, proba=proba_df, genes=genes, n_hvg=len(model.hvg), model=model
    )


def cross_validate(
    reference: ad.AnnData,
    key: str = "cell_type",
    *,
    n_splits: int = 5,
    n_hvg: int = 2000,
    n_pcs: int = 50,
    seed: int = 0,
) -> dict:
    """Stratified ``n_splits``-fold cross-validated accuracy and macro-F1 of the classifier on ``reference``.

    The whole pipeline (normalisation target, HVGs, scaling, PCA, logistic regression) is refitted on the
    training part of every fold. Folds are fewer than ``n_splits`` when the largest type has fewer cells.

    Returns:
        dict with ``accuracy``, ``macro_f1`` (pooled out-of-fold predictions), ``fold_accuracy`` and
        ``fold_macro_f1`` (lists), ``n_splits``, ``n_cells``, ``n_types``, ``per_type`` (type → precision,
        recall, f1, support), ``small_types`` (types with fewer cells than folds) and ``predictions`` (R,).
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    y = _labels(reference, key)
    types, sizes = np.unique(y, return_counts=True)
    k = int(min(n_splits, sizes.max()))
    if k < 2:
        raise InputError("cross-validation needs a cell type with at least 2 cells")
    x = sp.csr_matrix(reference.X)
    counts = looks_like_counts(ad.AnnData(X=x))
    genes = [str(g) for g in reference.var_names]
    pred = np.empty(len(y), dtype=object)
    fold_acc, fold_f1 = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # StratifiedKFold warns about types smaller than k
        splits = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    for train, test in splits:
        model = fit_classifier(x[train], y[train], genes, counts, n_hvg=n_hvg, n_pcs=n_pcs, seed=seed)
        p = model.classes[model.predict_proba(x[test], counts).argmax(axis=1)]
        pred[test] = p
        fold_acc.append(float(accuracy_score(y[test], p)))
        fold_f1.append(float(f1_score(y[test], p, average="macro", labels=types, zero_division=0)))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred.astype(str), labels=types, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred.astype(str))),
        "macro_f1": float(f1_score(y, pred.astype(str), average="macro", labels=types, zero_division=0)),
        "fold_accuracy": fold_acc,
        "fold_macro_f1": fold_f1,
        "n_splits": k,
        "n_cells": len(y),
        "n_types": len(types),
        "per_type": {
            str(t): {"precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)}
            for t, a, b, c, d in zip(types, prec, rec, f1, sup, strict=True)
        },
        "small_types": [str(t) for t, s in zip(types, sizes, strict=True) if s < k],
        "predictions": pred.astype(str),
    }
