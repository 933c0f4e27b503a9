"""Device placement and precision: every tensor of a run lives on the chosen device, in float32.

The CPU cases run everywhere; the ``cuda`` cases (marker ``gpu``) run where a CUDA device exists and are
skipped elsewhere (select them alone with ``pytest -m gpu``).
"""

from __future__ import annotations

import pytest
import torch

import scsc
from scsc.components.encoder import SiameseEncoder
from scsc.config import RunConfig

SETS = [
    "pretrain.ae_epochs=2",
    "pretrain.gae_epochs=3",
    "pretrain.joint_epochs=3",
    "cluster.epochs=3",
    "model.ae_hidden=[32, 64]",
]
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)]


def _need(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")


class Seen:
    """Collects (where, device type, dtype) of every tensor handed to it."""

    def __init__(self):
        self.rows: list[tuple[str, str, torch.dtype]] = []

    def add(self, where: str, *tensors) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self.rows.append((where, t.device.type, t.dtype))

    def wrong(self, device: str) -> list[tuple[str, str, torch.dtype]]:
        return [
            r
            for r in self.rows
            if r[1] != torch.device(device).type or (r[2].is_floating_point and r[2] != torch.float32)
        ]


def _watch_losses(monkeypatch, seen: Seen) -> None:
    """Record every loss and loss term of the pretraining stages and the clustering stage."""
    import scsc.train.cluster as cluster_mod

    original_stages = SiameseEncoder.pretrain_stages
    original_cluster_loss = cluster_mod._cluster_loss

    def stages(self, config):
        out = original_stages(self, config)
        for spec in out:

            def loss(*args, _fn=spec.loss, _name=spec.name):
                total, terms = _fn(*args)
                seen.add(_name, total, *terms.values())
                return total, terms

            spec.loss = loss
        return out

    def cluster_loss(*args):
        total, terms = original_cluster_loss(*args)
        seen.add("cluster", total, *terms.values())
        return total, terms

    monkeypatch.setattr(SiameseEncoder, "pretrain_stages", stages)
    monkeypatch.setattr(cluster_mod, "_cluster_loss", cluster_loss)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [0, 100])
def test_every_tensor_of_a_run_is_on_the_device_in_float32(device, batch_size, small_sim, monkeypatch):
    _need(device)
    seen = Seen()
    _watch_losses(monkeypatch, seen)
    cfg = RunConfig().override([*SETS, f"device={device}", f"minibatch.batch_size={batch_size}"])
    session = scsc.RunSession(small_sim.to_anndata(), cfg.override(["cluster.n_clusters=3"]))
    session.prepare()
    d = session.data
    seen.add("data", d.x, d.adj, d.counts, d.size_factors, d.edge_index, d.edge_weight)
    seen.add("model", *session.model.parameters(), *session.model.buffers())
    session.pretrain()
    session.choose_k()
    aug = session.model.augment
    seen.add("augment", aug.adj_main, aug.adj1, aug.adj2)
    session.train()
    seen.add("head", *session.model.head.parameters(), session.model.head.target, session.z)
    stages = {r[0] for r in seen.rows}
    assert {"pretrain_ae", "pretrain_gae", "pretrain_joint", "cluster"} <= stages
    assert seen.wrong(device) == []
    assert session.labels.shape == (small_sim.counts.shape[0],)
    uns = session.result().adata.uns["scsc"]
    # A CUDA run records the most GPU memory it held (docs/benchmarks.md's GPU figures); a CPU run has none.
    assert ("peak_gpu_memory_gb" in uns) == device.startswith("cuda")
    assert uns.get("peak_gpu_memory_gb", 1.0) > 0


@pytest.mark.gpu
def test_cli_clusters_on_cuda(runner, cli_app, small_h5, tmp_path):
    _need("cuda")
    out = tmp_path / "run"
    sets = [a for s in SETS for a in ("--set", s)]
    res = runner.invoke(
        cli_app,
        [
            "cluster",
            str(small_h5),
            "--out",
            str(out),
            "-k",
            "3",
            "--device",
            "cuda",
            "--no-plots",
            "-q",
            *sets,
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "result.h5ad").exists()


def test_cuda_is_refused_in_one_line_where_there_is_none(runner, cli_app, small_h5, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(tmp_path / "o"), "--device", "cuda"])
    assert res.exit_code == 2 and "CUDA is not available" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
