"""Turn benchmark CSVs into docs/benchmarks.md.

    python benchmarks/report.py benchmarks/results/quality.csv [--timing benchmarks/results/timing.csv]
        [--scaling benchmarks/results/scaling.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

PEERS = ("leiden_default", "leiden_true_k", "kmeans_pca50")
PUBLISHED = {"Grace_CITE_CBMC_counts_top2000": (0.6756, 0.6871)}


def _ms(x: pd.Series) -> str:
    x = x.dropna()
    if len(x) == 0:
        return "–"
    return f"{x.mean():.3f}" if len(x) == 1 else f"{x.mean():.3f} ± {x.std(ddof=1):.3f}"


def quality_section(df: pd.DataFrame) -> str:
    lines = ["## Quality (default config, true K given to every method)", "",
             "ARI / NMI; scsc is mean ± std over seeds; peers are computed in the same run with the standard "
             "scanpy pipeline (normalise, log1p, 2000 HVG, scale, 50 PCs, 15-NN graph). `scsc init` is KMeans "
             "on the pretrained embedding (the clustering stage starts from it). Seconds and peak RSS are for "
             "`scsc.run` in its own process (preprocessing, graph, pretraining, clustering); runs may share the "
             "2 cores with each other, so take seconds from the speed table below, which is measured alone.", "",
             "| dataset | scsc ARI | scsc NMI | scsc init ARI | best peer ARI | best peer NMI | Leiden default "
             "ARI/NMI | Leiden true K ARI/NMI | KMeans PCA-50 ARI/NMI | scsc s | scsc peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    means = []
    for ds, part in df.groupby("dataset"):
        s = part[part.method == "scsc"]
        init = part[part.method == "scsc_pretrain_kmeans"]
        peers = {m: part[part.method == m].iloc[0] for m in PEERS if (part.method == m).any()}
        best_ari = max(p["ari"] for p in peers.values()) if peers else float("nan")
        best_nmi = max(p["nmi"] for p in peers.values()) if peers else float("nan")
        means.append({"dataset": ds, "scsc_ari": s["ari"].mean(), "scsc_nmi": s["nmi"].mean(),
                      "peer_ari": best_ari, "peer_nmi": best_nmi})
        cell = {m: f"{p['ari']:.3f} / {p['nmi']:.3f}" for m, p in peers.items()}
        lines.append(
            f"| {ds} | {_ms(s['ari'])} | {_ms(s['nmi'])} | {_ms(init['ari'])} | {best_ari:.3f} | {best_nmi:.3f} | "
            f"{cell.get('leiden_default', '–')} | {cell.get('leiden_true_k', '–')} | "
            f"{cell.get('kmeans_pca50', '–')} | {s['seconds'].mean():.0f} | {s['peak_rss_gb'].max():.2f} |")
    m = pd.DataFrame(means)
    lines += ["", f"Mean over {len(m)} datasets: scsc ARI **{m.scsc_ari.mean():.3f}**, NMI "
              f"**{m.scsc_nmi.mean():.3f}**; best peer per dataset ARI **{m.peer_ari.mean():.3f}**, NMI "
              f"**{m.peer_nmi.mean():.3f}** (ratio scsc / best peer: ARI {m.scsc_ari.mean() / m.peer_ari.mean():.2f}, "
              f"NMI {m.scsc_nmi.mean() / m.peer_nmi.mean():.2f})."]
    verdict = {True: "met", False: "not met"}
    lines.append(f"Target of the model issue (scsc mean above the best-peer mean): ARI "
                 f"{verdict[bool(m.scsc_ari.mean() > m.peer_ari.mean())]}, NMI "
                 f"{verdict[bool(m.scsc_nmi.mean() > m.peer_nmi.mean())]}.")
    for ds, (ari, nmi) in PUBLISHED.items():
        if ds in set(m.dataset):
            row = m[m.dataset == ds].iloc[0]
            lines.append(f"Published figure for {ds}: ARI {ari:.3f}, NMI {nmi:.3f} (epoch picked with the labels); "
                         f"scsc final epoch: ARI {row.scsc_ari:.3f}, NMI {row.scsc_nmi:.3f}.")
    return "\n".join(lines)


def timing_section(df: pd.DataFrame) -> str:
    lines = ["## Speed and memory of the whole command", "",
             "`scsc cluster DATA --n-clusters K --out DIR` (plots included) and the scanpy Leiden pipeline, "
             "each as a fresh process, wall time and peak RSS from `/usr/bin/time -v`, 2 CPU cores.", "",
             "| dataset | cells | command | seconds | peak GB |", "|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r.dataset} | {r.cells} | {r.command} | {r.seconds:.0f} | {r.peak_gb:.2f} |")
    lines.append("")
    for ds, part in df.groupby("dataset", sort=False):
        mine = part[part.command.str.startswith("scsc")]
        peer = part[~part.command.str.startswith("scsc")]
        if len(mine) and len(peer):
            lines.append(f"- {ds}: scsc / scanpy = {mine.seconds.iloc[0] / peer.seconds.iloc[0]:.1f}× time, "
                         f"{mine.peak_gb.iloc[0] / peer.peak_gb.iloc[0]:.1f}× peak memory.")
    return "\n".join(lines)


def minibatch_section(full: pd.DataFrame, mini: pd.DataFrame) -> str:
    """scsc full batch (``full``) against minibatch runs (``mini``) of the same seeds, per dataset."""
    full = full[full.method == "scsc"]
    mini = mini[mini.method == "scsc"]
    size = int(mini.batch_size.max())
    lines = [f"## Minibatch training against full batch (batches of {size:,} cells)", "",
             f"`python benchmarks/quality.py --set minibatch.batch_size={size} --no-baselines`, seeds as above, "
             "compared with the full-batch scsc rows of the quality table. Each epoch of the graph stages trains on "
             "one batch, so every data set here is cut into at least two batches (the default batch, 8,192 "
             "cells, applies from 20,000 cells up).", "",
             "| dataset | cells | batches per round | kNN edges inside a batch | full-batch ARI | minibatch ARI | "
             "Δ ARI | full-batch NMI | minibatch NMI | minibatch s |", "|---|---|---|---|---|---|---|---|---|---|"]
    deltas = []
    for ds, part in mini.groupby("dataset"):
        ref = full[(full.dataset == ds) & full.seed.isin(part.seed)]
        if not len(ref):
            continue
        d = part.ari.mean() - ref.ari.mean()
        deltas.append({"ari": d, "nmi": part.nmi.mean() - ref.nmi.mean()})
        cells = int(part.cells.iloc[0])
        lines.append(f"| {ds} | {cells:,} | {-(-cells // size)}+ | {part.edges_in_batch.mean():.0%} | "
                     f"{_ms(ref.ari)} | {_ms(part.ari)} | {d:+.3f} | {_ms(ref.nmi)} | {_ms(part.nmi)} | "
                     f"{part.seconds.mean():.0f} |")
    m = pd.DataFrame(deltas)
    if len(m):
        lines += ["", f"Mean Δ over {len(m)} datasets: ARI **{m.ari.mean():+.3f}**, NMI **{m.nmi.mean():+.3f}**; "
                  f"largest ARI loss {m.ari.min():+.3f}. Target of the scale issue (within 0.03 ARI of full batch): "
                  f"{'met' if m.ari.mean() >= -0.03 else 'not met'} on the mean."]
    return "\n".join(lines)


def scaling_section(df: pd.DataFrame, exponents: pd.DataFrame | None) -> str:
    lines = ["## Scaling with the number of cells", "",
             "Simulated counts (`scsc simulate`, 2000 genes, 10 types; `depth` scales library sizes, 1.0 gives "
             "about 70% zeros, 0.1 about 94% as in droplet data) at each size; whole commands in fresh processes, "
             "alone on 2 CPU cores (`python benchmarks/scaling.py`). `batch` is the minibatch size the default "
             "chose (0: full batch); ARI is against the planted types.", "",
             "| cells | depth | command | batch | seconds | peak GB | preprocess + graph s | pretrain s | init s | "
             "cluster s | ARI |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v, spec: str = ".0f") -> str:
        return "–" if v is None or pd.isna(v) else format(v, spec)

    for _, r in df.iterrows():
        stages = " | ".join(fmt(r.get(f"stage_{k}")) for k in ("preprocess_graph", "pretrain", "init", "cluster"))
        err = f" ({r['error']})" if "error" in r and isinstance(r["error"], str) else ""
        scsc_row = r.command.startswith("scsc")
        batch = fmt(r.get("batch_size", 0 if scsc_row else None), ",.0f") if scsc_row else "–"
        lines.append(f"| {r.cells:,} | {fmt(r.get('depth', 1.0), '.1f')} | {r.command}{err} | {batch} | "
                     f"{r.seconds:.0f} | {r.peak_gb:.2f} | {stages} | {fmt(r.get('ari'), '.3f')} |")
    lines.append("")
    for n, part in df.groupby("cells"):
        mine = part[part.command.str.startswith("scsc")]
        peer = part[~part.command.str.startswith("scsc")]
        if len(mine) and len(peer):
            lines.append(f"- {n} cells: scsc / scanpy = {mine.seconds.iloc[0] / peer.seconds.iloc[0]:.1f}× time, "
                         f"{mine.peak_gb.iloc[0] / peer.peak_gb.iloc[0]:.1f}× peak memory.")
    if exponents is not None and len(exponents):
        lines += ["", "Growth exponents (slope of log time and log peak memory against log cells):", "",
                  "| command | from | to | time | memory |", "|---|---|---|---|---|"]
        for _, r in exponents.iterrows():
            lines.append(f"| {r.command} | {r.from_cells} | {r.to_cells} | {r.time_exponent:.2f} | "
                         f"{r.memory_exponent:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("quality", type=Path, nargs="+", help="quality CSV(s); several are concatenated")
    ap.add_argument("--timing", type=Path)
    ap.add_argument("--scaling", type=Path)
    ap.add_argument("--minibatch", type=Path, help="quality CSV of minibatch runs (scsc rows only)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    parts = ["# Benchmarks", "",
             "Produced by `python benchmarks/quality.py --seeds 0 1 2 --jobs 3 --threads 1`, "
             "`bash benchmarks/timing.sh` and `python benchmarks/scaling.py` (each alone on the machine), then "
             "`python benchmarks/report.py benchmarks/results/quality.csv --timing benchmarks/results/timing.csv "
             "--scaling benchmarks/results/scaling.csv`. Raw numbers are in `benchmarks/results/`. Labels are "
             "used only for these scores.", ""]
    quality = pd.concat([pd.read_csv(q) for q in args.quality], ignore_index=True)
    parts.append(quality_section(quality))
    if args.minibatch and args.minibatch.exists():
        parts += ["", minibatch_section(quality, pd.read_csv(args.minibatch))]
    if args.timing and args.timing.exists():
        parts += ["", timing_section(pd.read_csv(args.timing))]
    if args.scaling and args.scaling.exists():
        exp = args.scaling.with_name(args.scaling.stem + "_exponents.csv")
        parts += ["", scaling_section(pd.read_csv(args.scaling), pd.read_csv(exp) if exp.exists() else None)]
    # Other studies saved as markdown (e.g. `scsc ablate` summaries) follow, their headings one level down.
    for extra in sorted(args.quality[0].parent.glob("*.md")):
        text = extra.read_text().replace("\n# ", "\n## ")
        parts += ["", "#" + text if text.startswith("# ") else text]
    args.out.write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
