"""Every reader round-trips a known matrix; ``scsc info --json``; atomic writes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scsc.data.io import atomic_path, atomic_write_text, read, summarize, write_h5_counts
from scsc.errors import InputError

N_CELLS, N_GENES = 37, 23


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    """A cells × genes integer matrix with zeros, one all-zero gene and distinct cell totals."""
    x = np.random.default_rng(7).poisson(1.5, size=(N_CELLS, N_GENES)).astype(np.int64)
    x[:, 4] = 0
    return x


@pytest.fixture(scope="module")
def genes() -> list[str]:
    return [f"G{j}" for j in range(N_GENES)]


@pytest.fixture(scope="module")
def cells() -> list[str]:
    return [f"AAAC{i:04d}-1" for i in range(N_CELLS)]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.array(["B", "T", "NK"])[np.arange(N_CELLS) % 3]


def assert_counts(adata: ad.AnnData, expected: np.ndarray) -> None:
    """The reader's contract: float32 CSR, cells × genes, equal values."""
    assert sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)
    assert adata.X.dtype == np.float32
    assert adata.shape == expected.shape
    np.testing.assert_array_equal(adata.X.toarray(), expected.astype(np.float32))


# --------------------------------------------------------------------------- .h5 (X, Y, gene_names)
def test_h5_round_trip(tmp_path, counts, genes, labels):
    path = tmp_path / "data.h5"
    write_h5_counts(path, counts, labels.astype("S"), genes)
    adata = read(path)
    assert_counts(adata, counts)
    assert list(adata.var_names) == genes
    assert adata.uns["scsc_gene_names"] is True
    assert list(adata.obs["label"].astype(str)) == list(labels)
    assert set(adata.obs["label"].cat.categories) == {"B", "T", "NK"}
    assert adata.uns["scsc_input"]["format"] == "h5"


def test_h5_per_cell_datasets_become_obs_columns(tmp_path, counts, labels):
    """A ``batch`` (or any other per-cell dataset) of an .h5 file is an obs column; a shard reads its rows."""
    path = tmp_path / "batched.h5"
    write_h5_counts(path, counts, labels.astype("S"))
    n = counts.shape[0]
    batch = np.array([b"run1", b"run2"] * (n // 2) + [b"run1"] * (n % 2))
    with h5py.File(path, "a") as f:
        f.create_dataset("batch", data=batch)
        f.create_dataset("other_shape", data=np.arange(n + 1))  # not one value per cell: left out
    adata = read(path)
    assert list(adata.obs["batch"].astype(str)) == [b.decode() for b in batch]
    assert "other_shape" not in adata.obs
    part = read(path, shard=lambda total: (1, 3))
    assert list(part.obs["batch"].astype(str)) == [b.decode() for b in batch[1:3]]


def test_h5_without_labels_or_genes(tmp_path, counts):
    path = tmp_path / "bare.h5"
    write_h5_counts(path, counts)
    adata = read(path)
    assert_counts(adata, counts)
    assert "label" not in adata.obs
    assert adata.uns["scsc_gene_names"] is False
    assert list(adata.var_names[:2]) == ["gene0", "gene1"]


def test_h5_float_labels_become_integer_categories(tmp_path, counts):
    """Shared data sets store labels as floats (1.0, 2.0): they map to categories "1", "2"."""
    y = np.where(np.arange(N_CELLS) % 2, 2.0, 1.0)
    path = tmp_path / "float_labels.h5"
    write_h5_counts(path, counts, y)
    adata = read(path)
    assert list(adata.obs["label"].cat.categories) == ["1", "2"]
    assert list(adata.obs["label"].astype(str)[:2]) == ["1", "2"]
    assert summarize(adata)["labels"] == {"n_types": 2, "sizes": {"1": 19, "2": 18}}


def test_h5_float_counts_stored_as_float(tmp_path, counts):
    """The shared files store counts as float64; integer-valued floats are raw counts."""
    path = tmp_path / "float.h5"
    write_h5_counts(path, counts.astype(np.float64))
    adata = read(path)
    assert_counts(adata, counts)
    assert summarize(adata)["raw_counts"] is True


# --------------------------------------------------------------------------- .h5ad (X or a layer, labels)
@pytest.fixture
def h5ad_file(tmp_path, counts, genes, cells, labels) -> Path:
    a = ad.AnnData(
        X=np.log1p(counts).astype(np.float32),
        obs=pd.DataFrame({"celltype": pd.Categorical(labels), "batch": "b1"}, index=cells),
        var=pd.DataFrame(index=genes),
    )
    a.layers["counts"] = sp.csr_matrix(counts.astype(np.float32))
    path = tmp_path / "data.h5ad"
    a.write_h5ad(path)
    return path


def test_h5ad_layer_and_label_key(h5ad_file, counts, genes, cells, labels):
    adata = read(h5ad_file, layer="counts", label_key="celltype")
    assert_counts(adata, counts)
    assert list(adata.obs_names) == cells and list(adata.var_names) == genes
    assert list(adata.obs["label"].astype(str)) == list(labels)
    assert adata.uns["scsc_input"]["format"] == "h5ad"


def test_h5ad_x_is_read_by_default(h5ad_file, counts):
    adata = read(h5ad_file)
    np.testing.assert_allclose(adata.X.toarray(), np.log1p(counts), rtol=1e-6)
    assert "label" not in adata.obs
    assert summarize(adata)["raw_counts"] is False


def test_h5ad_dense_counts_in_x(tmp_path, counts):
    path = tmp_path / "dense.h5ad"
    ad.AnnData(X=counts.astype(np.float32)).write_h5ad(path)
    assert_counts(read(path), counts)


def test_h5ad_bad_layer_and_label_key_name_what_exists(h5ad_file):
    with pytest.raises(InputError, match=r"no layer 'raw'; layers present: counts") as exc:
        read(h5ad_file, layer="raw")
    assert str(h5ad_file) in str(exc.value)
    with pytest.raises(InputError, match=r"no obs column 'cell_type'.*celltype, batch"):
        read(h5ad_file, label_key="cell_type")


def test_layer_refused_for_other_formats(tmp_path, counts):
    path = tmp_path / "x.h5"
    write_h5_counts(path, counts)
    with pytest.raises(InputError, match=r"--layer applies to \.h5ad files only"):
        read(path, layer="counts")


def test_info_json_with_layer_and_label_key(h5ad_file, runner, cli_app):
    result = runner.invoke(
        cli_app, ["info", str(h5ad_file), "--layer", "counts", "--label-key", "celltype", "--json"]
    )
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["cells"] == N_CELLS and facts["genes"] == N_GENES
    assert facts["raw_counts"] is True
    assert facts["labels"]["n_types"] == 3


# --------------------------------------------------------------------------- 10x mtx folder
def write_10x_mtx(folder: Path, counts: np.ndarray, genes: list[str], cells: list[str]) -> Path:
    """A Cell Ranger v3 ``filtered_feature_bc_matrix`` folder: the matrix is genes × cells."""
    folder.mkdir()
    buf = folder / "matrix.mtx"
    scipy.io.mmwrite(buf, sp.coo_matrix(counts.T), field="integer")
    with open(buf, "rb") as src, gzip.open(folder / "matrix.mtx.gz", "wb") as dst:
        dst.write(src.read())
    buf.unlink()
    with gzip.open(folder / "features.tsv.gz", "wt") as fh:
        for j, g in enumerate(genes):
            fh.write(f"ENSG{j:011d}\t{g}\tGene Expression\n")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
        fh.write("\n".join(cells) + "\n")
    return folder


def test_10x_mtx_folder(tmp_path, counts, genes, cells):
    folder = write_10x_mtx(tmp_path / "filtered_feature_bc_matrix", counts, genes, cells)
    adata = read(folder)
    assert_counts(adata, counts)
    assert list(adata.var_names) == genes
    assert list(adata.obs_names) == cells
    assert adata.uns["scsc_input"]["format"] == "10x-mtx"


def test_folder_without_matrix_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no matrix\.mtx"):
        read(tmp_path / "empty")


# --------------------------------------------------------------------------- 10x .h5 (v3)
def write_10x_h5(path: Path, counts: np.ndarray, genes: list[str], cells: list[str]) -> Path:
    """The Cell Ranger v3 HDF5 layout: CSC genes × cells (= CSR cells × genes) in group ``matrix``."""
    csr = sp.csr_matrix(counts)  # rows are cells: indptr over cells, indices are genes, as 10x stores CSC
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("data", data=csr.data.astype(np.int32))
        m.create_dataset("indices", data=csr.indices.astype(np.int64))
        m.create_dataset("indptr", data=csr.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([len(genes), len(cells)], dtype=np.int32))
        m.create_dataset("barcodes", data=np.array(cells, dtype="S"))
        feats = m.create_group("features")
        feats.create_dataset("id", data=np.array([f"ENSG{j:011d}" for j in range(len(genes))], dtype="S"))
        feats.create_dataset("name", data=np.array(genes, dtype="S"))
        feats.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        feats.create_dataset("genome", data=np.array(["GRCh38"] * len(genes), dtype="S"))
    return path


def test_10x_h5(tmp_path, counts, genes, cells):
    path = write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", counts, genes, cells)
    adata = read(path)
    assert_counts(adata, counts)
    assert list(adata.var_names) == genes
    assert list(adata.obs_names) == cells
    assert adata.uns["scsc_gene_names"] is True


def test_broken_10x_h5_is_an_input_error(tmp_path, counts, genes, cells):
    path = write_10x_h5(tmp_path / "broken.h5", counts, genes, cells)
    with h5py.File(path, "a") as f:
        del f["matrix/indptr"]
    with pytest.raises(InputError, match="cannot read as a 10x HDF5 file"):
        read(path)


# --------------------------------------------------------------------------- CSV / TSV
def _frame(counts, genes, cells) -> pd.DataFrame:
    return pd.DataFrame(counts, index=cells, columns=genes)


@pytest.mark.parametrize(
    "suffix, sep, gz",
    [
        (".csv", ",", False),
        (".tsv", "\t", False),
        (".csv.gz", ",", True),
        (".tsv.gz", "\t", True),
        (".txt", "\t", False),
    ],
)
@pytest.mark.parametrize("transpose", [False, True])
def test_tables(tmp_path, counts, genes, cells, suffix, sep, gz, transpose):
    df = _frame(counts, genes, cells)
    if transpose:
        df = df.T  # genes × cells, as many public tables are
    path = tmp_path / f"table{suffix}"
    if gz:
        with gzip.open(path, "wt") as fh:
            df.to_csv(fh, sep=sep)
    else:
        df.to_csv(path, sep=sep)
    adata = read(path, transpose=transpose)
    assert_counts(adata, counts)
    assert list(adata.var_names) == genes and list(adata.obs_names) == cells
    # Without the flag the same file reads the other way round.
    assert read(path, transpose=not transpose).shape == (N_GENES, N_CELLS)


def test_transpose_flag_in_cli(tmp_path, counts, genes, cells, runner, cli_app):
    path = tmp_path / "genes_by_cells.csv"
    _frame(counts, genes, cells).T.to_csv(path)
    result = runner.invoke(cli_app, ["info", str(path), "--transpose", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert (facts["cells"], facts["genes"]) == (N_CELLS, N_GENES)


# --------------------------------------------------------------------------- scsc info
def test_info_json(small_h5, small_sim, runner, cli_app):
    result = runner.invoke(cli_app, ["info", str(small_h5), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["path"] == str(small_h5)
    assert facts["cells"] == 300 and facts["genes"] == 500
    assert facts["raw_counts"] is True and facts["gene_names"] is True
    assert facts["labels"]["n_types"] == 3
    expected = pd.Series(small_sim.labels).value_counts().to_dict()
    assert facts["labels"]["sizes"] == expected
    assert 0 < facts["nonzero_fraction"] < 1
    assert facts["min_value"] >= 0 and facts["max_value"] == small_sim.counts.max()


def test_info_table(small_h5, runner, cli_app):
    result = runner.invoke(cli_app, ["info", str(small_h5)])
    assert result.exit_code == 0, result.output
    assert "300 × 500" in result.output and "3 types" in result.output


def test_info_real_data(shared_file, runner, cli_app):
    path = shared_file("Maayan_Mouse_Pancreas_cell_1.h5")
    result = runner.invoke(cli_app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert (facts["cells"], facts["genes"]) == (822, 14878)
    assert facts["labels"]["n_types"] == 13
    assert facts["raw_counts"] is True


# --------------------------------------------------------------------------- atomic writes
def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    target = tmp_path / "sub" / "result.h5ad"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"half written")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left either


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "config.toml"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new but incomplete")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_replaces(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert list(tmp_path.iterdir()) == [target]
