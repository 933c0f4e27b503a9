"""The pluggy registry: built-ins, a plugin found through a real entry point, blocking, clashes.

Other plugins may be installed in the environment (the repository's own ``plugins/``), so the tests check the
built-ins by provider and never assume they are the only components.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from scsc.config import RunConfig
from scsc.errors import ConfigError
from scsc.plugins import Registry, get_registry
from scsc.plugins.manager import BLOCK_ENV

FIXTURE_DIR = Path(__file__).parent / "plugin_fixture"

BUILTINS = {
    "augment": {"dual", "noise", "graph", "none"},
    "encoder": {"siamese", "ae", "graph"},
    "fusion": {"siamese", "mean"},
    "cluster": {"sinkhorn", "dec", "kmeans"},
}
BUILTIN_PROVIDER = {kind: f"scsc.components.{kind}" for kind in BUILTINS}


def install_fake_distribution(root: Path, dist: str, module: str, entry_point: str) -> None:
    """What ``pip install`` would leave: the module and ``<dist>-0.1.dist-info`` with an ``scsc`` entry point.

    ``importlib.metadata`` (and so pluggy's ``load_setuptools_entrypoints``) finds any ``*.dist-info`` folder
    in a ``sys.path`` entry, so nothing is installed into the environment.
    """
    shutil.copy(FIXTURE_DIR / f"{module}.py", root / f"{module}.py")
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[scsc]\n{entry_point} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for fake distributions; afterwards the registry is rebuilt without it."""
    root = tmp_path / "site"
    root.mkdir()
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root
    finally:
        monkeypatch.undo()  # drop SCSC_BLOCK_PLUGINS before the registry is rebuilt
        sys.path.remove(str(root))
        for name in ("scsc_fixture_plugin", "scsc_fixture_clash"):
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        registry = get_registry(refresh=True)
        assert "fixture_head" not in registry.names("cluster")
        assert builtins_of(registry) == BUILTINS


def builtins_of(registry) -> dict[str, set[str]]:
    found = {kind: set() for kind in BUILTINS}
    for comp in registry.all():
        if comp.provider == BUILTIN_PROVIDER[comp.kind]:
            found[comp.kind].add(comp.name)
    return found


def assert_lists_names(message: str, names) -> None:
    """An unknown-name error lists the valid names, sorted (built-ins and any installed plugins)."""
    listed = message.split("valid: ", 1)[1].split(", ")
    assert set(names) <= set(listed) and listed == sorted(listed), message


# --------------------------------------------------------------------------- built-ins
def test_builtins_are_registered():
    registry = get_registry(refresh=True)
    assert builtins_of(registry) == BUILTINS
    for kind, names in BUILTINS.items():
        assert names <= set(registry.names(kind)), kind
        for name in names:
            comp = registry.get(kind, name)
            assert comp.provider == BUILTIN_PROVIDER[kind]
            assert comp.summary and "\n" not in comp.summary
            assert callable(comp.factory)


def test_components_json_lists_every_builtin(runner, cli_app):
    get_registry(refresh=True)
    result = runner.invoke(cli_app, ["components", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    builtin_rows = {(r["kind"], r["name"]) for r in rows if r["provider"] == BUILTIN_PROVIDER[r["kind"]]}
    assert builtin_rows == {(k, n) for k, ns in BUILTINS.items() for n in ns}
    for r in rows:
        assert set(r) == {"kind", "name", "provider", "summary"}
        assert r["provider"] and r["summary"]
        assert (r["kind"], r["name"]) in builtin_rows or r["name"] not in BUILTINS[r["kind"]]
    # Listed kind by kind in pipeline order, names sorted within a kind.
    kinds = [r["kind"] for r in rows]
    assert kinds == sorted(kinds, key=["augment", "encoder", "fusion", "cluster"].index)
    cluster_names = [r["name"] for r in rows if r["kind"] == "cluster"]
    assert cluster_names == sorted(cluster_names)


def test_components_table(runner, cli_app):
    result = runner.invoke(cli_app, ["components"])
    assert result.exit_code == 0, result.output
    for name in ("sinkhorn", "siamese", "dual"):
        assert name in result.output


def test_unknown_name_lists_valid_names():
    registry = get_registry()
    with pytest.raises(ConfigError, match=r"unknown encoder component 'nope'; valid: ") as exc:
        registry.get("encoder", "nope")
    assert_lists_names(str(exc.value), BUILTINS["encoder"])
    with pytest.raises(ConfigError, match=r"unknown augment component 'Dual'") as exc:
        registry.build("augment", "Dual", RunConfig())
    assert_lists_names(str(exc.value), BUILTINS["augment"])


def test_unknown_kind_is_refused():
    registry = Registry()
    with pytest.raises(ConfigError, match="unknown component kind 'decoder'"):
        registry.add("decoder", "x", object)


def test_builtins_build():
    registry = get_registry()
    cfg = RunConfig()
    head = registry.build("cluster", "sinkhorn", cfg)
    assert type(head).__name__ == "SinkhornHead"


def test_builtin_module_can_be_blocked(monkeypatch, site):
    monkeypatch.setenv(BLOCK_ENV, "scsc.components.cluster")
    registry = get_registry(refresh=True)
    assert builtins_of(registry)["cluster"] == set()
    assert builtins_of(registry)["encoder"] == BUILTINS["encoder"]
    with pytest.raises(ConfigError, match="unknown cluster component 'sinkhorn'"):
        registry.get("cluster", "sinkhorn")


# --------------------------------------------------------------------------- a real entry-point plugin
def test_entry_point_plugin_is_discovered(site, runner, cli_app):
    install_fake_distribution(site, "scsc-fixture-plugin", "scsc_fixture_plugin", "fixture")
    registry = get_registry(refresh=True)
    comp = registry.get("cluster", "fixture_head")
    assert comp.provider == "fixture (scsc-fixture-plugin 0.1)"
    assert comp.summary == "test plugin head"
    assert BUILTINS["cluster"] | {"fixture_head"} <= set(registry.names("cluster"))
    assert builtins_of(registry) == BUILTINS
    head = registry.build("cluster", "fixture_head", RunConfig())
    assert type(head).__name__ == "FixtureHead"

    # The CLI shows it, and accepts it as a component name.
    result = runner.invoke(cli_app, ["components", "--json"])
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.output)}
    assert rows[("cluster", "fixture_head")]["provider"] == "fixture (scsc-fixture-plugin 0.1)"
    from scsc.cli.run import build_config

    assert build_config(None, ["components.cluster=fixture_head"]).components.cluster == "fixture_head"


def test_entry_point_plugin_can_be_blocked(site, monkeypatch, runner, cli_app):
    install_fake_distribution(site, "scsc-fixture-plugin", "scsc_fixture_plugin", "fixture")
    monkeypatch.setenv(BLOCK_ENV, "other, fixture")
    registry = get_registry(refresh=True)
    assert "fixture_head" not in registry.names("cluster")
    with pytest.raises(ConfigError, match="unknown cluster component 'fixture_head'") as exc:
        registry.get("cluster", "fixture_head")
    assert_lists_names(str(exc.value), BUILTINS["cluster"])
    assert "fixture_head" not in str(exc.value).split("valid: ")[1]
    result = runner.invoke(cli_app, ["components", "--json"])
    assert "fixture_head" not in result.output

    monkeypatch.delenv(BLOCK_ENV)
    assert "fixture_head" in get_registry(refresh=True).names("cluster")


def test_duplicate_name_names_both_providers(site):
    install_fake_distribution(site, "scsc-fixture-clash", "scsc_fixture_clash", "clash")
    with pytest.raises(ConfigError) as exc:
        get_registry(refresh=True)
    message = str(exc.value)
    assert "cluster component 'kmeans' is registered twice" in message
    assert "scsc.components.cluster" in message
    assert "clash (scsc-fixture-clash 0.1)" in message


def test_duplicate_reaches_the_cli_as_a_user_error(site, runner, cli_app, small_h5, tmp_path):
    install_fake_distribution(site, "scsc-fixture-clash", "scsc_fixture_clash", "clash")
    import scsc.plugins.manager as manager

    manager._REGISTRY = None  # as in a fresh process: the registry is built on first use
    result = runner.invoke(cli_app, ["components", "--json"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "registered twice" in result.output and "clash (scsc-fixture-clash 0.1)" in result.output


def test_list_components_after_loading_the_builtins():
    """``scsc.list_components()`` works after the ``scsc.components`` subpackage is imported."""
    import scsc
    from scsc.components import cluster  # noqa: F401 (the import under test)

    get_registry(refresh=True)
    rows = scsc.list_components()
    assert {(k, n) for k, ns in BUILTINS.items() for n in ns} <= {(r["kind"], r["name"]) for r in rows}
    import scsc.components.augment as augment  # the subpackage's modules stay importable this way too

    assert augment.__name__ == "scsc.components.augment"
