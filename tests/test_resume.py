"""Checkpoints and --resume: an interrupted run, continued, gives the labels of an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import scsc
from scsc import RunControl
from scsc.checkpoint import FILE_NAME
from scsc.config import RunConfig
from scsc.data.io import write_h5_counts

#: CLI runs: long enough stages that the poll below sees a checkpoint well before the stage ends.
CLI_SETS = [
    "pretrain.ae_epochs=6",
    "pretrain.gae_epochs=6",
    "pretrain.joint_epochs=30",
    "cluster.epochs=16",
    "model.ae_hidden=[64, 128]",
]
#: API runs: short stages and a warm-up, so every stage can be interrupted.
#: The transport target is refreshed every third epoch, so a resumed run needs the saved one.
API_SETS = [
    "pretrain.ae_epochs=4",
    "pretrain.gae_epochs=4",
    "pretrain.joint_epochs=4",
    "cluster.epochs=8",
    "cluster.warmup_epochs=3",
    "cluster.refresh_every=3",
    "model.ae_hidden=[64, 128]",
]


class Interrupt(Exception):
    """Raised by :class:`StopAfter` to stand in for a kill."""


class StopAfter:
    """A reporter that interrupts the run after the ``n``-th epoch of ``stage`` (before that epoch's checkpoint)."""

    def __init__(self, stage: str, n: int):
        self.stage, self.n, self.seen = stage, n, 0

    def start(self, stage, total):
        pass

    def stop(self, stage):
        pass

    def advance(self, stage, terms):
        if stage == self.stage:
            self.seen += 1
            if self.seen == self.n:
                raise Interrupt


@pytest.fixture(scope="module")
def sim():
    torch.set_num_threads(1)
    return scsc.simulate(n_cells=200, n_types=3, n_genes=300, seed=2)


@pytest.fixture(scope="module")
def data_file(sim, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "sim.h5"
    write_h5_counts(path, sim.counts, sim.labels.astype("S"), sim.genes)
    return path


# ----------------------------------------------------------------------------- API
@pytest.fixture(scope="module")
def api_reference(sim):
    return scsc.run(sim.to_anndata(), n_clusters=3, config=RunConfig().override(API_SETS))


@pytest.mark.parametrize(
    "stage,n,saved_stage,saved_epoch",
    [
        ("pretrain: expression AE", 3, "pretrain_ae", 2),  # the AE stage's shuffling generator restored
        ("pretrain: graph AE", 3, "pretrain_gae", 2),  # AE stage skipped, GAE optimizer restored mid-stage
        ("cluster: warm-up", 3, "cluster_warmup", 2),  # then the head is initialised again after the warm-up
        ("cluster", 3, "cluster", 4),  # head with K × d centroids and its epoch-3 target
    ],
)
def test_api_resume_equals_uninterrupted_run(
    sim, api_reference, tmp_path, stage, n, saved_stage, saved_epoch
):
    cfg = RunConfig().override(API_SETS)
    path = tmp_path / FILE_NAME
    with pytest.raises(Interrupt):
        scsc.run(
            sim.to_anndata(),
            n_clusters=3,
            config=cfg,
            reporter=StopAfter(stage, n),
            control=RunControl(path, 2),
        )
    state = torch.load(path, weights_only=False)
    assert (state["stage"], state["epoch"]) == (saved_stage, saved_epoch)
    assert (
        len(state["history"])
        == {"pretrain_ae": 2, "pretrain_gae": 4 + 2, "cluster_warmup": 12 + 2, "cluster": 12 + 4}[saved_stage]
    )

    r = scsc.run(sim.to_anndata(), n_clusters=3, config=cfg, control=RunControl(path, 2, resume=True))
    assert np.array_equal(r.labels, api_reference.labels)
    assert np.allclose(r.embedding, api_reference.embedding, atol=1e-4)
    pd.testing.assert_frame_equal(r.loss_table, api_reference.loss_table, rtol=1e-4)
    assert set(r.timings) == {"preprocess_graph", "pretrain", "init", "cluster", "total"}
    assert not path.exists()  # removed once the run has finished


def test_api_resume_refuses_other_data_or_config(sim, tmp_path):
    cfg = RunConfig().override(API_SETS)
    path = tmp_path / FILE_NAME
    with pytest.raises(Interrupt):
        scsc.run(
            sim.to_anndata(),
            n_clusters=3,
            config=cfg,
            reporter=StopAfter("cluster", 2),
            control=RunControl(path),
        )
    other = scsc.simulate(n_cells=190, n_types=3, n_genes=300, seed=5).to_anndata()
    with pytest.raises(scsc.InputError, match="different data"):
        scsc.run(other, n_clusters=3, config=cfg, control=RunControl(path, resume=True))
    with pytest.raises(scsc.ConfigError, match=r"cluster\.lr"):
        scsc.run(sim.to_anndata(), n_clusters=3, config=cfg, control=RunControl(path, resume=True), lr=1e-3)
    with pytest.raises(scsc.InputError, match="no checkpoint"):
        scsc.run(
            sim.to_anndata(), n_clusters=3, config=cfg, control=RunControl(tmp_path / "none.pt", resume=True)
        )
    assert path.exists()  # a refused resume leaves the checkpoint alone
    # The keywords that RunControl took over are refused with a pointer to it, not silently read as config.
    with pytest.raises(scsc.ConfigError, match="RunControl"):
        scsc.run(sim.to_anndata(), n_clusters=3, config=cfg, checkpoint=path, resume=True)


# ----------------------------------------------------------------------------- CLI
def cli(data: Path, out: Path, *extra: str, threads: int = 1) -> subprocess.Popen:
    """``scsc cluster`` in a subprocess, on the same scsc code as this test session."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join([str(Path(scsc.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [
        sys.executable,
        "-m",
        "scsc",
        "cluster",
        str(data),
        "--out",
        str(out),
        "-k",
        "3",
        "--no-plots",
        "-q",
        "--checkpoint-every",
        "2",
        *[a for s in CLI_SETS for a in ("--set", s)],
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err


def kill_when(proc: subprocess.Popen, path: Path, wanted) -> dict:
    """SIGKILL ``proc`` as soon as its checkpoint satisfies ``wanted(stage, epoch)``; returns the state left."""
    seen = None
    while proc.poll() is None:
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            state = torch.load(path, weights_only=False)  # whole or absent: it is written by rename
            if wanted(state["stage"], state["epoch"]):
                proc.kill()
                proc.wait()
                return torch.load(path, weights_only=False)
        time.sleep(0.01)
    pytest.fail(
        f"the run ended (exit {proc.returncode}) before a wanted checkpoint appeared: {proc.stderr.read()}"
    )


@pytest.fixture(scope="module")
def cli_reference(data_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    finish(cli(data_file, out))
    assert not (out / FILE_NAME).exists()
    return out


@pytest.mark.parametrize(
    "stage,before",
    [
        pytest.param("cluster", 8, id="killed-while-clustering"),  # of 16 epochs
        pytest.param(
            "pretrain_joint", 20, id="killed-while-pretraining"
        ),  # of 30 epochs, after the AE and GAE stages
    ],
)
def test_cli_killed_then_resumed_gives_the_same_clusters(data_file, cli_reference, tmp_path, stage, before):
    out = tmp_path / "run"
    state = kill_when(cli(data_file, out), out / FILE_NAME, lambda s, e: s == stage and e <= before)
    assert state["stage"] == stage  # the kill came in time: the resumed run starts inside that stage
    assert not (out / "clusters.csv").exists()
    finish(cli(data_file, out, "--resume"))
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "clusters.csv"), pd.read_csv(cli_reference / "clusters.csv")
    )
    # Easy data keep their labels under small changes; the loss of every epoch shows any lost random state.
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "loss.csv"), pd.read_csv(cli_reference / "loss.csv"), rtol=1e-4, atol=1e-6
    )
    assert not (out / FILE_NAME).exists()


def test_cli_kill_and_resume_is_bit_identical_on_two_threads(data_file, tmp_path):
    """SIGKILL mid-clustering with 2 torch threads, resume: the embedding and labels equal an uninterrupted
    2-thread run's to the bit (gradients no longer add with atomics in a thread-dependent order)."""
    import anndata as ad

    ref, out = tmp_path / "ref", tmp_path / "run"
    finish(cli(data_file, ref, threads=2))
    state = kill_when(cli(data_file, out, threads=2), out / FILE_NAME, lambda s, e: s == "cluster" and e <= 8)
    assert state["stage"] == "cluster"
    finish(cli(data_file, out, "--resume", threads=2))
    a, b = ad.read_h5ad(ref / "result.h5ad"), ad.read_h5ad(out / "result.h5ad")
    assert np.array_equal(a.obsm["X_scsc"], b.obsm["X_scsc"])
    assert np.array_equal(a.obs["scsc_cluster"].to_numpy(), b.obs["scsc_cluster"].to_numpy())


def test_cli_resume_refusals(sim, data_file, tmp_path, runner, cli_app):
    sets = [a for s in CLI_SETS for a in ("--set", s)]
    args = ["cluster", str(data_file), "--out", str(tmp_path / "run"), "-k", "3", "-q", *sets]
    res = runner.invoke(cli_app, [*args, "--resume"])
    assert res.exit_code == 2 and "no checkpoint" in res.output and "Traceback" not in res.output

    # A checkpoint of this config, as the CLI would have left it.
    cfg = RunConfig().override([*CLI_SETS, "cluster.n_clusters=3"])
    with pytest.raises(Interrupt):
        scsc.run(
            sim.to_anndata(),
            config=cfg,
            reporter=StopAfter("pretrain: graph AE", 2),
            control=RunControl(tmp_path / "run" / FILE_NAME, 2),
        )
    res = runner.invoke(cli_app, [*args, "--resume", "--set", "graph.k=12"])
    assert res.exit_code == 2 and "graph.k" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli_app, [*args, "--resume", "--seed", "1"])
    assert res.exit_code == 2 and "seed" in res.output
    # Without --resume, the interrupted run is not silently replaced.
    res = runner.invoke(cli_app, args)
    assert res.exit_code == 2 and "--resume" in res.output
    assert (tmp_path / "run" / FILE_NAME).exists()


# ----------------------------------------------------------------------------- pretraining alone
def _encoder_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_resumed_equals_uninterrupted_and_cli_continues_it(
    sim, data_file, tmp_path, runner, cli_app
):
    """``scsc.pretrain`` / ``scsc pretrain`` checkpoint like ``cluster``: interrupted in the graph AE stage and
    resumed, the encoder weights equal an uninterrupted pretraining's, bit for bit."""
    cfg = RunConfig().override(API_SETS)
    reference = scsc.pretrain(sim.to_anndata(), cfg)
    path = tmp_path / FILE_NAME
    with pytest.raises(Interrupt):
        scsc.pretrain(
            sim.to_anndata(), cfg, reporter=StopAfter("pretrain: graph AE", 3), control=RunControl(path, 2)
        )
    assert torch.load(path, weights_only=False)["stage"] == "pretrain_gae"
    resumed = scsc.pretrain(sim.to_anndata(), cfg, control=RunControl(path, 2, resume=True))
    assert _encoder_equal(resumed["encoder"], reference["encoder"])
    assert [r["total"] for r in resumed["history"]] == pytest.approx(
        [r["total"] for r in reference["history"]]
    )

    # The CLI: an interrupted pretraining in --out is neither replaced silently nor lost; --resume finishes it.
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        scsc.pretrain(
            sim.to_anndata(),
            cfg,
            reporter=StopAfter("pretrain: expression AE", 3),
            control=RunControl(out / FILE_NAME, 2),
        )
    args = ["pretrain", str(data_file), "--out", str(out), "-q", *[a for s in API_SETS for a in ("--set", s)]]
    res = runner.invoke(cli_app, args)
    assert res.exit_code == 2 and "--resume" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli_app, [*args, "--resume", "--seed", "3"])
    assert res.exit_code == 2 and "seed" in res.output
    res = runner.invoke(cli_app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert not (out / FILE_NAME).exists()
    saved = torch.load(out / "pretrain.pt", weights_only=False)
    fresh = scsc.pretrain(scsc.read(data_file), cfg)
    assert _encoder_equal(saved["encoder"], fresh["encoder"])
