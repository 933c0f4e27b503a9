"""RunConfig: the METHOD.md defaults, TOML round trip, dotted overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from scsc.config import RunConfig
from scsc.errors import ConfigError

# Every bracketed default of docs/METHOD.md, as (dotted key, value).
METHOD_DEFAULTS = [
    # §1 preprocessing
    ("preprocess.min_cells", 3),
    ("preprocess.n_hvg", 1000),  # scsc default 2000, see DEVIATIONS
    ("preprocess.n_pcs", 100),  # scsc default 20
    ("preprocess.scale_clip", 10.0),
    ("preprocess.log_normalized", False),
    # §2–3 graph and augmentation
    ("graph.k", 10),
    ("graph.ppr_alpha", 0.5),
    ("graph.edge_drop", 0.1),
    ("model.noise_std", 0.1),
    # default pipeline
    ("components.augment", "dual"),
    ("components.encoder", "siamese"),
    ("components.fusion", "siamese"),
    ("components.cluster", "sinkhorn"),
    # §4–5 networks and fusion
    ("model.ae_hidden", [128, 256, 512]),
    ("model.gae_hidden", [128, 256]),
    ("model.latent", 20),
    ("model.attention_scale", 1.0),
    # §6 losses
    ("loss.rec_x", 1.0),
    ("loss.rec_graph", 1.0),
    ("loss.rec_adj", 0.1),
    ("loss.cr_sample_ae", 0.1),
    ("loss.cr_sample_graph", 5.0),
    ("loss.cr_feature_ae", 1.0),
    ("loss.cr_feature_graph", 1.0),
    ("loss.prop", 1000.0),
    ("loss.zinb", 5.0),
    ("loss.clu", 50.0),
    ("loss.zinb_cells", 0),  # METHOD §6.4 averages over every cell
    # §6.5 clustering target
    ("cluster.sinkhorn_lambda", 5.0),
    ("cluster.sinkhorn_iters", 1000),
    ("cluster.refresh_every", 1),
    ("cluster.n_clusters", None),
    # §7 schedule
    ("pretrain.ae_epochs", 100),
    ("pretrain.ae_batch_size", 256),
    ("pretrain.ae_lr", 5e-4),
    ("pretrain.gae_epochs", 50),
    ("pretrain.gae_lr", 5e-4),
    ("pretrain.gae_adj_weight", 0.5),
    ("pretrain.joint_epochs", 200),
    ("pretrain.joint_lr", 1e-4),
    ("pretrain.joint_rec_graph", 0.9),
    ("pretrain.joint_adj", 0.1),
    ("pretrain.joint_align", 0.1),
    ("cluster.epochs", 50),
    ("cluster.lr", 5e-3),
    # top level
    ("seed", 0),
    ("device", "cpu"),
]


# Defaults that deliberately differ from METHOD.md (docs/method.md says why and what it measured):
# (key, scsc default). examples/published_defaults.toml restores the METHOD value of each.
DEVIATIONS = {
    "preprocess.n_hvg": 2000,
    "preprocess.n_pcs": 20,
    "model.fusion_weights": "feature",
    "loss.zinb_cells": 1024,
    "pretrain.joint_epochs": 30,
    "pretrain.ae_batch_size": 1024,
    "cluster.epochs": 5,
}
PUBLISHED = Path(__file__).resolve().parents[1] / "examples" / "published_defaults.toml"


def get(cfg: RunConfig, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("key, value", METHOD_DEFAULTS, ids=[k for k, _ in METHOD_DEFAULTS])
def test_defaults_match_method(key, value):
    got = get(RunConfig(), key)
    expected = DEVIATIONS.get(key, value)
    assert got == expected and type(got) is type(expected), f"{key}: {got!r} ≠ {expected!r}"


@pytest.mark.parametrize("key, value", METHOD_DEFAULTS, ids=[k for k, _ in METHOD_DEFAULTS])
def test_published_config_restores_every_method_default(key, value):
    assert get(RunConfig.from_toml(PUBLISHED), key) == value


def test_published_config_sets_per_cell_fusion_weights():
    assert RunConfig.from_toml(PUBLISHED).model.fusion_weights == "cell"


def test_toml_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.override(
        [
            "loss.zinb=0",
            "graph.k=15",
            "model.ae_hidden=[64, 32]",
            "cluster.n_clusters=7",
            "components.fusion=mean",
            "preprocess.log_normalized=true",
            "seed=3",
        ]
    )
    path = tmp_path / "config.toml"
    cfg.save(path)
    back = RunConfig.from_toml(path)
    assert back == cfg
    assert back.to_toml() == cfg.to_toml()
    assert list(tmp_path.iterdir()) == [path]  # the atomic save leaves no temporary file


def test_default_round_trip_drops_none(tmp_path):
    """TOML has no null: n_clusters=None is left out and comes back as None."""
    cfg = RunConfig()
    assert "n_clusters" not in cfg.to_dict()["cluster"]
    path = tmp_path / "c.toml"
    cfg.save(path)
    assert RunConfig.from_toml(path) == RunConfig()


def test_partial_toml_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 4\n[loss]\nclu = 10\n[graph]\nk = 12\n")
    cfg = RunConfig.from_toml(path)
    assert (cfg.seed, cfg.loss.clu, cfg.graph.k) == (4, 10.0, 12)
    assert cfg.loss.zinb == 5.0 and cfg.preprocess.n_hvg == 2000


def test_override_strings():
    cfg = RunConfig().override(["loss.zinb=0", "components.cluster=dec"])
    assert cfg.loss.zinb == 0.0 and isinstance(cfg.loss.zinb, float)
    assert cfg.components.cluster == "dec"
    assert RunConfig().override(["cluster.n_clusters=none"]).cluster.n_clusters is None
    assert RunConfig().override(["cluster.n_clusters=8"]).cluster.n_clusters == 8
    assert RunConfig().override(["preprocess.log_normalized=true"]).preprocess.log_normalized is True
    assert RunConfig().override(["graph.k=12.0"]).graph.k == 12  # integral floats are accepted as ints


def test_override_dict_and_copy_independence():
    base = RunConfig()
    cfg = base.copy().override({"graph.k": 7, "loss.clu": 20})
    assert (cfg.graph.k, cfg.loss.clu) == (7, 20.0)
    assert (base.graph.k, base.loss.clu) == (10, 50.0)


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("loss.zinbb=1", "zinbb"),
        ("graphs.k=3", "graphs"),
        ("nope=1", "nope"),
    ],
)
def test_unknown_key_names_the_key(assignment, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'") as exc:
        RunConfig().override([assignment])
    assert "valid keys" in str(exc.value)


def test_unknown_key_in_toml_names_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[loss]\nzinbb = 1\n")
    with pytest.raises(ConfigError, match="zinbb") as exc:
        RunConfig.from_toml(path)
    assert str(path) in str(exc.value)


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[loss\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        RunConfig.from_toml(path)


@pytest.mark.parametrize(
    "assignment",
    [
        "graph.k=ten",
        "graph.k=2.5",
        "graph.k=[1, 2]",
        "loss.zinb=high",
        "preprocess.log_normalized=maybe",
        "model.ae_hidden=12",
        "model.ae_hidden=['a']",
        "components.cluster=3",
        "seed=none",
        "loss=3",
        "graph.k.sub=3",
    ],
)
def test_wrong_type_is_a_config_error(assignment):
    key = assignment.split("=")[0].split(".")
    with pytest.raises(ConfigError) as exc:
        RunConfig().override([assignment])
    assert any(part in str(exc.value) for part in key), str(exc.value)


def test_assignment_without_equals():
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        RunConfig().override(["graph.k"])


def test_booleans_are_not_numbers():
    # TOML true/false must not silently become 1/0 for a numeric field.
    with pytest.raises(ConfigError, match=r"graph\.k|k"):
        RunConfig().override(["graph.k=true"])
    with pytest.raises(ConfigError):
        RunConfig().override(["loss.zinb=false"])
