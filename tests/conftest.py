"""Shared fixtures: the real data folder beside the repository, and one small simulated data set.

The suite is meant to run on a small shared machine: torch and the BLAS libraries use one thread, and every
test works on a few hundred simulated cells unless it says otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

#: Real labelled data sets live beside the repository (see ../shared/datasets/README.md), never inside it.
SHARED_DATASETS = Path(__file__).parents[2] / "shared" / "datasets"
#: The tuning collection (../shared/tuning/README.md): where defaults and thresholds are chosen.
SHARED_TUNING = Path(__file__).parents[2] / "shared" / "tuning"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder of real data sets; the test is skipped when it is missing."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(
            f"real data sets not found at {SHARED_DATASETS} "
            "(expected ../shared/datasets beside the repository)"
        )
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def shared_file(shared_datasets):
    """``shared_file(name)``: a file of the shared data folder, or a skip naming it."""

    def get(name: str) -> Path:
        path = shared_datasets / name
        if not path.is_file():
            pytest.skip(f"real data set {name} not found in {shared_datasets}")
        return path

    return get


@pytest.fixture(scope="session")
def tuning_file():
    """``tuning_file(name)``: a file of the tuning collection, or a skip naming it."""

    def get(name: str) -> Path:
        path = SHARED_TUNING / name
        if not path.is_file():
            pytest.skip(
                f"tuning data set {name} not found in {SHARED_TUNING} "
                "(expected ../shared/tuning beside the repository)"
            )
        return path

    return get


@pytest.fixture(scope="session")
def small_sim():
    """300 cells × 500 genes, 3 types (``scsc.data.simulate.Simulation``)."""
    from scsc.data.simulate import simulate

    return simulate(n_cells=300, n_types=3, n_genes=500)


@pytest.fixture(scope="session")
def small_h5(tmp_path_factory, small_sim) -> Path:
    """``small_sim`` written in the ``.h5`` exchange format (X counts, Y labels, gene_names)."""
    from scsc.data.io import write_h5_counts

    path = tmp_path_factory.mktemp("sim") / "sim300.h5"
    write_h5_counts(path, small_sim.counts, small_sim.labels.astype("S"), small_sim.genes)
    return path


@pytest.fixture(scope="session")
def small_adata(small_sim):
    """``small_sim`` as an AnnData of counts with ``obs["label"]``."""
    return small_sim.to_anndata()


@pytest.fixture(scope="session")
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session")
def cli_app():
    from scsc.cli import app

    return app


@pytest.fixture(scope="session")
def fresh_python():
    """Run Python ``code`` in a new interpreter (what a first import, or a warning torch gives once per
    process, does before anything else in the test session touched it) → its stdout, stripped; stderr and the
    exit status are in the assertion message of a caller whose expected output does not come."""
    import subprocess
    import sys

    def run(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        return done.stdout.strip() + (
            "" if done.returncode == 0 else f"\n[exit {done.returncode}] {done.stderr}"
        )

    return run


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def run_study(tmp_path, small_h5, runner, cli_app):
    """``run_study(variants_toml, gae_epochs=2, *cli_args)``: a one-seed study of ``small_h5`` with short
    stages, a "full model" variant plus ``variants_toml``, run by ``scsc ablate`` in-process → results.csv rows
    by variant name."""
    import csv

    def run(variants: str, gae_epochs: int = 2, *extra: str) -> dict[str, dict[str, str]]:
        study = tmp_path / "study.toml"
        study.write_text(
            f'datasets = ["{small_h5}"]\nseeds = [0]\n\n[base.pretrain]\nae_epochs = 2\n'
            f"gae_epochs = {gae_epochs}\njoint_epochs = 2\n[base.cluster]\nepochs = 3\n\n"
            f'[[variants]]\nname = "full model"\n\n{variants}'
        )
        out = tmp_path / "out"
        result = runner.invoke(
            cli_app, ["ablate", str(study), "--out", str(out), "--jobs", "0", "--quiet", *extra]
        )
        assert result.exit_code == 0, result.output
        with (out / "results.csv").open(newline="") as fh:
            rows = {r["variant"]: r for r in csv.DictReader(fh)}
        summary = (out / "summary.md").read_text()
        assert all(name in summary for name in rows)
        return rows

    return run
