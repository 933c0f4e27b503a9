"""``--batch-key``: HVGs within batches and a Harmony-corrected PCA input (scsc/data/batch_correct.py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from scsc.config import PreprocessConfig
from scsc.data.batch_correct import batch_labels, harmonize
from scsc.data.io import write_h5_counts
from scsc.data.preprocess import preprocess
from scsc.data.simulate import simulate
from scsc.errors import InputError


@pytest.fixture(scope="module")
def batched():
    """600 cells of 3 types in two batches; the second batch has a strong gene-wise technical effect."""
    sim = simulate(n_cells=600, n_types=3, n_genes=500, seed=3)
    a = sim.to_anndata()
    rng = np.random.default_rng(0)
    batch = np.where(rng.random(a.n_obs) < 0.5, "run1", "run2")
    fold = np.exp(rng.normal(0, 1.2, a.n_vars)).astype(np.float32)  # every gene shifted in run2
    x = a.X.toarray()
    x[batch == "run2"] = np.round(x[batch == "run2"] * fold)
    a.X = type(a.X)(x)
    a.obs["batch"] = batch
    return a


def _ari_of_kmeans(x: np.ndarray, labels: np.ndarray) -> float:
    k = len(np.unique(labels))
    return adjusted_rand_score(labels, KMeans(k, n_init=10, random_state=0).fit(x).labels_)


def test_the_batch_key_removes_a_technical_effect_and_keeps_the_types(batched):
    plain = preprocess(batched, PreprocessConfig(n_hvg=300))
    fixed = preprocess(batched, PreprocessConfig(n_hvg=300, batch_key="batch"))
    batch, types = batched.obs["batch"].to_numpy(), batched.obs["label"].to_numpy()
    # Without the key two clusters of the input are the two runs; with it, the runs mix and the types stay.
    assert _ari_of_kmeans(plain.x, batch) > 0.5
    assert _ari_of_kmeans(fixed.x, batch) < 0.1
    assert _ari_of_kmeans(fixed.x, types) > 0.9


def test_harmonize_is_deterministic_and_leaves_one_batch_alone(rng):
    x = rng.normal(size=(200, 5)).astype(np.float32)
    b = np.repeat(["a", "b"], 100)
    assert np.array_equal(harmonize(x, b, seed=1), harmonize(x, b, seed=1))
    assert harmonize(x, b).shape == x.shape and harmonize(x, b).dtype == np.float32
    assert harmonize(x, np.repeat("a", 200)) is x


def test_a_missing_batch_key_names_the_obs_columns(batched):
    with pytest.raises(InputError, match=r"'donor' is not a column .*obs columns: label, batch"):
        batch_labels(batched.obs, "donor")
    with pytest.raises(InputError, match="'donor'"):
        preprocess(batched, PreprocessConfig(batch_key="donor"))


def test_cells_without_a_batch_are_refused(batched):
    obs = batched.obs.copy()
    obs["batch"] = obs["batch"].astype(object)
    obs.iloc[:3, obs.columns.get_loc("batch")] = None
    with pytest.raises(InputError, match="3 cells have no batch"):
        batch_labels(obs, "batch")


def test_cli_batch_key_on_an_h5_file(tmp_path, batched, runner, cli_app):
    """An .h5 file's `batch` dataset is the obs column --batch-key names; a wrong key is a clear error (exit 2,
    no traceback) and leaves no run folder behind."""
    path = tmp_path / "batched.h5"
    write_h5_counts(path, batched.X, batched.obs["label"].to_numpy().astype("S"))
    with h5py.File(path, "a") as f:
        f.create_dataset("batch", data=batched.obs["batch"].to_numpy().astype("S"))
    bad = runner.invoke(
        cli_app,
        [
            "cluster",
            str(path),
            "--batch-key",
            "donor",
            "--out",
            str(tmp_path / "bad"),
            "--n-clusters",
            "3",
            "-q",
        ],
    )
    out = bad.output
    assert bad.exit_code == 2, out
    assert "'donor' is not a column" in out and "label" in out and "batch" in out
    assert "Traceback" not in out
    assert not (tmp_path / "bad" / "result.h5ad").exists()
    ok = runner.invoke(
        cli_app,
        [
            "cluster",
            str(path),
            "--batch-key",
            "batch",
            "--out",
            str(tmp_path / "ok"),
            "--n-clusters",
            "3",
            "-q",
            "--no-plots",
            "--set",
            "pretrain.ae_epochs=2",
            "--set",
            "pretrain.gae_epochs=2",
            "--set",
            "pretrain.joint_epochs=2",
            "--epochs",
            "1",
        ],
    )
    assert ok.exit_code == 0, ok.output
    import anndata as ad

    res = ad.read_h5ad(tmp_path / "ok" / "result.h5ad")
    assert 'batch_key = "batch"' in res.uns["scsc"]["config"]
