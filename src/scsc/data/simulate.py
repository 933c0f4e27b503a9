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

#: Cells generated at a time. The first block draws from the seed's own stream exactly as the former
#: all-at-once simulator did, so simulations of up to this many cells are unchanged; every later block has
#: its own stream derived from the seed, so peak memory is one block's whatever the number of cells.
BLOCK_ROWS = 4096


@dataclass
class Simulation:
    """Simulated counts (N × G int32 CSR), labels (N,), gene names (G,) and the planted markers per type."""

    counts: sp.csr_matrix
    labels: np.ndarray
    genes: list[str]
    markers: dict[str, list[str]]

    def to_anndata(self) -> ad.AnnData:
        """AnnData with float32 CSR counts (N × G), ``obs["label"]`` and ``uns["simulated_markers"]``."""
        a = ad.AnnData(X=self.counts.astype(np.float32))
        a.obs_names = [f"cell{i}" for i in range(a.n_obs)]
        a.var_names = self.genes
        a.obs["label"] = pd.Categorical(self.labels)
        a.uns["simulated_markers"] = {k: list(v) for k, v in self.markers.items()}
        return a


@dataclass(frozen=True)
class SimulationOptions:
    """Rarely changed settings of the count model of :func:`simulate`.

    Attributes:
        marker_fold: mean log2 fold change of a marker in its own type.
        dispersion: NB inverse dispersion θ (variance μ + μ²/θ).
        dropout: strength of extra zeros for lowly expressed entries.
    """

    marker_fold: float = 3.0
    dispersion: float = 2.0
    dropout: float = 0.3


def simulate(
    n_cells: int = 2000,
    n_types: int = 6,
    n_genes: int = 2000,
    n_markers: int = 25,
    *,
    seed: int = 0,
    depth: float = 1.0,
    options: SimulationOptions = SimulationOptions(),
) -> Simulation:
    """Simulate ``n_cells`` × ``n_genes`` counts from ``n_types`` cell types, in blocks of BLOCK_ROWS cells.

    Memory is one dense block (BLOCK_ROWS × n_genes, a few float64 arrays) plus the sparse result.

    Args:
        n_markers: marker genes planted per type (disjoint sets).
        depth: library-size scale; every cell's expected counts are multiplied by it. At the other defaults
            1.0 gives about 70 % zeros and a median of ~1,800 counts per cell (2,000 genes); 0.1 gives about
            94 % zeros, like droplet (10x) data.
        options: marker fold change, NB dispersion and dropout (:class:`SimulationOptions`).

    Returns:
        a :class:`Simulation` whose ``counts`` is an int32 CSR matrix of shape (n_cells, n_genes).
    """
    if n_types < 1 or n_cells < n_types:
        raise ValueError("need at least one cell type and at least one cell per type")
    if n_types * n_markers > n_genes:
        raise ValueError(f"{n_types} types × {n_markers} markers need more than {n_genes} genes")
    if not depth > 0 or not np.isfinite(depth):
        raise ValueError(f"depth must be a positive number, not {depth}")
    rng = np.random.default_rng(seed)
    # every draw below comes from ``rng`` in this fixed order: it is what makes a seed give the same data
    type_names = [f"type_{k}" for k in range(n_types)]
    genes, marker_idx = _plant_markers(rng, type_names, n_genes, n_markers)
    base, log_fold = _type_programs(rng, marker_idx, n_genes, options.marker_fold)
    props = rng.dirichlet(np.full(n_types, 4.0))
    labels_idx = np.concatenate([np.arange(n_types), rng.choice(n_types, size=n_cells - n_types, p=props)])
    rng.shuffle(labels_idx)
    lib = np.exp(rng.normal(0.0, 0.4, size=n_cells)) * depth
    blocks = []
    for b, lo in enumerate(range(0, n_cells, BLOCK_ROWS)):
        hi = min(lo + BLOCK_ROWS, n_cells)
        block_rng = rng if b == 0 else np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,)))
        blocks.append(
            _count_block(
                block_rng, lib[lo:hi], base, log_fold[labels_idx[lo:hi]], options.dispersion, options.dropout
            )
        )
    counts = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
    markers = {type_names[k]: [genes[g] for g in marker_idx[k]] for k in range(n_types)}
    labels = np.array(type_names)[labels_idx]
    return Simulation(counts=counts, labels=labels, genes=genes, markers=markers)


def _plant_markers(
    rng: np.random.Generator, type_names: list[str], n_genes: int, n_markers: int
) -> tuple[list[str], np.ndarray]:
    """Gene names (G,) with the markers renamed after their type, and marker columns (T × n_markers)."""
    genes = [f"GENE{j:05d}" for j in range(n_genes)]
    marker_idx = rng.permutation(n_genes)[: len(type_names) * n_markers].reshape(len(type_names), n_markers)
    for k, name in enumerate(type_names):
        for j, g in enumerate(marker_idx[k]):
            genes[g] = f"{name.upper().replace('_', '')}_M{j:02d}"
    return genes, marker_idx


def _type_programs(
    rng: np.random.Generator, marker_idx: np.ndarray, n_genes: int, marker_fold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Base mean expression (G,) and natural-log fold changes per type (T × G), markers raised."""
    n_types, n_markers = marker_idx.shape
    base = np.exp(rng.normal(-1.0, 1.3, size=n_genes))
    log_fold = rng.normal(0.0, 0.25, size=(n_types, n_genes))
    for k in range(n_types):
        log_fold[k, marker_idx[k]] += np.log(2.0) * rng.normal(marker_fold, 0.5, size=n_markers)
    return base, log_fold


def _count_block(
    rng: np.random.Generator,
    lib: np.ndarray,
    base: np.ndarray,
    log_fold: np.ndarray,
    dispersion: float,
    dropout: float,
) -> sp.csr_matrix:
    """Gamma–Poisson counts with dropout for one block of cells: int32 CSR (len(lib), G).

    ``log_fold`` holds each cell's type row (len(lib) × G); the products keep the former operation order, so
    the first block reproduces the former simulator bit for bit.
    """
    mu = lib[:, None] * base[None, :] * np.exp(log_fold)
    lam = rng.gamma(dispersion, mu / dispersion)
    counts = rng.poisson(lam)
    del lam
    drop = rng.random(counts.shape) < dropout * np.exp(-mu)
    counts[drop] = 0
    return sp.csr_matrix(counts.astype(np.int32))
