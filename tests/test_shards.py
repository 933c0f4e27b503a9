"""A distributed run's ranks hold shards of the cells: the statistics they add up equal one process's, and
each rank ends holding exactly the counts of the cells it trains on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scsc
from scsc.config import RunConfig
from scsc.data.hvg import expm1_sums, seurat_hvg
from scsc.data.prepare import plan, prepare
from scsc.data.shards import hold_cells
from scsc.distributed import Context

WORKER = Path(__file__).with_name("shard_worker.py")
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """1,203 simulated cells (a few with no counts) preprocessed on 3 gloo ranks, and in one process."""
    tmp = tmp_path_factory.mktemp("shards")
    sim = scsc.simulate(n_cells=1203, n_types=4, n_genes=600, seed=3).to_anndata()
    sim.X = sp.csr_matrix(sim.X)
    sim.X[[5, 700], :] = 0  # cells the filter removes, on two different ranks
    sim.X.eliminate_zeros()
    path = tmp / "sim.h5ad"
    scsc.write_h5ad(sim, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "3",
        str(WORKER),
        str(path),
        str(tmp),
        "128",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [dict(np.load(tmp / f"rank{r}.npz")) for r in range(3)]
    cfg = RunConfig().override(["minibatch.batch_size=128", "preprocess.dense_max_cells=0"])
    one, data = prepare(scsc.read(path), cfg)
    return ranks, one, data, cfg


def test_ranks_read_only_their_rows_and_agree_on_every_statistic(sharded):
    ranks, one, _, _ = sharded
    assert [int(r["n_shard"]) for r in ranks] == [401, 401, 401]
    for r in ranks:
        assert list(r["hvg"]) == one.hvg
        np.testing.assert_array_equal(r["cell_mask"], one.cell_mask)
        np.testing.assert_allclose(r["size_factors"], one.size_factors, rtol=1e-6)
        np.testing.assert_array_equal(r["x"], ranks[0]["x"])  # bit-identical on every rank
    # The same PCA as one process's chunked path; the leading components (well separated) agree closely.
    np.testing.assert_allclose(ranks[0]["x"][:, :5], one.x[:, :5], atol=1e-3)
    # The shards are contiguous and cover the kept cells once.
    shard_rows = np.concatenate([r["shard_rows"] for r in ranks])
    np.testing.assert_array_equal(shard_rows, np.arange(one.n_cells))


def test_each_rank_holds_exactly_the_counts_of_the_cells_it_trains_on(sharded):
    ranks, one, _, _ = sharded
    owned = [r["owned"] for r in ranks]
    assert sum(len(o) for o in owned) == one.n_cells
    np.testing.assert_array_equal(np.sort(np.concatenate(owned)), np.arange(one.n_cells))
    sizes = [len(o) for o in owned]
    assert max(sizes) - min(sizes) <= 0.5 * one.n_cells / 3  # balanced to within parts
    counts = one.counts.toarray()
    for r in ranks:
        np.testing.assert_array_equal(r["held"], r["owned"])
        np.testing.assert_array_equal(r["counts"], counts[r["held"]])
        assert np.isin(r["batch"], r["owned"]).all()  # a rank's batches come from its own cells
        np.testing.assert_array_equal(r["batch_counts"], counts[r["batch"]])


def test_sharded_embeddings_equal_whole_ones_on_every_rank(sharded):
    ranks, one, _, _ = sharded
    for r in ranks:
        for name in ("z_pre", "z"):
            whole, shard = r[f"{name}_whole"], r[f"{name}_shard"]
            assert whole.shape == (one.n_cells, 20)
            np.testing.assert_allclose(shard, whole, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(r["z_shard"], ranks[0]["z_shard"])  # every rank gets the same Z
    # The pretrained and the final Z differ (the views changed): the check above compares two real embeddings.
    assert not np.allclose(ranks[0]["z_whole"], ranks[0]["z_pre_whole"], atol=1e-3)


def test_ranks_share_the_diffusion_view_and_get_the_same_matrix(sharded):
    """Each rank computes a third of the PPR blocks (100 rows each) and gathers the rows: bit-identical."""
    ranks, one, _, _ = sharded
    for r in ranks:
        assert r["ppr_whole"].shape == (one.n_cells, one.n_cells)
        assert (r["ppr_whole"] > 0).sum(axis=1).min() > 1
        np.testing.assert_array_equal(r["ppr_shared"], r["ppr_whole"])


def test_a_rank_refuses_a_batch_of_cells_it_does_not_hold(sharded):
    _, one, data, cfg = sharded
    mine = plan(data, cfg).for_rank(0, 3)
    held = hold_cells(data, mine.cells, Context())  # one process: a no-op
    assert held is data
    from dataclasses import replace

    part = replace(data, counts_rows=mine.cells, counts_csr=one.counts[mine.cells])
    other = np.setdiff1d(np.arange(one.n_cells), mine.cells)[:10]
    with pytest.raises(RuntimeError, match="does not hold"):
        part.subset(other)
    assert part.subset(other, with_counts=False).counts is None
    np.testing.assert_array_equal(
        part.subset(mine.cells[:10]).counts.numpy(), one.counts[mine.cells[:10]].toarray()
    )


def test_too_few_parts_for_the_ranks_is_a_clear_error(sharded):
    _, _, data, cfg = sharded
    from scsc.errors import ConfigError

    with pytest.raises(ConfigError, match="smaller --batch-size"):
        plan(data, cfg).for_rank(0, 1000)


@pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets is not beside the checkout")
@pytest.mark.parametrize("name", ["Junyue_worm_neuron_cell.h5", "mouse_bladder_cell_select_2100.h5"])
def test_hvg_from_sums_selects_scanpys_genes_on_real_data(name):
    """The sums-based Seurat rule (what ranks add up) picks exactly scanpy's genes."""
    import scanpy as sc

    a = scsc.read(DATASETS / name)
    sc.pp.filter_genes(a, min_cells=1)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    ref = a.copy()
    sc.pp.highly_variable_genes(ref, n_top_genes=2000, flavor="seurat")
    mask = seurat_hvg(expm1_sums(sp.csr_matrix(a.X)), a.n_obs, 2000)
    np.testing.assert_array_equal(mask, ref.var["highly_variable"].to_numpy())


@pytest.mark.parametrize("fmt", ["h5", "h5ad", "csv"])
def test_read_a_shard_gives_those_rows_of_the_whole_file(tmp_path, fmt):
    """``read(shard=…)`` returns rows lo:hi of what a whole read gives (h5 and h5ad read only those rows)."""
    from scsc.data.io import write_h5_counts

    sim = scsc.simulate(n_cells=50, n_types=2, n_genes=80, seed=1)
    path = tmp_path / f"sim.{fmt}"
    if fmt == "h5":
        write_h5_counts(path, sim.counts, sim.labels.astype("S"), sim.genes)
    elif fmt == "h5ad":
        scsc.write_h5ad(sim.to_anndata(), path)
    else:
        a = sim.to_anndata()
        import pandas as pd

        pd.DataFrame(np.asarray(sp.csr_matrix(a.X).toarray()), index=a.obs_names, columns=a.var_names).to_csv(
            path
        )
    whole = scsc.read(path)
    seen = []

    def shard(n):
        seen.append(n)
        return 17, 34

    part = scsc.read(path, shard=shard)
    assert seen == [50]
    assert part.n_obs == 17 and "scsc_rows" not in part.uns
    np.testing.assert_array_equal(part.X.toarray(), whole.X[17:34].toarray())
    assert list(part.obs_names) == list(whole.obs_names[17:34])
    if "label" in whole.obs:
        assert list(part.obs["label"]) == list(whole.obs["label"][17:34])
        assert list(part.obs["label"].cat.categories) == list(whole.obs["label"].cat.categories)


@pytest.mark.parametrize("fmt", ["h5", "h5ad"])
def test_a_shard_without_labels_reads_as_those_rows_of_the_whole_file(tmp_path, fmt):
    """Labels are checked and converted for the whole file: a shard whose cells all lack a label is read (one
    read of the file is valid), and its categories are the file's."""
    from scsc.data.io import write_h5_counts

    sim = scsc.simulate(n_cells=60, n_types=3, n_genes=80, seed=1)
    labels = sim.labels.astype(str).astype(object)
    labels[:20] = ""
    path = tmp_path / f"sim.{fmt}"
    if fmt == "h5":
        write_h5_counts(path, sim.counts, labels.astype("S"), sim.genes)
        kw = {}
    else:
        a = sim.to_anndata()
        a.obs["cell_type"] = labels.astype(str)
        scsc.write_h5ad(a, path)
        kw = {"label_key": "cell_type"}
    whole = scsc.read(path, **kw)
    part = scsc.read(path, shard=lambda n: (0, 20), **kw)
    assert list(part.obs["label"]) == list(whole.obs["label"][:20])
    assert list(part.obs["label"].cat.categories) == list(whole.obs["label"].cat.categories)


def test_release_free_memory_changes_nothing_it_is_given():
    from scsc.memory import release_free_memory

    x = np.arange(10.0)
    assert release_free_memory() in (True, False)
    if sys.platform.startswith("linux"):
        assert release_free_memory() is True  # glibc's malloc_trim is found and called
    np.testing.assert_array_equal(x, np.arange(10.0))


@pytest.mark.parametrize("fmt", ["h5", "h5ad"])
def test_rank_zero_builds_the_result_input_a_block_of_rows_at_a_time(tmp_path, fmt):
    """``kept_input_by_rows`` equals ``kept_input`` of one whole read: counts, cells, genes and the labels'
    categories, also when a block misses some labels and the filters removed cells and genes."""
    from scsc.data.io import reads_rows, write_h5_counts
    from scsc.data.preprocess import kept_input, kept_input_by_rows

    sim = scsc.simulate(n_cells=300, n_types=4, n_genes=200, seed=2)
    counts = sim.counts.copy()
    counts[[1, 150]] = 0  # two cells the filter removes
    counts[:, :3] = 0  # and three genes
    path = tmp_path / f"sim.{fmt}"
    if fmt == "h5":
        write_h5_counts(path, counts, sim.labels.astype("S"), sim.genes)
    else:
        a = sim.to_anndata()
        a.X = sp.csr_matrix(counts)
        scsc.write_h5ad(a, path)
    assert reads_rows(path)
    cfg = RunConfig()
    whole = scsc.read(path)
    prepared, _ = prepare(whole, cfg)
    assert not prepared.cell_mask.all() and not prepared.gene_mask.all()
    expected = kept_input(whole, prepared)
    reads = []

    def read_rows(lo, hi):
        reads.append((lo, hi))
        return scsc.read(path, shard=lambda n: (lo, hi))

    bounds = [(0, 2), (2, 151), (151, 300)]  # the first block holds at most two of the four labels
    got = kept_input_by_rows(read_rows, prepared, bounds)
    assert reads == bounds
    np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
    assert got.X.dtype == np.float32
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    pd.testing.assert_frame_equal(got.var, expected.var)
    assert got.obs["label"].cat.categories.tolist() == expected.obs["label"].cat.categories.tolist()


def test_only_files_read_by_rows_are_read_a_block_at_a_time(tmp_path):
    from scsc.data.io import reads_rows, write_h5_counts

    sim = scsc.simulate(n_cells=20, n_types=2, n_genes=60, seed=0)
    write_h5_counts(tmp_path / "dense.h5", sim.counts, sim.labels.astype("S"), sim.genes)
    (tmp_path / "table.csv").write_text("cell,g1\nc1,1\n")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    assert reads_rows(tmp_path / "dense.h5")
    assert not reads_rows(tmp_path / "table.csv")
    assert not reads_rows(tmp_path / "broken.h5")
    assert not reads_rows(tmp_path)
