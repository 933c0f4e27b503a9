"""``scsc simulate`` and the simulator behind it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from scsc.data.io import read
from scsc.data.simulate import simulate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_cli_simulate_h5_and_markers(tmp_path, runner, cli_app):
    out, markers = tmp_path / "out.h5", tmp_path / "m.toml"
    result = runner.invoke(cli_app, ["simulate", "--cells", "200", "--types", "3", str(out),
                                     "--markers-out", str(markers)])
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
    result = runner.invoke(cli_app, ["simulate", str(out), "--cells", "60", "--types", "2", "--genes", "100",
                                     "--markers", "5", "-q"])
    assert result.exit_code == 0 and result.output == ""
    adata = read(out, label_key="label")
    assert adata.shape == (60, 100)
    assert adata.obs["label"].nunique() == 2


@pytest.mark.parametrize("args, problem", [
    (["bad.txt"], "output must end in .h5 or .h5ad"),
    (["x.h5", "--types", "10", "--genes", "100"], "10 types × 25 markers need more than 100 genes"),
])
def test_cli_simulate_refuses(tmp_path, runner, cli_app, args, problem):
    result = runner.invoke(cli_app, ["simulate", str(tmp_path / args[0]), *args[1:]])
    assert result.exit_code == 2, result.output
    assert problem in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_simulation_is_seeded_and_has_every_type():
    a, b = simulate(100, 4, 200, seed=3), simulate(100, 4, 200, seed=3)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, simulate(100, 4, 200, seed=4).counts)
    assert set(a.labels) == {f"type_{k}" for k in range(4)}
    assert a.counts.dtype == np.int32 and a.counts.min() >= 0
    assert len(set(a.genes)) == 200


def test_markers_are_up_in_their_type():
    sim = simulate(300, 3, 500, seed=0)
    idx = {g: j for j, g in enumerate(sim.genes)}
    norm = sim.counts / sim.counts.sum(axis=1, keepdims=True)
    for t, genes in sim.markers.items():
        cols = [idx[g] for g in genes]
        inside = norm[sim.labels == t][:, cols].mean()
        outside = norm[sim.labels != t][:, cols].mean()
        assert inside > 3 * outside, t
