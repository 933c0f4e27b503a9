"""Where the pretrained embedding gains or loses clusters: KMeans (true K) on each stage of the model.

After the three pretraining stages (default config plus ``--set`` overrides), on the clean views:

- ``input``: the model input (HVG → scale → PCA), N × n_pcs;
- ``z_ae``, ``z_g``: the expression and graph branches, N × d each;
- ``fused``: a⊙Z_ae + b⊙Z_g before the local propagation;
- ``embedding``: Z, the propagated embedding the clustering head starts from (``scsc_pretrain_kmeans`` in
  ``quality.py``).

Labels are read only to score each KMeans result. One fresh process per (dataset, seed).

    python benchmarks/embedding_stages.py --seeds 0 1 2 --jobs 2 --out benchmarks/results/embedding_stages.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DATA, run_tasks

STAGES = ["input", "z_ae", "z_g", "fused", "embedding"]


def _stages(path: str, seed: int, overrides: list[str], threads: int) -> list[dict]:
    """Pretrain once on ``path`` and score KMeans on every stage; a list of {stage, ari, nmi} rows."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import scsc
    from scsc.api import _build_model, make_config, prepare
    from scsc.components.cluster import kmeans
    from scsc.evaluate import score
    from scsc.train import pretrain, pretrained_embedding, seed_everything

    adata = scsc.read(path)
    cfg = make_config().override([*overrides, f"seed={seed}"])
    prepared, data = prepare(adata, cfg)
    generator = seed_everything(cfg.seed)  # before the model: its initial weights come from the seed
    model = _build_model(cfg, prepared, None)
    pretrain(model, data, cfg, generator)
    labels = adata.obs["label"].to_numpy()[prepared.cell_mask]
    k = len(np.unique(labels))
    model.augment.prepare(data, pretrained_embedding(model, data).numpy())
    model.eval()
    with torch.no_grad():
        views = model.augment.clean_views(data.x)
        out = model.forward(views.x1, views.x2, views.adj1, views.adj2, model.augment.adj_main,
                            propagation=False)
        fusion = model.fusion
        fused = fusion.a * out.z_ae + fusion.b * out.z_g
    rows = []
    for stage, z in zip(STAGES, (data.x, out.z_ae, out.z_g, fused, out.z)):
        pred, _ = kmeans(z.cpu().numpy(), k, cfg.seed)
        s = score(labels, pred)
        rows.append({"stage": stage, "seed": seed, "ari": s["ari"], "nmi": s["nmi"]})
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
    table = table.reindex(columns=pd.MultiIndex.from_product([["ari", "nmi"], STAGES]))
    table.loc["mean"] = table.mean()
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
