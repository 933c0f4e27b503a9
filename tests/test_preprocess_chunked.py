"""The chunked scale + PCA path (``preprocess.dense_max_cells``) against the dense scanpy path it replaces."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import scsc.data.preprocess as prep
from scsc.config import PreprocessConfig
from scsc.data.io import read
from scsc.data.pca import _scaled_chunk, scale_stats, scaled_pca
from scsc.data.preprocess import preprocess
from scsc.data.simulate import simulate

#: Small enough that the chunked path runs on every data set here.
CHUNKED = {"dense_max_cells": 10}


def assert_same_pcs(dense: np.ndarray, chunked: np.ndarray, k: int = 20) -> None:
    """The first ``k`` components agree up to sign: in correlation, in value, in variance, and both centred.

    Values are compared, not only correlations: a missing centring shifts a column without changing its
    correlation, and a slightly rotated pair of components keeps a high correlation but not the values.
    """
    assert dense.shape == chunked.shape
    for j in range(k):
        r = np.corrcoef(dense[:, j], chunked[:, j])[0, 1]
        assert abs(r) > 0.999, f"component {j}: |corr| {abs(r):.5f}"
        scale = dense[:, j].std()
        gap = np.abs(chunked[:, j] - np.sign(r) * dense[:, j]).max()
        assert gap < 1e-2 * scale, f"component {j}: values differ by {gap / scale:.2e} of its std"
    var_dense, var_chunked = dense.var(axis=0, ddof=1), chunked.var(axis=0, ddof=1)
    np.testing.assert_allclose(var_chunked[:k], var_dense[:k], rtol=1e-3)
    assert np.abs(chunked.mean(axis=0, dtype=np.float64)).max() < 1e-4 * np.sqrt(var_dense[0])


@pytest.fixture(scope="module")
def sparse_sim() -> ad.AnnData:
    """1,500 cells × 1,500 genes at droplet-like depth (~94 % zeros): many values clip at 10 after scaling."""
    return simulate(n_cells=1500, n_types=5, n_genes=1500, seed=3, depth=0.1).to_anndata()


def _both(adata: ad.AnnData, **cfg) -> tuple[np.ndarray, np.ndarray]:
    dense = preprocess(adata, PreprocessConfig(**cfg), seed=0)
    chunked = preprocess(adata, PreprocessConfig(**cfg, **CHUNKED), seed=0)
    assert dense.hvg == chunked.hvg
    np.testing.assert_array_equal(dense.size_factors, chunked.size_factors)
    assert (dense.counts != chunked.counts).nnz == 0
    return dense.x, chunked.x


def test_chunked_matches_dense_on_simulated_data(sparse_sim):
    dense, chunked = _both(sparse_sim, n_hvg=600, n_pcs=30)
    assert chunked.shape == (1500, 30) and chunked.dtype == np.float32 and chunked.flags.c_contiguous
    assert_same_pcs(dense, chunked)


def test_chunked_matches_dense_on_real_data(shared_file):
    adata = read(shared_file("10X_PBMC_top2000.h5"))
    dense, chunked = _both(adata)  # the defaults: 2,000 HVGs, 50 PCs
    assert_same_pcs(dense, chunked)


def test_the_comparison_sees_a_wrong_clip(sparse_sim):
    """The data clip heavily, so chunked PCA without the clip must fail the comparison."""
    p = preprocess(sparse_sim, PreprocessConfig(n_hvg=600), seed=0)
    expr = sp.csr_matrix(np.log1p(p.counts.toarray() / p.size_factors[:, None]))
    scaled = sc.pp.scale(expr.toarray(), max_value=None)
    assert (np.abs(scaled) > 10).mean() > 1e-3  # measured: 0.4 % of the values, in most genes
    dense, _ = _both(sparse_sim, n_hvg=600, n_pcs=30)
    unclipped = preprocess(sparse_sim, PreprocessConfig(n_hvg=600, n_pcs=30, scale_clip=1e9, **CHUNKED)).x
    with pytest.raises(AssertionError):
        assert_same_pcs(dense, unclipped)


def test_clipped_data_are_centred_again(sparse_sim):
    """With a clip at 1 the clipped columns are far from centred: scaled_pca equals scanpy's scale + PCA,
    and a PCA that skipped the second centring would not."""
    p = preprocess(sparse_sim, PreprocessConfig(n_hvg=300), seed=0)
    expr = sp.csr_matrix(np.log1p(p.counts.toarray() / p.size_factors[:, None]), dtype=np.float32)
    clipped = sc.pp.scale(expr.toarray(), max_value=1.0)
    assert np.abs(clipped.mean(axis=0)).max() > 0.1
    reference = sc.pp.pca(clipped, n_comps=20, svd_solver="arpack", random_state=0)
    scores, variance = scaled_pca(expr, 20, clip=1.0)
    assert_same_pcs(reference, scores)
    np.testing.assert_allclose(variance, reference.var(axis=0, ddof=1), rtol=1e-3)
    u, s, _ = np.linalg.svd(clipped.astype(np.float64), full_matrices=False)  # not centred again
    with pytest.raises(AssertionError):
        assert_same_pcs(reference, (u[:, :20] * s[:20]).astype(np.float32))


def test_chunk_size_does_not_change_the_result(sparse_sim):
    p = preprocess(sparse_sim, PreprocessConfig(n_hvg=400), seed=0)
    expr = sp.csr_matrix(np.log1p(p.counts.toarray() / p.size_factors[:, None]), dtype=np.float32)
    ref, ref_var = scaled_pca(expr, 20)  # one chunk
    for rows in (1, 7, 256, 1499):
        scores, variance = scaled_pca(expr, 20, chunk_rows=rows)
        np.testing.assert_allclose(scores, ref, atol=1e-5 * float(ref[:, 0].std()))
        np.testing.assert_allclose(variance, ref_var, rtol=1e-9)


def test_scaling_matches_sc_pp_scale():
    """Mean, unbiased std (ddof 1), std 0 → 1 for a constant gene, clip on both sides: as scanpy 1.11."""
    rng = np.random.default_rng(0)
    x = rng.poisson(0.3, size=(200, 7)).astype(np.float32)
    x[:, 2] = 2.0  # constant, non-zero
    x[:, 3] = 0.0  # never expressed
    x[0, 4] = 80.0  # one outlier scales to ~14: clipped at +10
    x[:, 5], x[0, 5] = 50.0, 0.0  # one low outlier scales to ~−14: clipped at −10
    a = ad.AnnData(X=x.copy())
    sc.pp.scale(a, max_value=10)
    mean, std = scale_stats(sp.csr_matrix(x))
    np.testing.assert_allclose(mean, a.var["mean"], rtol=1e-12)
    np.testing.assert_allclose(std, a.var["std"], rtol=1e-6)
    assert std[2] == std[3] == 1.0
    y = _scaled_chunk(sp.csr_matrix(x), 0, 200, mean, std, 10.0)
    np.testing.assert_allclose(y, a.X, atol=1e-5)
    assert y.max() == 10.0 and y.min() == -10.0 and np.all(y[:, 2] == 0) and np.all(y[:, 3] == 0)


def test_path_is_chosen_by_the_number_of_kept_cells(small_adata, monkeypatch):
    calls = []
    real = prep.scaled_pca
    monkeypatch.setattr(prep, "scaled_pca", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    preprocess(small_adata, PreprocessConfig(dense_max_cells=300), seed=0)
    assert calls == []  # 300 cells: not above the limit
    preprocess(small_adata, PreprocessConfig(dense_max_cells=299), seed=0)
    assert calls == [(300, 495)]
