"""Minibatch training: batch plans that keep kNN edges, batch subgraphs, batch marginals, and whole runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import scsc
from scsc import RunControl
from scsc.checkpoint import FILE_NAME
from scsc.config import MinibatchConfig, RunConfig
from scsc.data.batches import plan_batches, resolve_batch_size
from scsc.data.bundle import build_train_data
from scsc.data.graph import row_normalize
from scsc.data.preprocess import preprocess

#: Short stages: the tests check mechanics, not quality.
FAST = [
    "pretrain.ae_epochs=4",
    "pretrain.gae_epochs=6",
    "pretrain.joint_epochs=6",
    "cluster.epochs=6",
    "model.ae_hidden=[64, 128]",
]


@pytest.fixture(scope="module")
def sim():
    # Exact resume comparisons need one torch thread; an earlier test module can leave more behind.
    torch.set_num_threads(1)
    return scsc.simulate(n_cells=900, n_types=4, n_genes=400, seed=3)


@pytest.fixture(scope="module")
def data(sim):
    cfg = RunConfig()
    prepared = preprocess(sim.to_anndata(), cfg.preprocess)
    return build_train_data(prepared, cfg.graph, dense_counts=False)


@pytest.fixture(scope="module")
def plan(data):
    return plan_batches(data.x.numpy(), data.knn, MinibatchConfig(), batch_size=256, seed=0)


def test_batch_size_resolution():
    auto = MinibatchConfig(auto_above=1000, auto_batch_size=300)
    assert resolve_batch_size(auto, 1000) == 0  # auto: full batch up to the threshold
    assert resolve_batch_size(auto, 1001) == 300
    assert resolve_batch_size(MinibatchConfig(batch_size=0), 10**6) == 0
    assert (
        resolve_batch_size(MinibatchConfig(batch_size=500), 400) == 0
    )  # a batch of every cell is full batch
    assert resolve_batch_size(MinibatchConfig(batch_size=500), 4000) == 500


def test_every_round_partitions_the_cells(plan, data):
    n = data.n_cells
    parts = np.concatenate(plan.parts)
    assert np.array_equal(np.sort(parts), np.arange(n))
    for stream, index in [("cluster", 0), ("cluster", 1), ("pretrain_gae", 0), ("embed", 0)]:
        batches = plan.round(stream, index)
        cells = np.concatenate(batches)
        assert np.array_equal(np.sort(cells), np.arange(n))
        assert all(len(b) <= plan.batch_size for b in batches)
        assert all(np.all(np.diff(b) > 0) for b in batches)  # sorted, no repeats


def test_batches_depend_only_on_seed_stage_and_epoch(plan, data):
    again = plan_batches(data.x.numpy(), data.knn, MinibatchConfig(), batch_size=256, seed=0)
    for epoch in [7, 0, 3, 12]:  # any order: a resumed run asks for a late epoch first
        assert np.array_equal(plan.batch("cluster", epoch), again.batch("cluster", epoch))
    first_round = len(plan.round("cluster", 0))
    assert np.array_equal(plan.batch("cluster", first_round), plan.round("cluster", 1)[0])
    rounds = [plan.round("cluster", i) for i in range(4)]
    assert any(not np.array_equal(rounds[0][0], r[0]) for r in rounds[1:])  # batches are reshuffled


def test_batches_keep_most_knn_edges(plan, data):
    kept = plan.edge_coverage(data.knn, plan.eval_batches())
    # Cells cut into equal random batches would keep about batch_size / N of the edges.
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(data.n_cells), len(plan.eval_batches()))
    chance = plan.edge_coverage(data.knn, random_batches)
    assert kept > 0.6 and kept > 2 * chance


def test_subset_is_the_induced_renormalised_subgraph(data, plan):
    rows = plan.batch("cluster", 0)
    sub = data.subset(rows)
    want = row_normalize(data.knn[rows][:, rows])
    assert np.allclose(sub.adj.to_dense().numpy(), want.toarray())
    assert np.allclose(sub.adj.to_dense().sum(1).numpy(), 1.0)
    assert np.array_equal(sub.counts.numpy(), data.counts_csr[rows].toarray())
    assert torch.equal(sub.x, data.x[torch.from_numpy(rows)])
    assert sub.edge_index.shape[1] == want.nnz


def test_augmenter_focus_on_all_cells_gives_the_full_graphs(data):
    from scsc.model import ScSiameseClu

    model = ScSiameseClu(RunConfig(), data.n_cells, data.x.shape[1], data.n_genes)
    emb = data.x[:, :10].numpy()
    model.augment.prepare(data, emb)
    full = [t.to_dense() for t in (model.augment.adj_main, model.augment.adj1, model.augment.adj2)]
    model.augment.focus(np.arange(data.n_cells))
    for got, want in zip((model.augment.adj_main, model.augment.adj1, model.augment.adj2), full, strict=True):
        assert torch.allclose(got.to_dense(), want, atol=1e-6)
    rows = np.arange(0, data.n_cells, 3)
    model.augment.focus(rows)
    assert model.augment.adj2.shape == (len(rows), len(rows))
    assert torch.allclose(model.augment.adj2.to_dense(), full[2][rows][:, rows])
    model.augment.focus(None)
    assert all(
        torch.equal(a.to_dense(), b)
        for a, b in zip((model.augment.adj_main, model.augment.adj2), (full[0], full[2]), strict=True)
    )


def test_whole_data_embedding_uses_the_whole_graph_and_attends_within_batches(data, plan):
    from scsc.model import ScSiameseClu
    from scsc.train import embed_cells, pretrained_embedding

    model = ScSiameseClu(RunConfig(), data.n_cells, data.x.shape[1], data.n_genes)
    with torch.no_grad():
        model.fusion.beta.fill_(0.7)  # make the attention count
    z = pretrained_embedding(model, data, plan)
    model.eval()
    with torch.no_grad():
        f, enc = model.fusion, model.encoder
        z_l = data.adj.to_dense() @ (f.a * enc.ae.encode(data.x) + f.b * enc.gae.encode(data.x, data.adj)[0])
        want = torch.empty_like(z_l)
        for rows in plan.eval_batches():  # dense attention, batch by batch
            zb = z_l[torch.from_numpy(rows)]
            want[torch.from_numpy(rows)] = 0.7 * torch.softmax(zb @ zb.T * f.scale, dim=1) @ zb + zb
    assert torch.allclose(z, want, atol=1e-4)
    model.augment.prepare(data, z.numpy())
    assert torch.allclose(
        embed_cells(model, data, plan),
        model.embed(data, groups=[torch.from_numpy(rows) for rows in plan.eval_batches()]),
    )
    # Attention over all cells instead of within batches gives another embedding (the test can fail).
    assert not torch.allclose(embed_cells(model, data, plan), model.embed(data), atol=1e-3)


def test_batch_marginals_are_the_batch_share_of_the_initial_clusters():
    from scsc.components.cluster import SinkhornHead

    head = SinkhornHead(RunConfig())
    rng = np.random.default_rng(0)
    z = torch.from_numpy(
        np.concatenate([rng.normal(c, 0.1, size=(50, 2)) for c in (0, 3, 6)]).astype(np.float32)
    )
    labels = head.init(z, 3)
    rows = torch.arange(0, 100)  # the first two blobs only
    head.focus(rows)
    share = np.bincount(labels[:100], minlength=3).astype(float)
    share = np.maximum(share, 0.5) / np.maximum(share, 0.5).sum()
    assert np.allclose(head.marginals.numpy(), share)
    head.refresh(z[rows])
    target = head.target.numpy()
    # No mass is pushed into the cluster the batch does not contain (beyond the floor of half a cell).
    assert target[:, labels[100]].sum() < 1.0
    head.focus(None)
    assert torch.equal(head.marginals, head.proportions)


def _drifted_blobs():
    """Three blobs (180 × 2, truth (180,)) and the same cells after the embedding moved on: the middle blob
    drifted two thirds of the way towards the right one (what a centroid sees when no batch holds its cluster)."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [12.0, 0.0]])
    z = torch.from_numpy(
        np.concatenate([rng.normal(c, 0.3, size=(60, 2)) for c in centres]).astype(np.float32)
    )
    moved = z.clone()
    moved[60:120, 0] += 4.0
    return z, moved, np.repeat(np.arange(3), 60)


def test_refit_puts_each_centroid_on_the_mean_of_its_cells():
    from scsc.components.cluster import SinkhornHead

    z, moved, truth = _drifted_blobs()
    head = SinkhornHead(RunConfig())
    labels = head.init(z, 3)
    head.refit(moved)
    got = head.centroids.detach().numpy()[labels[::60]]
    want = np.stack([moved[truth == t].numpy().mean(0) for t in range(3)])
    assert np.abs(got - want).max() < 0.1
    assert adjusted_rand_score(truth, head.predict(moved)) == 1.0


def test_refit_repairs_the_partition_of_lagging_centroids():
    from scsc.components.cluster import DECHead

    z, moved, truth = _drifted_blobs()
    head = DECHead(RunConfig())  # argmax Q: the nearest centroid takes the drifted cells
    head.init(z, 3)
    assert adjusted_rand_score(truth, head.predict(moved)) < 0.6
    head.refit(moved)
    assert adjusted_rand_score(truth, head.predict(moved)) > 0.9


@pytest.mark.parametrize("batch_size,refits", [(300, 1), (0, 0)])
def test_centroids_are_refit_after_minibatch_training_only(sim, monkeypatch, batch_size, refits):
    from scsc.components.cluster import SinkhornHead

    calls = []
    original = SinkhornHead.refit
    monkeypatch.setattr(SinkhornHead, "refit", lambda self, z: (calls.append(z.shape), original(self, z)))
    cfg = RunConfig().override([*FAST, f"minibatch.batch_size={batch_size}"])
    scsc.run(sim.to_anndata(), n_clusters=4, config=cfg)
    assert len(calls) == refits
    assert all(shape == (sim.counts.shape[0], 20) for shape in calls)  # on every cell's final embedding
    calls.clear()
    scsc.run(sim.to_anndata(), n_clusters=4, config=cfg.override(["cluster.refit_after_minibatch=false"]))
    assert not calls


def test_minibatch_run_is_deterministic_and_clusters(sim):
    cfg = RunConfig().override([*FAST, "minibatch.batch_size=300"])
    a = scsc.run(sim.to_anndata(), n_clusters=4, config=cfg)
    b = scsc.run(sim.to_anndata(), n_clusters=4, config=cfg)
    assert np.array_equal(a.labels, b.labels)
    info = a.adata.uns["scsc"]["minibatch"]
    assert info["batch_size"] == 300 and info["batches_per_round"] >= 3 and info["edges_in_batch"] > 0.5
    assert a.embedding.shape == (sim.counts.shape[0], 20)
    assert adjusted_rand_score(sim.labels, a.labels) > 0.5


def test_batch_of_all_cells_is_the_full_batch_run(sim):
    full = scsc.run(
        sim.to_anndata(), n_clusters=4, config=RunConfig().override([*FAST, "minibatch.batch_size=0"])
    )
    same = scsc.run(
        sim.to_anndata(), n_clusters=4, config=RunConfig().override([*FAST, "minibatch.batch_size=100000"])
    )
    assert np.array_equal(full.labels, same.labels)
    assert full.adata.uns["scsc"]["minibatch"] == {"batch_size": 0}


def test_minibatch_with_per_cell_fusion_weights(sim):
    cfg = RunConfig().override([*FAST, "minibatch.batch_size=300", "model.fusion_weights=cell"])
    r = scsc.run(sim.to_anndata(), n_clusters=4, config=cfg)
    a = r.model.fusion.a.detach()
    assert a.shape == (sim.counts.shape[0], 20)
    # Six clustering epochs walk through a whole round of batches: every cell's own weights were trained.
    assert (a != 0.5).any(dim=1).all()


@pytest.mark.parametrize("stage,n", [("pretrain: graph AE", 3), ("cluster", 4)])
def test_minibatch_resume_equals_uninterrupted_run(sim, tmp_path, stage, n):
    from test_resume import Interrupt, StopAfter

    cfg = RunConfig().override([*FAST, "minibatch.batch_size=300"])
    reference = scsc.run(sim.to_anndata(), n_clusters=4, config=cfg)
    path = tmp_path / FILE_NAME
    with pytest.raises(Interrupt):
        scsc.run(
            sim.to_anndata(),
            n_clusters=4,
            config=cfg,
            reporter=StopAfter(stage, n),
            control=RunControl(path, 2),
        )
    r = scsc.run(sim.to_anndata(), n_clusters=4, config=cfg, control=RunControl(path, 2, resume=True))
    assert np.array_equal(r.labels, reference.labels)
    assert np.allclose(r.embedding, reference.embedding, atol=1e-4)


def test_cli_batch_size(runner, cli_app, small_h5, tmp_path):
    import anndata as ad

    out = tmp_path / "run"
    sets = [x for s in FAST for x in ("--set", s)]
    result = runner.invoke(
        cli_app,
        ["cluster", str(small_h5), "--out", str(out), "-k", "3", "--batch-size", "100", "--no-plots", *sets],
    )
    assert result.exit_code == 0, result.output
    assert "batches of 100 cells" in result.output
    saved = ad.read_h5ad(out / "result.h5ad")
    assert saved.uns["scsc"]["minibatch"]["batch_size"] == 100
    assert "batch_size = 100" in (out / "config.toml").read_text()
    bad = runner.invoke(
        cli_app, ["cluster", str(small_h5), "--out", str(tmp_path / "x"), "--batch-size", "-5"]
    )
    assert bad.exit_code == 2 and "Traceback" not in bad.output
