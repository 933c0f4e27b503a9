"""``scsc simulate`` and the simulator behind it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from scsc.data.io import read
from scsc.data.simulate import simulate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_cli_simulate_h5_and_markers(tmp_path, runner, cli_app):
    out, markers = tmp_path / "out.h5", tmp_path / "m.toml"
    result = runner.invoke(
        cli_app, ["simulate", "--cells", "200", "--types", "3", str(out), "--markers-out", str(markers)]
    )
    assert result.exit_code == 0, result.output
    assert "200 cells × 2,000 genes, 3 cell types" in " ".join(result.output.split())  # rich may wrap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml", "out.h5"]  # no temporary files left

    info = runner.invoke(cli_app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    facts = json.loads(info.output)
    assert facts["cells"] == 200 and facts["genes"] == 2000
    assert facts["raw_counts"] is True and facts["gene_names"] is True
    assert facts["labels"]["n_types"] == 3
    assert sum(facts["labels"]["sizes"].values()) == 200

    planted = tomllib.loads(markers.read_text())
    assert sorted(planted) == ["type_0", "type_1", "type_2"]
    adata = read(out)
    assert set(adata.obs["label"].cat.categories) == set(planted)
    for genes in planted.values():
        assert len(genes) == 25 and set(genes) <= set(adata.var_names)


def test_cli_simulate_h5ad(tmp_path, runner, cli_app):
    out = tmp_path / "sim.h5ad"
    result = runner.invoke(
        cli_app,
        ["simulate", str(out), "--cells", "60", "--types", "2", "--genes", "100", "--markers", "5", "-q"],
    )
    assert result.exit_code == 0 and result.output == ""
    adata = read(out, label_key="label")
    assert adata.shape == (60, 100)
    assert adata.obs["label"].nunique() == 2


@pytest.mark.parametrize(
    "args, problem",
    [
        (["bad.txt"], "output must end in .h5 or .h5ad"),
        (["x.h5", "--types", "10", "--genes", "100"], "10 types × 25 markers need more than 100 genes"),
    ],
)
def test_cli_simulate_refuses(tmp_path, runner, cli_app, args, problem):
    result = runner.invoke(cli_app, ["simulate", str(tmp_path / args[0]), *args[1:]])
    assert result.exit_code == 2, result.output
    assert problem in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_simulation_is_seeded_and_has_every_type():
    a, b = simulate(100, 4, 200, seed=3), simulate(100, 4, 200, seed=3)
    np.testing.assert_array_equal(a.counts.toarray(), b.counts.toarray())
    assert not np.array_equal(a.counts.toarray(), simulate(100, 4, 200, seed=4).counts.toarray())
    assert set(a.labels) == {f"type_{k}" for k in range(4)}
    assert sp.isspmatrix_csr(a.counts) and a.counts.shape == (100, 200)
    assert a.counts.dtype == np.int32 and a.counts.min() >= 0
    assert len(set(a.genes)) == 200


def test_markers_are_up_in_their_type():
    sim = simulate(300, 3, 500, seed=0)
    idx = {g: j for j, g in enumerate(sim.genes)}
    counts = sim.counts.toarray()
    norm = counts / counts.sum(axis=1, keepdims=True)
    for t, genes in sim.markers.items():
        cols = [idx[g] for g in genes]
        inside = norm[sim.labels == t][:, cols].mean()
        outside = norm[sim.labels != t][:, cols].mean()
        assert inside > 3 * outside, t


def test_simulation_in_blocks(monkeypatch):
    """Cells are generated BLOCK_ROWS at a time: the result is seeded, canonical CSR, and keeps its types."""
    import scsc.data.simulate as simulation

    monkeypatch.setattr(simulation, "BLOCK_ROWS", 64)
    a, b = simulate(300, 3, 500, seed=1), simulate(300, 3, 500, seed=1)
    assert a.counts.shape == (300, 500) and a.counts.dtype == np.int32 and a.counts.has_canonical_format
    assert (a.counts != b.counts).nnz == 0
    assert (a.counts != simulate(300, 3, 500, seed=2).counts).nnz > 0
    # Later blocks have streams of their own: no two blocks repeat each other.
    rows = a.counts.toarray()
    assert not np.array_equal(rows[64:128], rows[128:192])
    idx = {g: j for j, g in enumerate(a.genes)}
    norm = rows / rows.sum(axis=1, keepdims=True)
    for t, genes in a.markers.items():
        cols = [idx[g] for g in genes]
        assert norm[a.labels == t][:, cols].mean() > 3 * norm[a.labels != t][:, cols].mean(), t


def test_depth_scales_library_sizes():
    full, low = simulate(400, 3, 1000, seed=0), simulate(400, 3, 1000, seed=0, depth=0.1)
    totals = [np.asarray(s.counts.sum(axis=1)).ravel() for s in (low, full)]
    ratio = np.median(totals[0]) / np.median(totals[1])
    assert 0.08 < ratio < 0.12
    zeros = 1 - low.counts.nnz / (400 * 1000)
    assert zeros > 0.9 > 1 - full.counts.nnz / (400 * 1000)  # measured: 94 % and 69 %
    np.testing.assert_array_equal(low.labels, full.labels)
    with pytest.raises(ValueError, match="depth must be a positive number"):
        simulate(100, 2, 100, depth=0)


def test_cli_simulate_depth_h5ad_is_sparse(tmp_path, runner, cli_app):
    import anndata as ad
    import h5py

    out = tmp_path / "sparse.h5ad"
    result = runner.invoke(
        cli_app, ["simulate", str(out), "--cells", "300", "--genes", "500", "--types", "3", "--depth", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert "zeros" in result.output
    with h5py.File(out) as f:
        assert f["X"].attrs["encoding-type"] == "csr_matrix"  # stored sparse, not as a dense block
    stored = ad.read_h5ad(out)
    adata = read(out, label_key="label")
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert adata.X.nnz == stored.X.nnz < 0.1 * 300 * 500
    bad = runner.invoke(cli_app, ["simulate", str(tmp_path / "x.h5ad"), "--depth", "0"])
    assert bad.exit_code == 2 and "depth must be a positive number" in bad.output


def test_h5_is_written_and_read_in_row_blocks(tmp_path, monkeypatch):
    """A sparse matrix goes to the dense .h5 format and back block by block, without changing a value."""
    import h5py

    from scsc.data import io

    monkeypatch.setattr(io, "BLOCK_ENTRIES", 1000)  # 2 rows of 500 genes per block
    sim = simulate(51, 3, 500, n_markers=5, seed=4)
    sparse_path, dense_path = tmp_path / "sparse.h5", tmp_path / "dense.h5"
    io.write_h5_counts(sparse_path, sim.counts, sim.labels.astype("S"), sim.genes)
    io.write_h5_counts(dense_path, sim.counts.toarray(), sim.labels.astype("S"), sim.genes)
    with h5py.File(sparse_path) as f:
        assert f["X"].dtype == np.int32 and f["X"].shape == (51, 500) and f["X"].chunks[1] == 500
    for path in (sparse_path, dense_path):
        adata = read(path)
        assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32 and adata.X.has_canonical_format
        np.testing.assert_array_equal(adata.X.toarray(), sim.counts.toarray())
        assert list(adata.obs["label"]) == list(sim.labels) and list(adata.var_names) == sim.genes
