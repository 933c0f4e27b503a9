"""Where the pretrained embedding gains or loses clusters: KMeans (true K) on each stage of the model.

After the three pretraining stages (default config plus ``--set`` overrides), on the clean views:

- ``input``: the model input (HVG → scale → PCA), N × n_pcs;
- ``z_ae``, ``z_g``: the expression and graph branches, N × d each;
- ``fused``: a⊙Z_ae + b⊙Z_g before the local propagation;
- ``embedding``: Z, the propagated embedding the clustering head starts from (``scsc_pretrain_kmeans`` in
  ``quality.py``);
- ``embedding_leiden``: Leiden on the 15-NN graph of Z, resolution bisected to the true K (as quality.py's
  ``leiden_true_k`` peer), instead of KMeans;
- ``embedding_restarts_50``, ``embedding_restarts_200``: KMeans on Z with 50 or 200 k-means++ restarts
  instead of the head's 10 (the lowest-inertia run is kept, as in the head);
- Z under other graph operators, the encoders unchanged: ``drop_0``, ``drop_0.2``, ``drop_0.3``, ``drop_0.5``
  (``graph.edge_drop``, which sets both the edge-removal view and the propagation graph Â_r; default 0.1),
  ``jaccard`` (propagation over Â_r with each edge weighted by the Jaccard index of its cells' neighbourhoods,
  the shared-nearest-neighbour weighting of Seurat and PhenoGraph), ``self_half`` (half of each row of Â_r on
  the cell itself: Z_l = ½ Z_i + ½ D⁻¹A Z_i) and ``no_propagation`` (Z_l = Z_i).

Labels are read only to score each KMeans result. One fresh process per (dataset, seed).

    python -m benchmarks.embedding_stages --seeds 0 1 2 --jobs 2 --out benchmarks/results/embedding_stages.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from benchmarks.quality import DATA, run_tasks

STAGES = ["input", "z_ae", "z_g", "fused", "embedding"]
OPERATORS = [
    "embedding_leiden",
    "embedding_restarts_50",
    "embedding_restarts_200",
    "drop_0",
    "drop_0.2",
    "drop_0.3",
    "drop_0.5",
    "jaccard",
    "self_half",
    "no_propagation",
]


def _jaccard(a):
    """Edges of the binary graph ``a`` (N × N, CSR) weighted by |N⁺(i) ∩ N⁺(j)| / |N⁺(i) ∪ N⁺(j)|, N⁺ with self.

    O(N·k²): the products are taken on existing edges only.
    """
    import numpy as np
    import scipy.sparse as sp

    b = sp.csr_matrix(a, dtype=np.float32)
    b.data[:] = 1.0
    bi = (b + sp.identity(b.shape[0], dtype=np.float32, format="csr")).tocsr()
    size = np.asarray(bi.sum(axis=1)).ravel()
    r, c = b.nonzero()
    inter = np.asarray(bi[r].multiply(bi[c]).sum(axis=1)).ravel()
    return sp.csr_matrix(((inter / (size[r] + size[c] - inter)).astype(np.float32), (r, c)), shape=b.shape)


def _leiden_on(z, k: int, seed: int):
    """Leiden labels (N,) on the 15-NN graph of ``z`` (N × d), resolution bisected to K (the peer's search)."""
    from scsc.leiden import knn_connectivities, leiden_at_k

    return leiden_at_k(knn_connectivities(z, 15, seed), k, seed)


def _stages(path: str, seed: int, overrides: list[str], threads: int) -> list[dict]:
    """Pretrain once on ``path`` and score KMeans on every stage; a list of {stage, ari, nmi} rows."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import scipy.sparse as sp
    from sklearn.cluster import KMeans

    import scsc
    from scsc import RunSession, make_config
    from scsc.components.cluster import kmeans
    from scsc.data.graph import drop_dissimilar_edges, row_normalize
    from scsc.data.tensors import sparse_to_torch
    from scsc.evaluate import score
    from scsc.train import embed_cells, pretrained_embedding

    adata = scsc.read(path)
    cfg = make_config().override([*overrides, f"seed={seed}"])
    session = RunSession(adata, cfg)
    session.prepare()  # seeds, then builds the model: its initial weights come from the seed
    session.pretrain()
    prepared, data, model = session.prepared, session.data, session.model
    labels = adata.obs["label"].to_numpy()[prepared.cell_mask]
    k = len(np.unique(labels))
    z_pre = pretrained_embedding(model, data).numpy()
    aug = model.augment
    aug.prepare(data, z_pre)
    model.eval()
    with torch.no_grad():
        views = model.augment.clean_views(data.x)
        out = model.forward(views, model.augment.adj_main, propagation=False)
        fusion = model.fusion
        fused = fusion.a * out.z_ae + fusion.b * out.z_g
    rows = []

    def add(stage: str, pred) -> None:
        s = score(labels, pred)
        rows.append({"stage": stage, "seed": seed, "ari": s["ari"], "nmi": s["nmi"]})

    for stage, z in zip(STAGES, (data.x, out.z_ae, out.z_g, fused, out.z), strict=True):
        add(stage, kmeans(z.cpu().numpy(), k, cfg.seed)[0])
    add("embedding_leiden", _leiden_on(out.z.cpu().numpy(), k, cfg.seed))
    for restarts in (50, 200):
        km = KMeans(n_clusters=k, n_init=restarts, random_state=cfg.seed)
        add(f"embedding_restarts_{restarts}", km.fit(out.z.cpu().numpy().astype(np.float64)).labels_)

    def add_operator(stage: str) -> None:
        add(stage, kmeans(embed_cells(model, data).cpu().numpy(), k, cfg.seed)[0])

    default_drop = cfg.graph.edge_drop
    for drop in (0.0, 0.2, 0.3, 0.5):
        aug.graph_cfg.edge_drop = drop
        aug.prepare(data, z_pre)
        add_operator(f"drop_{drop:g}")
    aug.graph_cfg.edge_drop = default_drop
    aug.prepare(data, z_pre)
    kept = drop_dissimilar_edges(data.knn, z_pre, default_drop)
    n = data.n_cells
    deg = np.asarray(kept.sum(axis=1)).ravel().astype(np.float32)
    half = sp.diags(0.5 / np.maximum(deg, 1)) @ kept + sp.diags(
        np.where(deg > 0, 0.5, 1.0).astype(np.float32)
    )
    for stage, op in (
        ("jaccard", row_normalize(_jaccard(kept))),
        ("self_half", sp.csr_matrix(half, dtype=np.float32)),
        ("no_propagation", sp.identity(n, dtype=np.float32, format="csr")),
    ):
        aug.adj_main = sparse_to_torch(op, data.device)  # propagation only; the graph views stay Â_r and PPR
        add_operator(stage)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="*", default=None, help="dataset stems (default: all)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--out", default="benchmarks/results/embedding_stages.csv")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no datasets folder at {DATA}")
    paths = sorted(DATA.glob("*.h5"))
    if args.datasets:
        paths = [p for p in paths if p.stem in set(args.datasets)]
    # Workers inherit these at spawn: results depend on the linear algebra's thread count, not only on the
    # seed.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    tasks = [(p.stem, _stages, (str(p), s, args.sets, args.threads)) for p in paths for s in args.seeds]
    rows = [{"dataset": ds, **r} for ds, result in run_tasks(tasks, args.jobs) for r in result]
    df = pd.DataFrame(rows)
    if "error" in df:
        print(df[df["error"].notna()].to_string(index=False), file=sys.stderr)
        df = df[df["error"].isna()]
        if df.empty:
            sys.exit("every run failed (see above)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    table = df.groupby(["dataset", "stage"])[["ari", "nmi"]].mean().unstack("stage")
    table = table.reindex(columns=pd.MultiIndex.from_product([["ari", "nmi"], STAGES + OPERATORS]))
    table.loc["mean"] = table.mean()
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
