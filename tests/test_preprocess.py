"""METHOD §1: filtering, size factors, HVGs, PCA input, and the raw counts kept for the ZINB decoder."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from scsc.config import PreprocessConfig
from scsc.data.preprocess import preprocess
from scsc.errors import InputError


@pytest.fixture(scope="module")
def prepared(small_adata):
    return preprocess(small_adata, PreprocessConfig(), seed=0)


@pytest.fixture(scope="module")
def with_empty_cells(small_sim):
    """The simulation with cells 0, 17 and 299 emptied and gene 5 seen in only two cells."""
    a = small_sim.to_anndata()
    x = a.X.toarray()
    x[[0, 17, 299]] = 0
    x[:, 5] = 0
    x[[1, 2], 5] = 4
    a.X = sp.csr_matrix(x)
    return a


def test_deterministic_for_a_seed(small_adata, prepared):
    again = preprocess(small_adata, PreprocessConfig(), seed=0)
    np.testing.assert_array_equal(prepared.x, again.x)
    assert prepared.hvg == again.hvg
    np.testing.assert_array_equal(prepared.size_factors, again.size_factors)


def test_input_is_not_modified(small_sim, small_adata, prepared):
    np.testing.assert_array_equal(small_adata.X.toarray(), small_sim.counts.toarray())


def test_pca_shape_and_type(small_adata, prepared):
    assert prepared.x.shape == (300, 20)  # min(20 PCs, 299 cells − 1, genes − 1)
    assert prepared.x.dtype == np.float32 and prepared.x.flags.c_contiguous
    assert np.isfinite(prepared.x).all()
    assert prepared.n_cells == 300
    # PCA scores are centred and sorted by variance.
    np.testing.assert_allclose(prepared.x.mean(axis=0), 0, atol=1e-3)
    var = prepared.x.var(axis=0)
    assert np.all(np.diff(var) <= 1e-3 * var[0])


@pytest.mark.parametrize("n_hvg, n_pcs, expected_pcs", [(200, 100, 100), (60, 100, 59), (300, 20, 20)])
def test_hvg_count_and_pcs(small_adata, n_hvg, n_pcs, expected_pcs):
    p = preprocess(small_adata, PreprocessConfig(n_hvg=n_hvg, n_pcs=n_pcs), seed=0)
    assert len(p.hvg) == n_hvg == len(set(p.hvg))
    assert p.counts.shape == (300, n_hvg)
    assert p.x.shape == (300, expected_pcs)


def test_planted_markers_are_highly_variable(small_sim):
    p = preprocess(small_sim.to_anndata(), PreprocessConfig(n_hvg=200), seed=0)
    markers = {g for genes in small_sim.markers.values() for g in genes}
    # 200 of 495 genes: chance would catch ~40 % of the 75 markers; measured 61 (81 %). Lowly expressed
    # markers can stay below the dispersion cut, so the bar is 70 %.
    assert len(markers & set(p.hvg)) >= 0.7 * len(markers)


def test_all_genes_when_fewer_than_n_hvg(small_adata, prepared):
    expressed = np.asarray((small_adata.X > 0).sum(axis=0)).ravel() >= 3
    assert len(prepared.hvg) == expressed.sum() < 1000
    assert prepared.adata.n_vars == expressed.sum()


def test_size_factors_have_median_one(small_adata, prepared):
    sf = prepared.size_factors
    assert sf.shape == (300,) and sf.dtype == np.float32
    assert np.median(sf) == pytest.approx(1.0, rel=1e-6)
    totals = np.asarray(prepared.adata.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(sf, totals / np.median(totals), rtol=1e-5)


def test_raw_counts_are_kept_for_the_hvgs(small_sim, prepared):
    counts = prepared.counts
    assert sp.isspmatrix_csr(counts) or isinstance(counts, sp.csr_array)
    assert counts.dtype == np.float32
    cols = [small_sim.genes.index(g) for g in prepared.hvg]
    np.testing.assert_array_equal(counts.toarray(), small_sim.counts[:, cols].toarray())
    # prepared.adata holds the raw counts of every kept gene, with labels.
    np.testing.assert_array_equal(
        prepared.adata[:, prepared.hvg].X.toarray(), small_sim.counts[:, cols].toarray()
    )
    assert list(prepared.adata.obs["label"]) == list(small_sim.labels)


def test_zero_count_cells_are_dropped(with_empty_cells, small_sim):
    p = preprocess(with_empty_cells, PreprocessConfig(), seed=0)
    mask = np.ones(300, dtype=bool)
    mask[[0, 17, 299]] = False
    np.testing.assert_array_equal(p.cell_mask, mask)
    assert p.cell_mask.dtype == bool
    assert p.x.shape[0] == p.counts.shape[0] == p.size_factors.shape[0] == p.adata.n_obs == 297
    assert list(p.adata.obs_names) == list(with_empty_cells.obs_names[mask])
    assert list(p.adata.obs["label"]) == list(small_sim.labels[mask])
    # Gene 5 is expressed in two cells only: filtered out (min_cells = 3).
    assert small_sim.genes[5] not in set(p.adata.var_names)
    assert small_sim.genes[5] not in set(p.hvg)


def test_too_few_cells_after_filtering(with_empty_cells):
    with pytest.raises(InputError, match="only 297 cells with counts after filtering; need at least 298"):
        preprocess(with_empty_cells, PreprocessConfig(), min_cells_required=298, source="x.h5")


def test_log_normalized_input(small_adata):
    a = small_adata.copy()
    a.X = a.X.log1p()
    with pytest.raises(InputError, match="--log-normalized"):
        preprocess(a, PreprocessConfig())
    p = preprocess(a, PreprocessConfig(log_normalized=True), seed=0)
    assert p.counts is None
    np.testing.assert_array_equal(p.size_factors, 1.0)
    assert p.x.shape == (300, 20)


def test_kept_adata_is_the_filtered_input(with_empty_cells):
    """Everything of the input but X is subset as ``adata[cells][:, genes].copy()`` would; X holds the counts."""
    a = with_empty_cells.copy()
    a.layers["spliced"] = a.X.copy() * 2
    a.obsm["X_other"] = np.arange(a.n_obs * 2, dtype=float).reshape(-1, 2)
    a.var["note"] = [f"g{j}" for j in range(a.n_vars)]
    a.uns["source"] = {"lab": "x"}
    p = preprocess(a, PreprocessConfig(), seed=0)
    genes = np.isin(a.var_names, p.adata.var_names)
    expected = a[p.cell_mask][:, genes].copy()
    assert list(p.adata.obs_names) == list(expected.obs_names)
    assert p.adata.var.equals(expected.var) and p.adata.obs.equals(expected.obs)
    assert (p.adata.layers["spliced"] != expected.layers["spliced"]).nnz == 0
    np.testing.assert_array_equal(p.adata.obsm["X_other"], expected.obsm["X_other"])
    assert p.adata.uns["source"] == {"lab": "x"}
    assert (p.adata.X != expected.X).nnz == 0 and p.adata.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), with_empty_cells.X.toarray())  # the input is untouched


def test_cells_per_gene_in_steps():
    from scsc.data.preprocess import _cells_per_gene

    x = sp.random(40, 30, density=0.3, format="csr", dtype=np.float32, random_state=0)
    x.data[::4] = 0.0  # explicit zeros are not expressions
    expected = np.asarray((x > 0).sum(axis=0)).ravel()
    for step in (1, 7, 10_000_000):
        np.testing.assert_array_equal(_cells_per_gene(x, step=step), expected)
