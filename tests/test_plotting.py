"""Figures at large N: the UMAP is computed and drawn on a seeded subsample above UMAP_MAX_CELLS."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scsc import plotting


@pytest.fixture
def clustered() -> ad.AnnData:
    """300 cells in three well-separated 8-dimensional blobs, with clusters and true labels."""
    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, size=300)
    a = ad.AnnData(X=np.zeros((300, 1), dtype=np.float32))
    a.obsm["X_scsc"] = (rng.normal(size=(300, 8)) + 6 * np.eye(8)[group]).astype(np.float32)
    a.obs["scsc_cluster"] = pd.Categorical(group.astype(str))
    a.obs["label"] = pd.Categorical(np.array(["a", "b", "c"])[group])
    return a


def _figure(monkeypatch) -> dict:
    """Record the titles and number of drawn points of the next figure umap_plot saves."""
    seen = {}
    save = plotting._save

    def spy(fig, path):
        axes = fig.axes[:2]
        seen["titles"] = [ax.get_title() for ax in axes]
        seen["points"] = [sum(len(c.get_offsets()) for c in ax.collections) for ax in axes]
        save(fig, path)

    monkeypatch.setattr(plotting, "_save", spy)
    return seen


def test_umap_of_a_subsample_above_the_limit(clustered, tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "UMAP_MAX_CELLS", 100)
    seen = _figure(monkeypatch)
    plotting.umap_plot(clustered, tmp_path / "umap.png", seed=0)
    assert (tmp_path / "umap.png").stat().st_size > 0
    assert seen["titles"] == ["scsc clusters (100 of 300 cells)", "true labels (100 of 300 cells)"]
    assert seen["points"] == [100, 100]
    assert "X_umap" not in clustered.obsm  # no coordinates for only a part of the cells


def test_umap_of_every_cell_up_to_the_limit(clustered, tmp_path, monkeypatch):
    monkeypatch.setattr(plotting, "UMAP_MAX_CELLS", 300)
    seen = _figure(monkeypatch)
    plotting.umap_plot(clustered, tmp_path / "umap.png", seed=0)
    assert seen["titles"] == ["scsc clusters", "true labels"]
    assert seen["points"] == [300, 300]
    assert clustered.obsm["X_umap"].shape == (300, 2) and np.isfinite(clustered.obsm["X_umap"]).all()


def test_umap_kernels_get_an_on_disk_cache():
    from numba.core.caching import NullCache
    from umap import umap_

    plotting.cache_umap_kernels()
    # The fuzzy-graph kernel that scanpy's neighbours call in every run: compiled once per machine, not per run.
    assert not isinstance(umap_.smooth_knn_dist._cache, NullCache)
    assert plotting.cache_umap_kernels() == 0  # already switched: nothing left to do


def test_kernels_compiled_at_import_get_a_cache_too():
    # pynndescent compiles its distance kernels while umap-learn is imported; only a fresh process shows it.
    import subprocess
    import sys

    code = (
        "import numba; before = numba.njit\n"
        "from scsc.numba_cache import cache_umap_kernels; cache_umap_kernels()\n"
        "from numba.core.caching import NullCache\n"
        "import pynndescent.distances as d\n"
        "assert not isinstance(d.squared_euclidean._cache, NullCache), 'import-time kernel not cached'\n"
        "assert numba.njit is before, 'numba.njit not restored'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
