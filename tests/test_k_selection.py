"""Choosing K without labels (scsc/k_selection.py), candidate K values from one run, and their outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

import scsc
from scsc.config import RunConfig
from scsc.data.io import write_h5_counts
from scsc.errors import ConfigError
from scsc.k_selection import (
    CLEAR_RATIO,
    KSelection,
    Subsampling,
    choose_k,
    cluster_connectivity,
    merge_path,
    parse_k,
    partition_at,
    select_k,
)

FAST = ["pretrain.ae_epochs=5", "pretrain.gae_epochs=5", "pretrain.joint_epochs=5", "cluster.epochs=4"]


def blobs(k: int, per: int = 80, d: int = 10, sep: float = 12.0, seed: int = 0) -> np.ndarray:
    """``k`` well-separated Gaussian blobs in d dimensions, ``per`` points each: (k·per) × d."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(k, d))
    return np.vstack([c + rng.normal(size=(per, d)) for c in centers]).astype(np.float32)


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, (None, [])),
        ("auto", (None, [])),
        ("AUTO", (None, [])),
        ("8", (8, [])),
        (8, (8, [])),
        ("6,8,10", (None, [6, 8, 10])),
        ("10, 6", (None, [6, 10])),
        ("5:8", (None, [5, 6, 7, 8])),
        ([4, 3, 4], (None, [3, 4])),
        (range(3, 5), (None, [3, 4])),
    ],
)
def test_parse_k(text, expected):
    assert parse_k(text) == expected


@pytest.mark.parametrize("text", ["1", "0,4", "x", "8:5", "3:", "2.5", "1:4"])
def test_parse_k_refuses_with_a_message(text):
    with pytest.raises(ValueError, match="--n-clusters"):
        parse_k(text)


def test_connectivity_counts_edges_between_clusters_against_chance():
    # Two triangles joined by one edge: the clusters share 1 of 7 edges.
    a = sp.csr_matrix(
        np.array(
            [
                [0, 1, 1, 0, 0, 0],
                [1, 0, 1, 0, 0, 0],
                [1, 1, 0, 1, 0, 0],
                [0, 0, 1, 0, 1, 1],
                [0, 0, 0, 1, 0, 1],
                [0, 0, 0, 1, 1, 0],
            ],
            dtype=float,
        )
    )
    labels = np.array([0, 0, 0, 1, 1, 1])
    c = cluster_connectivity(a, labels)
    # w_01 = 1; d_0 = d_1 = 7 (twice the 3 inner edges plus the shared one); expected = (7·3 + 7·3) / 5.
    assert c[0, 1] == pytest.approx(1 / (42 / 5)) and c[1, 0] == c[0, 1] and c[0, 0] == 0
    # A split that cuts the graph where it is dense is far more connected than the true split.
    assert cluster_connectivity(a, np.array([0, 1, 0, 1, 0, 1]))[0, 1] > 3 * c[0, 1]


def test_merge_path_ends_at_two_even_without_shared_edges():
    a = sp.block_diag([np.ones((3, 3)) - np.eye(3)] * 4, format="csr")  # four disconnected triangles
    scores, parts = merge_path(a, np.repeat(np.arange(4), 3))
    assert sorted(scores) == [2, 3, 4] and all(v == 0 for v in scores.values())
    assert all(len(np.unique(parts[k])) == k for k in scores)


def test_merge_path_folds_clusters_below_the_minimum_size_into_their_most_connected_neighbour():
    # Two triangles and a pair; the pair shares two edges with the first triangle and none with the second.
    a = sp.block_diag([np.ones((3, 3)) - np.eye(3)] * 2 + [np.ones((2, 2)) - np.eye(2)], format="lil")
    a[6, 0] = a[0, 6] = a[7, 1] = a[1, 7] = 1.0
    a[2, 3] = a[3, 2] = 0.1
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    scores, parts = merge_path(sp.csr_matrix(a), labels)
    assert sorted(scores) == [2, 3]
    scores, parts = merge_path(sp.csr_matrix(a), labels, min_size=3)
    assert sorted(scores) == [2]  # K = 3 holds a two-cell cluster: it is not scored
    assert np.array_equal(parts[2], np.array([0, 0, 0, 1, 1, 1, 0, 0]))


def test_select_k_does_not_count_a_satellite_below_the_minimum_size():
    rng = np.random.default_rng(1)
    z = np.vstack([blobs(4, per=200), blobs(1, per=6, seed=7) + rng.normal(scale=30.0, size=10)]).astype(
        np.float32
    )
    assert select_k(z, seed=0).k == 5  # the six far cells form a community of their own (the default)
    assert select_k(z, seed=0, min_fraction=0.01).k == 4  # 6 < 1 % of 806 cells: folded into a blob
    # Off by default: a clearly separated small type is a type (scsc simulate plants one of 16 of 2,000 cells).
    assert RunConfig().cluster.k_min_size == 0


def test_choose_k_takes_the_largest_separated_k_and_reports_runners_up():
    scores = {8: 0.40, 7: 0.30, 6: 0.10, 5: 0.05, 4: 0.20, 3: 0.01, 2: 0.0}
    k, ups, reason = choose_k(scores, threshold=0.125)
    assert k == 6 and "0.100" in reason
    assert ups[:2] == [2, 3] and 6 not in ups
    assert choose_k(scores, 0.125, allowed=[7, 8])[0] == 7  # nothing passes: the least connected allowed K
    assert choose_k({5: 0.5, 4: 0.6}, 0.125)[0] == 5


@pytest.mark.parametrize("k", [3, 5, 8])
def test_select_k_finds_well_separated_blobs(k):
    sel = select_k(blobs(k), seed=0)
    assert sel.k == k, sel.scores
    uns = sel.to_uns()
    assert (
        uns["k"] == k
        and len(uns["k_values"]) == len(uns["scores"])
        and uns["threshold"] == RunConfig().cluster.k_threshold
    )


def test_large_data_is_scored_on_subsamples_of_the_calibrated_size():
    sel = select_k(blobs(4, per=1500), seed=0)
    assert sel.k == 4 and "subsamples of 2,000 cells" in sel.reason
    small = select_k(blobs(4, per=1500), seed=0, subsample=Subsampling(max_cells=10_000))
    assert small.k == 4 and "subsamples" not in small.reason


def test_partition_at_merges_the_leiden_communities_down_to_k():
    truth = np.repeat(np.arange(5), 80)
    z = blobs(5)
    assert adjusted_rand_score(truth, partition_at(z, 5)) == 1.0
    four = partition_at(z, 4)  # one merge: two whole blobs joined, none split
    assert len(np.unique(four)) == 4 and adjusted_rand_score(truth, four) > 0.7
    assert np.array_equal(pd.crosstab(truth, four).gt(0).sum(axis=1).to_numpy(), np.ones(5, dtype=int))
    fine = partition_at(z, 12)  # beyond Leiden's count: the resolution is raised
    assert len(np.unique(fine)) == 12
    assert partition_at(blobs(2, per=20), 41) is None  # more clusters than Leiden can find


def sel_of(scores: dict[int, float], threshold: float = 0.125) -> KSelection:
    return KSelection(k=choose_k(scores, threshold)[0], scores=scores, threshold=threshold)


def test_estimate_is_clear_only_where_the_next_split_is_far_more_connected():
    gap = sel_of({2: 0.0, 3: 0.004, 4: 0.02, 5: 0.31, 6: 0.4})  # planted types: a jump after K = 4
    assert gap.k == 4 and gap.clear and gap.gap == pytest.approx(0.31 / 0.02)
    assert "clear: the next split (K = 5)" in gap.verdict()
    floor = sel_of({2: 0.0, 3: 0.0, 4: 0.15})  # a zero score counts as the floor, not as an infinite gap
    assert floor.k == 3 and floor.gap == pytest.approx(15.0) and floor.clear
    ramp = sel_of({2: 0.01, 3: 0.04, 4: 0.09, 5: 0.2, 6: 0.26})  # a continuum: scores creep up (Camp, seed 0)
    assert ramp.k == 4 and ramp.gap == pytest.approx(0.2 / 0.09) and not ramp.clear
    assert "not clear-cut" in ramp.verdict() and "--n-clusters 2:6" in ramp.verdict()
    edge = sel_of({2: 0.0, 3: 0.0625, 4: 0.3125})  # exactly the ratio (5, exact in binary) counts as clear
    assert CLEAR_RATIO == 5.0 and edge.k == 3 and edge.gap == 5.0 and edge.clear
    below = sel_of({2: 0.0, 3: 0.0625, 4: 0.3124})
    assert below.k == 3 and not below.clear
    finest = sel_of({2: 0.0, 3: 0.05})  # Leiden's own count: no finer community to compare with
    assert finest.k == 3 and finest.gap is None and finest.clear and "no finer community" in finest.verdict()
    none = sel_of({2: 0.3, 3: 0.5})  # nothing below the threshold
    assert not none.clear and "not separated below the threshold" in none.verdict()
    single = KSelection(k=2, scores={}, threshold=0.125)  # Leiden found one community
    assert not single.clear and "single community" in single.verdict()
    beyond = KSelection(k=9, scores={2: 0.0, 3: 0.05}, threshold=0.125)  # a candidate K past the merge path
    assert not beyond.clear and "not on the merge path" in beyond.verdict()
    # Candidates may leave out a finer K that is better separated than the chosen one.
    skipped = KSelection(k=3, scores={2: 0.0, 3: 0.05, 4: 0.01, 5: 0.5}, threshold=0.125)
    assert not skipped.clear and "at least as well" in skipped.verdict()
    # With candidates, every candidate is clustered already: the verdict points to them, not to a new range.
    listed = KSelection(k=4, scores=ramp.scores, threshold=0.125, candidates=(3, 4, 6))
    assert "scsc_cluster_k<K>'] for K = 3, 6" in listed.verdict() and "--n-clusters" not in listed.verdict()
    assert list(listed.to_uns()["candidates"]) == [3, 4, 6]
    uns = ramp.to_uns()
    assert (
        uns["clear"] is False and uns["gap"] == pytest.approx(ramp.gap) and uns["clear_ratio"] == CLEAR_RATIO
    )
    assert np.isnan(finest.to_uns()["gap"])


def test_select_k_within_candidates_reaches_beyond_the_leiden_count():
    sel = select_k(blobs(3), seed=0, allowed=[6, 7])
    assert sel.k in (6, 7) and max(sel.scores) >= 7


@pytest.mark.slow
@pytest.mark.parametrize("types", [4, 6, 10])
def test_planted_k_is_found_with_the_default_config(types):
    """The default pipeline on ``scsc simulate --types T`` data estimates exactly T (docs/benchmarks.md)."""
    adata = scsc.simulate(n_cells=2000, n_types=types, seed=0).to_anndata()
    r = scsc.run(adata, seed=0)
    assert r.k_estimated and r.n_clusters == types, r.k_selection
    assert r.k_selection.clear and r.adata.uns["scsc"]["k_selection"]["clear"], r.k_selection.scores


@pytest.mark.parametrize("types", [4, 6])
def test_planted_k_is_found_on_a_small_simulation(types):
    adata = scsc.simulate(n_cells=600, n_types=types, n_genes=600, seed=1).to_anndata()
    r = scsc.run(adata, seed=0, config=RunConfig().override(["pretrain.ae_epochs=30", "cluster.epochs=2"]))
    assert r.n_clusters == types, r.k_selection.scores
    assert r.adata.uns["scsc"]["k_selection"]["k"] == types


@pytest.mark.slow
def test_planted_k_is_found_on_20000_cells_with_the_default_config():
    """20,000 cells (the largest full-batch run): the estimate on 2,000-cell subsamples still finds the planted
    types exactly, and the partition recovers them."""
    adata = scsc.simulate(n_cells=20_000, n_types=8, seed=2).to_anndata()
    r = scsc.run(adata, seed=0)
    assert r.k_estimated and r.n_clusters == 8, r.k_selection
    assert r.metrics["scsc"]["ari"] >= 0.95


@pytest.mark.parametrize("n_cells", [124, 200, 252])
def test_planted_k_is_found_at_plate_size_with_the_default_config(n_cells):
    """Plate-sized data (a hundred or two cells; the held-back five-cell-line mixture once got 8 clusters for 5)
    with the default config: K is the planted 5 and the types are recovered."""
    adata = scsc.simulate(n_cells=n_cells, n_types=5, n_genes=2000, seed=0).to_anndata()
    r = scsc.run(adata, seed=0)
    assert r.k_estimated and r.n_clusters == 5, r.k_selection.scores
    assert r.metrics["scsc"]["ari"] >= 0.95
    assert r.k_selection.clear, r.k_selection.scores


def test_a_real_continuum_is_reported_as_not_clear_cut(tuning_file):
    """Camp's fetal neocortex (220 cells; progenitors to neurons along a continuum, 7 annotated groups): the
    merge path's scores creep up, so the estimate must say that neighbouring K values are as well supported."""
    r = scsc.run(scsc.read(tuning_file("Camp_fetal_brain_SOUP.h5")), seed=0)
    sel = r.k_selection
    assert r.k_estimated and not sel.clear, sel.scores
    assert sel.gap is not None and sel.gap < CLEAR_RATIO and "not clear-cut" in sel.verdict()
    assert not r.adata.uns["scsc"]["k_selection"]["clear"]


@pytest.fixture(scope="module")
def sim4():
    return scsc.simulate(n_cells=300, n_types=4, n_genes=400, seed=3).to_anndata()


def test_candidates_equal_runs_at_each_k(sim4):
    # The chosen K equals a run that estimates it (the head starts from the estimate's partition); every
    # other candidate equals a run given that K (KMeans start).
    cfg = RunConfig().override(FAST)
    multi = scsc.run(sim4, n_clusters="3:5", config=cfg, seed=2)
    assert {f"scsc_cluster_k{k}" for k in (3, 4, 5)} <= set(multi.adata.obs)
    assert multi.n_clusters in (3, 4, 5) and multi.k_selection is not None
    assert sorted(multi.other_k) == sorted({3, 4, 5} - {multi.n_clusters})
    auto = scsc.run(sim4, config=cfg, seed=2)
    assert auto.n_clusters == multi.n_clusters
    assert np.array_equal(multi.labels, auto.labels) and np.array_equal(multi.embedding, auto.embedding)
    for k in (3, 4, 5):
        single = auto if k == multi.n_clusters else scsc.run(sim4, n_clusters=k, config=cfg, seed=2)
        got = multi.labels if k == multi.n_clusters else multi.other_k[k]
        assert np.array_equal(got, single.labels), k
        assert np.array_equal(multi.adata.obs[f"scsc_cluster_k{k}"].astype(int).to_numpy(), single.labels)


def test_estimated_k_starts_from_its_partition(sim4):
    cfg = RunConfig().override(FAST)
    est = scsc.run(sim4, config=cfg, seed=1)
    assert est.k_selection.head_start == "partition"
    assert est.adata.uns["scsc"]["k_selection"]["head_start"] == "partition"
    given = scsc.run(sim4, n_clusters=est.n_clusters, config=cfg, seed=1)
    assert not given.k_estimated and given.k_selection is None
    # With KMeans's own starts an estimated K trains exactly as the same K given: the estimate draws nothing
    # from the training's random streams.
    km = scsc.run(sim4, config=cfg.override(["cluster.estimated_start=kmeans"]), seed=1)
    assert km.n_clusters == est.n_clusters and km.adata.uns["scsc"]["k_selection"]["head_start"] == "kmeans"
    assert np.array_equal(km.labels, given.labels) and np.array_equal(km.embedding, given.embedding)
    with pytest.raises(ConfigError, match="estimated_start"):
        scsc.run(sim4, config=cfg.override(["cluster.estimated_start=leiden"]))


@pytest.mark.parametrize("weight", [3.0, 0.5])
def test_the_start_graph_holds_the_input_at_most_at_zs_size(sim4, monkeypatch, weight):
    # The head clusters [Z ‖ w·s·input]; the partition start is found on the graph of the same columns with
    # the input part at weight min(w, 1) (scsc.components.cluster.START_GRAPH_INPUT_WEIGHT).
    from scsc import session

    seen = []

    def spy(x, k, *rest):
        seen.append(x)
        return partition_at(x, k, *rest)

    monkeypatch.setattr(session, "partition_at", spy)
    r = scsc.run(sim4, config=RunConfig().override([*FAST, f"cluster.input_weight={weight}"]), seed=1)
    d = r.embedding.shape[1]
    (x,) = seen
    rms_z, rms_input = (float(np.sqrt((part**2).sum(1).mean())) for part in (x[:, :d], x[:, d:]))
    assert rms_input == pytest.approx(min(weight, 1.0) * rms_z, rel=1e-3)
    assert r.k_selection.head_start == "partition"


def test_the_k_graphs_follow_the_runs_exact_search_limit(sim4, monkeypatch):
    # graph.exact_max_cells holds for every cell graph of a run: the estimate of K's and the start partition's.
    from scsc import k_selection

    limits = []
    graph_of = k_selection.knn_connectivities

    def spy(z, *a, exact_max_cells, **kw):
        limits.append(exact_max_cells)
        return graph_of(z, *a, exact_max_cells=exact_max_cells, **kw)

    monkeypatch.setattr(k_selection, "knn_connectivities", spy)
    r = scsc.run(sim4, config=RunConfig().override([*FAST, "graph.exact_max_cells=1234"]), seed=1)
    assert r.k_selection.head_start == "partition"
    assert len(limits) >= 2 and set(limits) == {1234}


def test_n_clusters_outside_candidates_is_refused(sim4):
    with pytest.raises(ConfigError, match="k_candidates"):
        scsc.run(
            sim4, config=RunConfig().override([*FAST, "cluster.n_clusters=6", "cluster.k_candidates=[3, 4]"])
        )
    with pytest.raises(ConfigError, match="--n-clusters"):
        scsc.run(sim4, n_clusters="1:3", config=RunConfig().override(FAST))


def test_cli_auto_and_candidates_write_choice_plots_and_columns(tmp_path, runner, cli_app, sim4):
    data = tmp_path / "sim.h5"
    counts = sp.csr_matrix(sim4.X)
    write_h5_counts(data, counts, sim4.obs["label"].astype(str).to_numpy().astype("S"), list(sim4.var_names))
    cfg = tmp_path / "fast.toml"
    RunConfig().override(FAST).save(cfg)
    res = runner.invoke(
        cli_app, ["cluster", str(data), "--out", str(tmp_path / "auto"), "--config", str(cfg)]
    )
    assert res.exit_code == 0, res.output
    assert "(estimated)" in res.stdout and "runner-up" in res.stdout and "threshold" in res.stdout
    # The verdict line: clear, or not clear-cut with the K values to compare.
    assert re.search(r"^\s+(clear: |not clear-cut: )", res.stdout, flags=re.MULTILINE), res.stdout
    assert (tmp_path / "auto" / "k_selection.png").stat().st_size > 0
    # The run keeps its pretraining, so other K can be clustered without pretraining again.
    from scsc.checkpoint import load_checkpoint

    record = load_checkpoint(tmp_path / "auto" / "pretrain.pt")
    assert {"encoder", "fingerprint", "config", "history"} <= set(record)
    assert any(row["stage"].startswith("pretrain") for row in record["history"])
    res = runner.invoke(
        cli_app,
        [
            "cluster",
            str(data),
            "--out",
            str(tmp_path / "again"),
            "--config",
            str(cfg),
            "--pretrained",
            str(tmp_path / "auto" / "pretrain.pt"),
            "-k",
            "3:5",
            "--json",
            "--no-plots",
        ],
    )
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["pretraining"] == str(tmp_path / "auto" / "pretrain.pt")
    assert not (tmp_path / "again" / "pretrain.pt").exists()  # the given file is the run's pretraining
    # The same seed continues the saved random streams: the first run's K gets the first run's labels exactly.
    first, second = (pd.read_csv(tmp_path / d / "clusters.csv") for d in ("auto", "again"))
    k_first = first.cluster.nunique()
    assert 3 <= k_first <= 5 and np.array_equal(first.cluster, second[f"cluster_k{k_first}"])
    res = runner.invoke(
        cli_app,
        [
            "cluster",
            str(data),
            "--out",
            str(tmp_path / "multi"),
            "--config",
            str(cfg),
            "-k",
            "3,5",
            "--json",
            "--no-plots",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_clusters"] in (3, 5) and summary["k_candidates"] == [3, 5]
    assert summary["k_selection"]["k"] == summary["n_clusters"]
    assert isinstance(summary["k_selection"]["clear"], bool) and summary["k_selection"]["verdict"]
    assert summary["k_selection"]["head_start"] == "partition"
    import anndata as ad

    out = ad.read_h5ad(tmp_path / "multi" / "result.h5ad")
    assert {"scsc_cluster_k3", "scsc_cluster_k5"} <= set(out.obs)
    saved = out.uns["scsc"]["k_selection"]
    assert set(saved["k_values"]) >= {3, 5}
    assert (
        bool(saved["clear"]) == summary["k_selection"]["clear"] and float(saved["clear_ratio"]) == CLEAR_RATIO
    )
    assert (
        np.isnan(saved["gap"])
        if summary["k_selection"]["gap"] is None
        else saved["gap"] == pytest.approx(summary["k_selection"]["gap"], abs=0.01)
    )
    res = runner.invoke(
        cli_app,
        ["cluster", str(data), "--out", str(tmp_path / "tree"), "--config", str(cfg), "-k", "3,4", "-q"],
    )
    assert res.exit_code == 0 and (tmp_path / "tree" / "k_tree.png").stat().st_size > 0


@pytest.mark.parametrize("value", ["1", "many", "7:3"])
def test_cli_refuses_bad_n_clusters(tmp_path, runner, cli_app, small_h5, value):
    res = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(tmp_path / "r"), "-k", value])
    assert res.exit_code == 2 and "--n-clusters" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
