"""A small count simulator with known cell types, for demos and tests that must not need real data.

Counts are negative binomial (gamma–Poisson) around cell-type expression programs: every type up-regulates
its own set of marker genes, all genes carry a small type-specific log-fold noise, cells vary in library size,
and low means suffer extra dropout zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class Simulation:
    """Simulated counts (N × G int32), labels (N,), gene names (G,) and the planted markers per type."""

    counts: np.ndarray
    labels: np.ndarray
    genes: list[str]
    markers: dict[str, list[str]]

    def to_anndata(self) -> ad.AnnData:
        """AnnData with CSR counts, ``obs["label"]`` and ``uns["simulated_markers"]``."""
        a = ad.AnnData(X=sp.csr_matrix(self.counts.astype(np.float32)))
        a.obs_names = [f"cell{i}" for i in range(a.n_obs)]
        a.var_names = self.genes
        a.obs["label"] = pd.Categorical(self.labels)
        a.uns["simulated_markers"] = {k: list(v) for k, v in self.markers.items()}
        return a


def simulate(
    n_cells: int = 2000,
    n_types: int = 6,
    n_genes: int = 2000,
    n_markers: int = 25,
    marker_fold: float = 3.0,
    dispersion: float = 2.0,
    dropout: float = 0.3,
    seed: int = 0,
) -> Simulation:
    """Simulate ``n_cells`` × ``n_genes`` counts from ``n_types`` cell types.

    Args:
        n_markers: marker genes planted per type (disjoint sets).
        marker_fold: mean log2 fold change of a marker in its own type.
        dispersion: NB inverse dispersion θ (variance μ + μ²/θ).
        dropout: strength of extra zeros for lowly expressed entries.
    """
    if n_types < 1 or n_cells < n_types:
        raise ValueError("need at least one cell type and at least one cell per type")
    if n_types * n_markers > n_genes:
        raise ValueError(f"{n_types} types × {n_markers} markers need more than {n_genes} genes")
    rng = np.random.default_rng(seed)
    genes = [f"GENE{j:05d}" for j in range(n_genes)]
    type_names = [f"type_{k}" for k in range(n_types)]
    marker_idx = rng.permutation(n_genes)[: n_types * n_markers].reshape(n_types, n_markers)
    for k in range(n_types):
        for j, g in enumerate(marker_idx[k]):
            genes[g] = f"{type_names[k].upper().replace('_', '')}_M{j:02d}"

    base = np.exp(rng.normal(-1.0, 1.3, size=n_genes))
    log_fold = rng.normal(0.0, 0.25, size=(n_types, n_genes))
    for k in range(n_types):
        log_fold[k, marker_idx[k]] += np.log(2.0) * rng.normal(marker_fold, 0.5, size=n_markers)
    props = rng.dirichlet(np.full(n_types, 4.0))
    labels_idx = np.concatenate([np.arange(n_types), rng.choice(n_types, size=n_cells - n_types, p=props)])
    rng.shuffle(labels_idx)
    lib = np.exp(rng.normal(0.0, 0.4, size=n_cells))
    mu = lib[:, None] * base[None, :] * np.exp(log_fold[labels_idx])
    lam = rng.gamma(dispersion, mu / dispersion)
    counts = rng.poisson(lam)
    drop = rng.random(counts.shape) < dropout * np.exp(-mu)
    counts[drop] = 0
    markers = {type_names[k]: [genes[g] for g in marker_idx[k]] for k in range(n_types)}
    labels = np.array(type_names)[labels_idx]
    return Simulation(counts=counts.astype(np.int32), labels=labels, genes=genes, markers=markers)
