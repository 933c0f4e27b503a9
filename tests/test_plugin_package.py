"""The separately installable plugin package plugins/scsc-leiden (entry-point group ``scsc``).

Installed by the dev/test setup: ``pip install -e ".[test]" -e plugins/scsc-leiden``.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

PLUGIN_DIR = Path(__file__).parents[1] / "plugins" / "scsc-leiden"


def _installed() -> bool:
    if importlib.util.find_spec("scsc_leiden") is None:
        return False
    return any(ep.value == "scsc_leiden.plugin" for ep in md.entry_points(group="scsc"))


pytestmark = pytest.mark.skipif(
    not _installed(),
    reason="plugin package scsc-leiden is not installed (pip install -e plugins/scsc-leiden)",
)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test sees the installed plugins, and leaves a registry built without any block list."""
    from scsc.plugins import get_registry
    from scsc.plugins.manager import BLOCK_ENV

    monkeypatch.delenv(BLOCK_ENV, raising=False)
    get_registry(refresh=True)
    yield
    monkeypatch.undo()
    get_registry(refresh=True)


def test_package_declares_the_scsc_entry_point():
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    meta = tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["scsc"] == {"scsc_leiden": "scsc_leiden.plugin"}
    assert any(d.startswith("scsc") and not d.startswith("scsc-") for d in meta["project"]["dependencies"])
    dist = md.distribution("scsc-leiden")
    assert dist.version == meta["project"]["version"]


def test_leiden_appears_in_scsc_components_json(runner, cli_app):
    result = runner.invoke(cli_app, ["components", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.output)}
    row = rows[("cluster", "leiden")]
    assert row["provider"].startswith("scsc_leiden (scsc-leiden ")
    assert "Leiden" in row["summary"]


def test_plugin_can_be_blocked(monkeypatch):
    from scsc.errors import ConfigError
    from scsc.plugins import get_registry
    from scsc.plugins.manager import BLOCK_ENV

    monkeypatch.setenv(BLOCK_ENV, "scsc_leiden")
    registry = get_registry(refresh=True)
    with pytest.raises(ConfigError, match="unknown cluster component 'leiden'"):
        registry.get("cluster", "leiden")


def test_partition_hits_the_requested_number_of_communities():
    from scsc_leiden.head import partition

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(5, 6))
    z = np.concatenate([c + rng.normal(size=(60, 6)) for c in centers])
    for k in (2, 5, 8):
        labels = partition(z, k, resolution=1.0, seed=0)
        assert labels.shape == (300,) and labels.min() == 0 and labels.max() + 1 == k, k
    # the five planted groups at the default resolution; seeded
    labels = partition(z, None, resolution=1.0, seed=0)
    assert labels.max() + 1 == 5 and np.array_equal(labels, partition(z, None, resolution=1.0, seed=0))


def test_head_implements_the_interface(small_sim):
    import torch

    from scsc.config import RunConfig
    from scsc.plugins import get_registry

    cfg = RunConfig()
    head = get_registry().build("cluster", "leiden", cfg)
    rng = np.random.default_rng(1)
    z = torch.from_numpy(
        np.concatenate([rng.normal(loc=c, size=(50, 4)) for c in (0, 6, 12)]).astype(np.float32)
    )
    labels = head.init(z, 3)
    assert labels.shape == (150,) and set(labels) == {0, 1, 2}
    assert head.n_clusters == 3 and torch.isclose(
        head.proportions.sum(), torch.tensor(1.0, dtype=torch.float64)
    )
    q = head.soft_assign(z)
    assert q.shape == (150, 3) and torch.allclose(q.sum(1), torch.ones(150))
    terms = head.loss(z, q)
    assert set(terms) == {"clu"} and torch.isfinite(terms["clu"])
    pred = head.predict(z)
    assert pred.shape == (150,) and pred.max() < 3


def test_plugin_component_runs_in_a_study(run_study):
    rows = run_study('[[variants]]\nname = "Leiden head (unknown K)"\ncluster = "leiden"\n')
    leiden = rows["Leiden head (unknown K)"]
    assert leiden["status"] == "ok", leiden["error"]
    assert 0.0 <= float(leiden["ari"]) <= 1.0 and int(leiden["n_clusters"]) >= 2
    assert (
        leiden["pretrain_key"] == rows["full model"]["pretrain_key"]
    )  # the head does not change pretraining
