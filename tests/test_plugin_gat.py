"""The plugin package plugins/scsc-gat: an encoder that is not an AE + graph AE pair, with its own config
section, proving the component contract (scsc/components/base.py).

Installed by the dev/test setup: ``pip install -e ".[test]" -e plugins/scsc-leiden -e plugins/scsc-gat``.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("scsc_gat") is None,
    reason="plugin package scsc-gat is not installed (pip install -e plugins/scsc-gat)",
)


@pytest.fixture(autouse=True)
def fresh_registry():
    from scsc.plugins import get_registry

    get_registry(refresh=True)
    yield
    get_registry(refresh=True)


def test_gat_encoder_and_its_section_are_registered():
    from scsc.components.base import check_contract
    from scsc.config import RunConfig
    from scsc.plugins import get_registry

    registry = get_registry()
    comp = registry.get("encoder", "gat")
    assert comp.provider.startswith("scsc_gat (scsc-gat ")
    enc = registry.build("encoder", "gat", RunConfig(), n_input=20, n_genes=0)
    check_contract("encoder", "gat", enc)
    assert not hasattr(enc, "ae") and not hasattr(enc, "gae")  # the trainer never asks for the pair
    assert [s.name for s in enc.pretrain_stages(RunConfig())] == ["pretrain_gae"]


def test_the_registry_loads_the_plugin_without_torch_geometric(fresh_python):
    """torch-geometric takes seconds to import: only a run that builds the ``gat`` encoder pays for it."""
    code = (
        "import sys; from scsc.plugins import get_registry; from scsc.config import RunConfig; "
        "r = get_registry(); assert 'gat' in r.names('encoder'); "
        "print('torch_geometric' in sys.modules, end=' '); "
        "r.build('encoder', 'gat', RunConfig(), n_input=20, n_genes=0); print('torch_geometric' in sys.modules)"
    )
    assert fresh_python(code) == "False True"


def test_plugin_section_is_validated_like_a_builtin_one(tmp_path):
    from scsc.config import RunConfig
    from scsc.errors import ConfigError

    cfg = RunConfig().override(["plugin.gat.heads=2"])
    assert cfg.section("gat").heads == 2 and cfg.section("gat").hidden == 64
    path = tmp_path / "c.toml"
    cfg.save(path)
    assert "[plugin.gat]" in path.read_text()
    assert RunConfig.from_toml(path).section("gat").heads == 2
    assert "plugin" not in RunConfig().to_toml()  # no table unless a plugin section is set
    with pytest.raises(ConfigError, match="heads"):
        RunConfig().override(["plugin.gat.heads=two"])
    with pytest.raises(ConfigError, match="unknown key 'head'"):
        RunConfig().override(["plugin.gat.head=2"])
    with pytest.raises(ConfigError, match="unknown plugin section 'gatt'"):
        RunConfig().override(["plugin.gatt.heads=2"])


def test_cli_refuses_a_bad_plugin_setting_in_one_line(runner, cli_app, small_h5, tmp_path):
    res = runner.invoke(
        cli_app,
        [
            "cluster",
            str(small_h5),
            "--out",
            str(tmp_path / "o"),
            "--encoder",
            "gat",
            "--set",
            "plugin.gat.heads=0",
        ],
    )
    assert res.exit_code == 2 and "plugin.gat" in res.output and "Traceback" not in res.output


def test_gat_encoder_runs_in_scsc_ablate(run_study):
    rows = run_study(
        '[[variants]]\nname = "GAT encoder"\nencoder = "gat"\nset = { "plugin.gat.heads" = 2 }\n',
        20,
        "-k",
        "3",
    )
    gat = rows["GAT encoder"]
    assert gat["status"] == "ok", gat["error"]
    assert float(gat["ari"]) >= 0.9  # three well-separated simulated types
    assert gat["pretrain_key"] != rows["full model"]["pretrain_key"]
