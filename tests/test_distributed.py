"""Data-parallel training: two gloo processes under torchrun agree with a single-process minibatch run."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import scsc
from scsc import RunControl
from scsc.config import RunConfig
from scsc.data.io import write_h5_counts
from scsc.distributed import Context
from scsc.errors import ConfigError

SETS = [
    "pretrain.ae_epochs=5",
    "pretrain.gae_epochs=10",
    "pretrain.joint_epochs=10",
    "cluster.epochs=10",
    "model.ae_hidden=[64, 128]",
]


@pytest.fixture(scope="module")
def sim():
    return scsc.simulate(n_cells=400, n_types=4, n_genes=400, seed=5)


@pytest.fixture(scope="module")
def data_file(sim, tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "sim.h5"
    write_h5_counts(path, sim.counts, sim.labels.astype("S"), sim.genes)
    return path


def _cluster_args(data_file, out) -> list[str]:
    sets = [x for s in SETS for x in ("--set", s)]
    return [
        "cluster",
        str(data_file),
        "--out",
        str(out),
        "-k",
        "4",
        "--batch-size",
        "100",
        "--no-plots",
        "-q",
        *sets,
    ]


def test_two_gloo_ranks_agree_with_one_process(data_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "scsc",
        *_cluster_args(data_file, ddp_out),
        "--distributed",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "scsc", *_cluster_args(data_file, single_out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = pd.read_csv(ddp_out / "clusters.csv")
    b = pd.read_csv(single_out / "clusters.csv")
    assert list(a.cell) == list(b.cell)
    assert adjusted_rand_score(a.cluster, b.cluster) >= 0.9
    assert adjusted_rand_score(a.label, a.cluster) >= 0.9
    # Rank 0 wrote the run folder, once, and removed its checkpoint.
    assert sorted(p.name for p in ddp_out.iterdir()) == sorted(p.name for p in single_out.iterdir())
    # It read the input back a shard at a time: the same counts, cells, genes and labels as one process.
    import anndata as ad

    ra, rb = ad.read_h5ad(ddp_out / "result.h5ad"), ad.read_h5ad(single_out / "result.h5ad")
    assert (ra.X != rb.X).nnz == 0 and ra.X.dtype == rb.X.dtype
    assert list(ra.obs_names) == list(rb.obs_names) and list(ra.var_names) == list(rb.var_names)
    assert list(ra.obs["label"]) == list(rb.obs["label"])
    assert ra.obsm["X_scsc"].shape == rb.obsm["X_scsc"].shape


def test_distributed_needs_minibatches(sim):
    cfg = RunConfig().override([*SETS, "minibatch.batch_size=0"])
    with pytest.raises(ConfigError, match="--batch-size"):
        scsc.run(
            sim.to_anndata(), n_clusters=4, config=cfg, control=RunControl(context=Context(rank=0, world=2))
        )


def test_distributed_flag_without_torchrun_is_a_plain_run(runner, cli_app, data_file, tmp_path):
    out = tmp_path / "plain"
    result = runner.invoke(cli_app, [*_cluster_args(data_file, out), "--distributed"])
    assert result.exit_code == 0, result.output
    assert (out / "clusters.csv").exists()


def test_distributed_batch_size_gives_every_rank_a_batch():
    from scsc.config import MinibatchConfig
    from scsc.data.batches import distributed_batch_size

    cfg = MinibatchConfig()
    assert distributed_batch_size(cfg, 3000, 2) == 1500
    assert distributed_batch_size(cfg, 3001, 4) == 751
    assert distributed_batch_size(cfg, 19_000, 2) == cfg.auto_batch_size


def test_two_ranks_choose_batches_and_train_zinb_over_hundreds_of_cells(tmp_path):
    """No --batch-size: the run picks batches itself (one per rank) and says so once; with 900 cells a batch
    holds 450, so the ZINB term runs in chunks (under DDP it used to stop at the first clustering epoch)."""
    sim = scsc.simulate(n_cells=900, n_types=3, n_genes=300, seed=2)
    path = tmp_path / "sim900.h5"
    write_h5_counts(path, sim.counts, sim.labels.astype("S"), sim.genes)
    sets = [x for s in [*SETS[:-1], "model.ae_hidden=[32, 64]", "cluster.epochs=3"] for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "scsc",
        "cluster",
        str(path),
        "--out",
        str(tmp_path / "ddp"),
        "-k",
        "3",
        "--no-plots",
        *sets,
        "--distributed",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("batches of 450 of the 900 cells") == 1  # rank 0 only
    a = pd.read_csv(tmp_path / "ddp" / "clusters.csv")
    assert adjusted_rand_score(a.label, a.cluster) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("cells", [3000, 30_000])
def test_default_config_under_two_ranks_agrees_with_one_process(tmp_path, cells):
    """The issue's command as written: default config, no --batch-size, two gloo ranks; compared with a
    single-process run on the same batches (ARI ≥ 0.9)."""
    from scsc.config import MinibatchConfig
    from scsc.data.batches import distributed_batch_size

    path = tmp_path / "sim.h5ad"
    scsc.write_h5ad(scsc.simulate(n_cells=cells, n_types=6, seed=0).to_anndata(), path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "scsc",
        "cluster",
        str(path),
        "--out",
        str(tmp_path / "ddp"),
        "--n-clusters",
        "6",
        "--no-plots",
        "--distributed",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    size = distributed_batch_size(MinibatchConfig(), cells, 2) if cells <= 20_000 else 8192
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "scsc",
            "cluster",
            str(path),
            "--out",
            str(tmp_path / "one"),
            "--n-clusters",
            "6",
            "--no-plots",
            "-q",
            "--batch-size",
            str(size),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "ddp" / "clusters.csv"), pd.read_csv(tmp_path / "one" / "clusters.csv")
    assert adjusted_rand_score(a.cluster, b.cluster) >= 0.9


def test_pretrain_under_two_ranks_chooses_batches_and_writes_once(data_file, tmp_path):
    """``scsc pretrain --distributed`` without --batch-size: batches chosen and said once, rank 0 writes
    pretrain.pt (no checkpoint left), and ``scsc cluster --pretrained`` clusters from it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "pre"
    sets = [x for s in SETS for x in ("--set", s)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "scsc",
        "pretrain",
        str(data_file),
        "--out",
        str(out),
        *sets,
        "--distributed",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("batches of 200 of the 400 cells") == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "pretrain.pt"]
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "scsc",
            "cluster",
            str(data_file),
            "--out",
            str(tmp_path / "c"),
            "--pretrained",
            str(out / "pretrain.pt"),
            "-k",
            "4",
            "--no-plots",
            "-q",
            *sets,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = pd.read_csv(tmp_path / "c" / "clusters.csv")
    assert adjusted_rand_score(a.label, a.cluster) >= 0.9
