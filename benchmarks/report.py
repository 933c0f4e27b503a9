"""Turn benchmark CSVs into docs/benchmarks.md.

python -m benchmarks.report benchmarks/results/quality_tuning.csv benchmarks/results/quality.csv
    [--k-estimated benchmarks/results/quality_k_*.csv] [--timing benchmarks/results/timing.csv]
    [--under-load benchmarks/results/under_load.csv] [--scaling benchmarks/results/scaling.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from scsc.k_selection import CLEAR_RATIO

PEERS = ("leiden_default", "leiden_true_k", "kmeans_pca50")
#: scVI's rows (``benchmarks/quality.py --scvi``): Leiden at its default resolution, Leiden at the true K and
#: KMeans at the true K on its latent space; the peer "scVI" is the best of the three per dataset.
SCVI = ("scvi_leiden_default", "scvi_leiden_true_k", "scvi_kmeans")
PUBLISHED = {"Grace_CITE_CBMC_counts_top2000": (0.6756, 0.6871)}


def _ms(x: pd.Series) -> str:
    x = x.dropna()
    if len(x) == 0:
        return "–"
    return f"{x.mean():.3f}" if len(x) == 1 else f"{x.mean():.3f} ± {x.std(ddof=1):.3f}"


COLLECTION_TEXT = {
    "tuning": (
        "Tuning collection (`../shared/tuning`, where every default was chosen)",
        "the tuning datasets",
    ),
    "tuning lineages": (
        (
            "Tuning collection at the lineage level (`--labels coarse`, benchmarks/coarse_labels.py; "
            "defaults are chosen on both levels)"
        ),
        "the tuning datasets' lineages",
    ),
    "scoring": (
        "Scoring set (`../shared/datasets`, reported once per adopted default, never chosen on)",
        "the eight scoring datasets",
    ),
}


def _best_peer(part: pd.DataFrame) -> tuple[dict, float, float]:
    """The peers' rows of one dataset (scVI as the best of its three rows, by ARI) and the best ARI and NMI."""
    peers = {m: part[part.method == m].iloc[0] for m in PEERS if (part.method == m).any()}
    scvi = part[part.method.isin(SCVI)]
    if len(scvi):
        peers["scvi"] = scvi.loc[scvi["ari"].idxmax()]
    best_ari = max(p["ari"] for p in peers.values()) if peers else float("nan")
    best_nmi = max(p["nmi"] for p in peers.values()) if peers else float("nan")
    return peers, best_ari, best_nmi


def read_runs(paths: list[Path]) -> pd.DataFrame:
    """The rows of quality CSVs, concatenated; ``k_mode`` stays text ("true" / "estimated"), which pandas
    would otherwise read as booleans in a file of true-K runs only."""
    return pd.concat([pd.read_csv(p, dtype={"k_mode": str}) for p in paths], ignore_index=True)


def _quality_targets(m: pd.DataFrame, collection: str) -> list[str]:
    """The quality issue's targets, met or not, from the per-dataset means ``m`` of :func:`quality_section`.

    "Best peer" counts scVI where it was run; the scoring set's mean target is the best PCA peer per dataset,
    and its moonshot KMeans on PCA + 0.05.
    """
    verdict = {True: "met", False: "not met"}
    mean, worst = m.scsc_ari.mean(), (m.scsc_ari - m.peer_ari).min()
    sd = f"{verdict[bool(m.scsc_std.max() <= 0.03)]} (largest {m.scsc_std.max():.3f})"
    if collection == "tuning":
        goal, margin = m.peer_ari.mean() + 0.03, 0.03
        head = [
            f"- mean ARI ≥ best peer per dataset + 0.03 ({goal:.3f}): {verdict[bool(mean >= goal)]} ({mean:.3f})"
        ]
    else:
        pca = m[[c for c in ("leiden_default_ari", "leiden_true_k_ari", "kmeans_pca50_ari") if c in m]]
        goal, moon, margin = pca.max(axis=1).mean(), m.get("kmeans_pca50_ari", m.peer_ari).mean() + 0.05, 0.05
        head = [
            f"- mean ARI ≥ best PCA peer per dataset ({goal:.3f}): {verdict[bool(mean >= goal)]} ({mean:.3f}); "
            f"moonshot ≥ KMeans on PCA + 0.05 ({moon:.3f}): {verdict[bool(mean >= moon)]}",
        ]
    return [
        "",
        f"Targets of the quality issue on this {'collection' if collection == 'tuning' else 'set'}:",
        "",
        *head,
        f"- no dataset more than {margin:.2f} ARI below its best peer (scVI included): "
        f"{verdict[bool(worst >= -margin)]} (largest shortfall {worst:+.3f})",
        f"- seed standard deviation ≤ 0.03 ARI on every dataset: {sd}",
    ]


def quality_section(df: pd.DataFrame, collection: str = "scoring") -> str:
    title, which = COLLECTION_TEXT.get(collection, (collection, collection))
    lines = [
        f"## Quality, true K given to every method: {title}",
        "",
        "ARI / NMI; scsc is mean ± std over seeds; peers are computed in the same run with the standard "
        "scanpy pipeline (normalise, log1p, 2000 HVG, scale, 50 PCs, 15-NN graph). `scsc init` is the head's "
        "KMeans start, on the pretrained embedding beside the model input (the clustering stage starts "
        "from it). Seconds and peak RSS are for "
        "`scsc.run` in its own process (preprocessing, graph, pretraining, clustering); runs share the "
        "2 cores with each other, so take seconds from the speed table below, which is measured alone.",
        "",
        "| dataset | scsc ARI | scsc NMI | scsc init ARI | best peer ARI | best peer NMI | Leiden default "
        "ARI/NMI | Leiden true K ARI/NMI | KMeans PCA-50 ARI/NMI | scVI ARI/NMI (s) | scsc s | scsc peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    means = []
    for ds, part in df.groupby("dataset"):
        s = part[part.method == "scsc"]
        init = part[part.method == "scsc_pretrain_kmeans"]
        peers, best_ari, best_nmi = _best_peer(part)
        means.append(
            {
                "dataset": ds,
                "scsc_ari": s["ari"].mean(),
                "scsc_nmi": s["nmi"].mean(),
                "scsc_std": s["ari"].std(ddof=1),
                "init_ari": init["ari"].mean(),
                "peer_ari": best_ari,
                "peer_nmi": best_nmi,
                **{f"{m}_ari": p["ari"] for m, p in peers.items()},
            }
        )
        cell = {m: f"{p['ari']:.3f} / {p['nmi']:.3f}" for m, p in peers.items()}
        if "scvi" in peers:
            cell["scvi"] += f" ({peers['scvi']['seconds']:.0f})"
        lines.append(
            f"| {ds} | {_ms(s['ari'])} | {_ms(s['nmi'])} | {_ms(init['ari'])} | {best_ari:.3f} | {best_nmi:.3f} | "
            f"{cell.get('leiden_default', '–')} | {cell.get('leiden_true_k', '–')} | "
            f"{cell.get('kmeans_pca50', '–')} | {cell.get('scvi', '–')} | {s['seconds'].mean():.0f} | "
            f"{s['peak_rss_gb'].max():.2f} |"
        )
    m = pd.DataFrame(means)
    single = {p: m[f"{p}_ari"].mean() for p in (*PEERS, "scvi") if f"{p}_ari" in m}
    best_single = max(single, key=single.get) if single else None
    n_seeds = int(df[df.method == "scsc"].groupby("dataset").seed.nunique().min())
    lines += [
        "",
        f"Mean over {which} ({n_seeds} seeds): scsc ARI **{m.scsc_ari.mean():.3f}**, NMI "
        f"**{m.scsc_nmi.mean():.3f}**; scsc init ARI {m.init_ari.mean():.3f}; best peer per dataset ARI "
        f"**{m.peer_ari.mean():.3f}**, NMI **{m.peer_nmi.mean():.3f}**"
        + (f"; best single peer {best_single} ARI **{single[best_single]:.3f}**" if best_single else "")
        + f". Largest seed standard deviation of scsc ARI: {m.scsc_std.max():.3f} ({m.loc[m.scsc_std.idxmax(), 'dataset']}).",
    ]
    if best_single and collection in ("tuning", "scoring"):
        lines += _quality_targets(m, collection)
    for ds, (ari, nmi) in PUBLISHED.items():
        if ds in set(m.dataset):
            row = m[m.dataset == ds].iloc[0]
            lines.append(
                f"\nPublished figure for {ds}: ARI {ari:.3f}, NMI {nmi:.3f} (epoch picked with the labels); "
                f"scsc final epoch: ARI {row.scsc_ari:.3f}, NMI {row.scsc_nmi:.3f}."
            )
    return "\n".join(lines)


def under_load_section(df: pd.DataFrame) -> str:
    """The same run alone and beside a second one, under two OpenMP wait policies."""
    lines = [
        "## Under load: the same run alone and beside a second one",
        "",
        "`python -m benchmarks.under_load`: one `scsc cluster` run (2 torch threads) alone, then two at once on "
        "the 2 cores, with libgomp's default spinning and with scsc's wait policy (`GOMP_SPINCOUNT=3000`, "
        "set on import; scsc/threads.py). `same labels` compares the labels and embedding with the run alone.",
        "",
        "| wait policy | run | seconds | same labels | same embedding |",
        "|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        lines.append(
            f"| {r.policy} | {r.run} | {r.seconds:.1f} | {'yes' if r.same_labels else 'no'} | "
            f"{'yes' if r.same_embedding else 'no'} |"
        )
    return "\n".join(lines)


def stage_section(df: pd.DataFrame) -> str:
    """Per dataset: ARI at the clustering stage's KMeans start and at its end, and seconds per stage."""
    lines = [
        "## What each stage costs and earns",
        "",
        "scsc rows of the quality tables above: ARI of the head's KMeans start (the pretrained embedding beside the model input) "
        "and of the final labels, and the seconds of each stage (one thread per run, two runs at a time).",
        "",
        "| collection | dataset | cells | ARI at init | ARI at the end | Δ | preprocess + graph s | pretrain s | "
        "init s | cluster s | cluster share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    deltas = {}
    for (coll, ds), part in df.groupby(["collection", "dataset"]):
        s, init = part[part.method == "scsc"], part[part.method == "scsc_pretrain_kmeans"]
        st = {k: s[f"stage_{k}"].mean() for k in ("preprocess_graph", "pretrain", "init", "cluster", "total")}
        d = s.ari.mean() - init.ari.mean()
        deltas.setdefault(coll, []).append((d, st["cluster"] / st["total"]))
        lines.append(
            f"| {coll} | {ds} | {int(s.cells.iloc[0]):,} | {init.ari.mean():.3f} | {s.ari.mean():.3f} | "
            f"{d:+.3f} | {st['preprocess_graph']:.1f} | {st['pretrain']:.1f} | {st['init']:.1f} | "
            f"{st['cluster']:.1f} | {st['cluster'] / st['total']:.0%} |"
        )
    lines.append("")
    for coll, vals in deltas.items():
        d = pd.DataFrame(vals, columns=["delta", "share"])
        lines.append(
            f"- {coll}: the clustering stage moves mean ARI by {d.delta.mean():+.3f} over its KMeans start "
            f"and takes {d.share.mean():.0%} of the run on average (largest {d.share.max():.0%})."
        )
    return "\n".join(lines)


def _clear_summary(m: pd.DataFrame) -> str:
    """The end of a collection's K line: on how many datasets the estimate was clear-cut (most seeds)."""
    if m.clear.isna().any():  # results from before the verdict existed
        return "."
    clear = m.clear.astype(bool)
    within = f", of which {int((clear & m.within).sum())} within ±30 %" if clear.any() else ""
    return f"; clear-cut (on most seeds) on {int(clear.sum())} of {len(m)}{within}."


def k_section(df: pd.DataFrame) -> str:
    """K estimated: scsc's K, ARI and NMI beside scanpy Leiden at its default resolution, per collection."""
    lines = [
        "## Clustering without K (`scsc cluster DATA`, K estimated)",
        "",
        "scsc estimates K from the pretrained embedding (scsc/k_selection.py, docs/method.md); the peer is the "
        "scanpy user's default, Leiden at resolution 1 on the standard pipeline's 15-NN graph, computed in the "
        "same run. K is listed per seed; *clear* counts the seeds whose estimate scsc calls clear-cut (the next "
        f"split is at least {CLEAR_RATIO:g}× more connected than the weakest one kept; otherwise it tells the "
        "user to compare neighbouring K values).",
        "",
        "| collection | dataset | true K | scsc K | K error | clear | scsc ARI | scsc NMI | Leiden default K | "
        "Leiden default ARI / NMI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for (coll, ds), part in df.groupby(["collection", "dataset"]):
        s = part[part.method == "scsc"].sort_values("seed")
        peer = part[part.method == "leiden_default"]
        true_k = int(s.true_k.iloc[0])
        p = peer.iloc[0] if len(peer) else None
        within = ((s.k - true_k).abs() <= 0.3 * true_k).mean()
        k_error = ((s.k - true_k) / true_k).mean()  # signed: above 0 splits more than the annotation
        clear = s.k_clear.astype(bool) if "k_clear" in s and s.k_clear.notna().all() else None
        summary.append(
            {
                "collection": coll,
                "ari": s.ari.mean(),
                "nmi": s.nmi.mean(),
                "within": within >= 0.5,
                "k_error": abs(k_error),
                "clear": None if clear is None else clear.mean() >= 0.5,
                "peer_ari": p["ari"] if p is not None else float("nan"),
                "peer_nmi": p["nmi"] if p is not None else float("nan"),
            }
        )
        lines.append(
            f"| {coll} | {ds} | {true_k} | {', '.join(str(int(k)) for k in s.k)} | {k_error:+.0%} | "
            f"{'–' if clear is None else f'{int(clear.sum())} of {len(clear)}'} | {_ms(s.ari)} | "
            f"{_ms(s.nmi)} | {int(p['k']) if p is not None else '–'} | "
            + (f"{p['ari']:.3f} / {p['nmi']:.3f} |" if p is not None else "– |")
        )
    lines.append("")
    for coll, m in pd.DataFrame(summary).groupby("collection"):
        lines.append(
            f"- {coll}: scsc mean ARI **{m.ari.mean():.3f}** / NMI {m.nmi.mean():.3f}, Leiden default "
            f"**{m.peer_ari.mean():.3f}** / {m.peer_nmi.mean():.3f} (difference {m.ari.mean() - m.peer_ari.mean():+.3f} "
            f"ARI; largest shortfall {(m.ari - m.peer_ari).min():+.3f}); K within ±30 % of the true K (on most "
            f"seeds) on {int(m.within.sum())} of {len(m)} datasets, mean K error {m.k_error.mean():.0%}"
            + _clear_summary(m)
        )
    return "\n".join(lines)


def batch_key_section(keyed: pd.DataFrame, quality: pd.DataFrame, k_estimated: pd.DataFrame | None) -> str:
    """The tuning datasets that carry a batch, with and without ``--batch-key batch``, beside scVI (which uses the
    key) and the best PCA peer."""
    lines = [
        "## With a batch key (`--batch-key batch`, the tuning datasets that carry one)",
        "",
        "scsc without and with the key (HVGs within batches, Harmony on the PCA input), mean ± std over seeds; "
        "scVI uses the same key (best of its three clusterings); the PCA peers do not correct batches.",
        "",
        "| dataset | true K: scsc | with the key | scVI | best PCA peer | K estimated: scsc (K) | with the key (K) "
        "| Leiden default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, mine in keyed[keyed.method == "scsc"].groupby("dataset"):
        part = quality[(quality.dataset == ds) & (quality.collection == "tuning")]
        plain = part[part.method == "scsc"]
        scvi = part[part.method.isin(SCVI)]
        pca = part[part.method.isin(PEERS)]
        mine_true = mine[mine.k_mode == "true"]
        row = [
            ds,
            _ms(plain.ari),
            _ms(mine_true.ari),
            f"{scvi.ari.max():.3f}" if len(scvi) else "–",
            f"{pca.ari.max():.3f}" if len(pca) else "–",
        ]
        if k_estimated is not None:
            kp = k_estimated[(k_estimated.dataset == ds) & (k_estimated.collection == "tuning")]
            est, leiden = kp[kp.method == "scsc"], kp[kp.method == "leiden_default"]
            est_key = mine[mine.k_mode == "estimated"]
            row += [
                f"{_ms(est.ari)} ({est.k.mean():.1f})" if len(est) else "–",
                f"{_ms(est_key.ari)} ({est_key.k.mean():.1f})" if len(est_key) else "–",
                f"{leiden.ari.iloc[0]:.3f}" if len(leiden) else "–",
            ]
        else:
            row += ["–", "–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _timing_medians(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, command): the median of its runs (``run`` column; one run when it is absent)."""
    df = df.assign(run=df["run"] if "run" in df else 1)
    cols = [c for c in df.columns if c == "seconds" or c == "peak_gb" or c.startswith("stage_")]
    med = df.groupby(["dataset", "cells", "command"], sort=False)[cols].median().reset_index()
    return med.assign(runs=df.groupby(["dataset", "cells", "command"], sort=False).size().to_numpy())


def _pair_ratios(part: pd.DataFrame) -> tuple[float, float, float, float]:
    """Median and range of the scsc / scanpy time ratios taken run by run, and the peak-memory ratio."""
    part = part.assign(run=part["run"] if "run" in part else 1)
    mine = part[part.command.str.startswith("scsc")].set_index("run")
    peer = part[~part.command.str.startswith("scsc")].set_index("run")
    ratio = (mine.seconds / peer.seconds).dropna()
    return ratio.median(), ratio.min(), ratio.max(), mine.peak_gb.median() / peer.peak_gb.median()


def timing_section(df: pd.DataFrame) -> str:
    lines = [
        "## Speed and memory of the whole command",
        "",
        "`scsc cluster DATA --n-clusters K --out DIR` (plots included) and the scanpy Leiden pipeline, "
        "each as a fresh process, wall time and peak RSS from `/usr/bin/time -v`, 2 CPU cores, the two "
        "commands in turn after a warm-up pair that is not recorded (it fills numba's on-disk cache of the "
        "umap-learn and pynndescent kernels, as on any machine after its first run). Figures are medians "
        "over the runs; the ratio is the median of the run-by-run ratios.",
        "",
        "| dataset | cells | command | runs | seconds | peak GB | preprocess + graph s | pretrain s | init s | "
        "cluster s (share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def stage(r, key: str) -> str:
        v = r.get(f"stage_{key}")
        return "–" if v is None or pd.isna(v) else f"{v:.1f}"

    for _, r in _timing_medians(df).iterrows():
        share = r.get("stage_cluster", float("nan")) / r.get("stage_total", float("nan"))
        cluster = stage(r, "cluster") + ("" if pd.isna(share) else f" ({share:.0%})")
        lines.append(
            f"| {r.dataset} | {r.cells} | {r.command} | {r.runs} | {r.seconds:.1f} | {r.peak_gb:.2f} | "
            f"{stage(r, 'preprocess_graph')} | {stage(r, 'pretrain')} | {stage(r, 'init')} | {cluster} |"
        )
    lines.append("")
    for ds, part in df.groupby("dataset", sort=False):
        if part.command.str.startswith("scsc").any() and (~part.command.str.startswith("scsc")).any():
            med, lo, hi, mem = _pair_ratios(part)
            lines.append(
                f"- {ds}: scsc / scanpy = {med:.2f}× time (runs {lo:.2f}–{hi:.2f}×), {mem:.1f}× peak memory."
            )
    return "\n".join(lines)


def minibatch_section(full: pd.DataFrame, mini: pd.DataFrame, reference: str | None = None) -> str:
    """scsc full batch (``full``) against minibatch runs (``mini``) of the same seeds, per dataset.

    ``reference`` names the CSV of ``full`` when it is not the quality table above (the two runs must share
    their config apart from the batch size).
    """
    full = full[full.method == "scsc"]
    mini = mini[mini.method == "scsc"]
    size = int(mini.batch_size.max())
    lines = [
        f"## Minibatch training against full batch (batches of {size:,} cells)",
        "",
        f"`python -m benchmarks.quality --set minibatch.batch_size={size} --no-baselines --threads 1`, seeds "
        f"{', '.join(str(int(s)) for s in sorted(mini.seed.unique()))}, "
        + (
            "compared with the full-batch scsc rows of the quality table. "
            if reference is None
            else f"compared with full-batch runs of the same config (`{reference}`). "
        )
        + "Each epoch of the graph stages trains on "
        "one batch; every data set with more cells than a batch is cut into several (the default batch, 8,192 "
        f"cells, applies from 20,000 cells up, so these batches are {8192 / size:g} times smaller than in real "
        "use).",
        "",
        "| dataset | cells | batches per round | kNN edges inside a batch | full-batch ARI | minibatch ARI | "
        "Δ ARI | full-batch NMI | minibatch NMI | minibatch s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    deltas = []
    for ds, part in mini.groupby("dataset"):
        ref = full[(full.dataset == ds) & full.seed.isin(part.seed)]
        if not len(ref):
            continue
        d = part.ari.mean() - ref.ari.mean()
        cells = int(part.cells.iloc[0])
        if (part.batch_size == 0).all():  # no more cells than one batch: the run was full batch
            lines.append(
                f"| {ds} | {cells:,} | full batch (≤ {size:,} cells) | – | {_ms(ref.ari)} | "
                f"{_ms(part.ari)} | {d:+.3f} | {_ms(ref.nmi)} | {_ms(part.nmi)} | {part.seconds.mean():.0f} |"
            )
            continue
        deltas.append({"ari": d, "nmi": part.nmi.mean() - ref.nmi.mean()})
        lines.append(
            f"| {ds} | {cells:,} | {-(-cells // size)}+ | {part.edges_in_batch.mean():.0%} | "
            f"{_ms(ref.ari)} | {_ms(part.ari)} | {d:+.3f} | {_ms(ref.nmi)} | {_ms(part.nmi)} | "
            f"{part.seconds.mean():.0f} |"
        )
    m = pd.DataFrame(deltas)
    if len(m):
        lines += [
            "",
            f"Mean Δ over the {len(m)} datasets trained in minibatches: ARI **{m.ari.mean():+.3f}**, NMI **{m.nmi.mean():+.3f}**; "
            f"largest ARI loss {m.ari.min():+.3f}. Target of the scale issue (within 0.03 ARI of full batch): "
            f"{'met' if m.ari.mean() >= -0.03 else 'not met'} on the mean; "
            f"{int((m.ari >= -0.03).sum())} of {len(m)} datasets within 0.03 on their own.",
        ]
    return "\n".join(lines)


def scaling_section(df: pd.DataFrame, exponents: pd.DataFrame | None) -> str:
    lines = [
        "## Scaling with the number of cells",
        "",
        "Simulated counts (`scsc simulate`, 2000 genes, 10 types; `depth` scales library sizes, 1.0 gives "
        "about 70% zeros, 0.1 about 94% as in droplet data) at each size; whole commands in fresh processes, "
        "alone on 2 CPU cores (`python -m benchmarks.scaling`). `batch` is the minibatch size the default "
        "chose (0: full batch); ARI is against the planted types.",
        "",
        "| cells | data | depth | command | batch | seconds | peak GB | preprocess + graph s | pretrain s | "
        "init s | cluster s | ARI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    df = df.assign(data=df["data"].fillna("simulated") if "data" in df else "simulated")

    def fmt(v, spec: str = ".0f") -> str:
        return "–" if v is None or pd.isna(v) else format(v, spec)

    for _, r in df.iterrows():
        stages = " | ".join(
            fmt(r.get(f"stage_{k}")) for k in ("preprocess_graph", "pretrain", "init", "cluster")
        )
        err = f" ({r['error']})" if "error" in r and isinstance(r["error"], str) else ""
        err += " †" if isinstance(r.get("note"), str) and r.get("note") else ""
        scsc_row = r.command.startswith("scsc")
        batch = fmt(r.get("batch_size", 0 if scsc_row else None), ",.0f") if scsc_row else "–"
        lines.append(
            f"| {r.cells:,} | {r.data} | {fmt(r.get('depth', 1.0), '.1f')} | {r.command}{err} | {batch} | "
            f"{r.seconds:.0f} | {r.peak_gb:.2f} | {stages} | {fmt(r.get('ari'), '.3f')} |"
        )
    notes = sorted({r.note for _, r in df.iterrows() if isinstance(r.get("note"), str) and r.get("note")})
    if notes:
        lines += ["", *(f"† {note}." for note in notes)]
    lines.append("")
    for (n, source), part in df.groupby(["cells", "data"]):
        mine = part[part.command.str.startswith("scsc")]
        peer = part[~part.command.str.startswith("scsc")]
        if len(mine) and len(peer):
            lines.append(
                f"- {n:,} cells ({source}): scsc / scanpy = {mine.seconds.iloc[0] / peer.seconds.iloc[0]:.1f}× time, "
                f"{mine.peak_gb.iloc[0] / peer.peak_gb.iloc[0]:.1f}× peak memory."
            )
    if exponents is not None and len(exponents):
        lines += [
            "",
            "Growth exponents (slope of log time and log peak memory against log cells):",
            "",
            "| command | data | from | to | time | memory |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in exponents.iterrows():
            lines.append(
                f"| {r.command} | {r.get('data', 'simulated')} | {r.from_cells:,} | {r.to_cells:,} | "
                f"{r.time_exponent:.2f} | "
                f"{r.memory_exponent:.2f} |"
            )
    return "\n".join(lines)


def quality_plot(df: pd.DataFrame, path: Path, minibatch: pd.DataFrame | None = None) -> None:
    """Bar chart: ARI per dataset, scsc (mean ± std over seeds; also in minibatches) beside each peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [
        ("scsc", "scsc"),
        ("leiden_default", "Leiden default"),
        ("leiden_true_k", "Leiden true K"),
        ("kmeans_pca50", "KMeans PCA-50"),
    ]
    if minibatch is not None:
        mini = minibatch[minibatch.method == "scsc"].assign(method="scsc_minibatch")
        df = pd.concat([df, mini], ignore_index=True)
        methods.insert(1, ("scsc_minibatch", f"scsc, {int(mini.batch_size.max()):,}-cell batches"))
    datasets = sorted(df.dataset.unique())
    x = np.arange(len(datasets))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(datasets)), 4))
    for i, (key, label) in enumerate(methods):
        part = df[df.method == key].groupby("dataset").ari
        mean, std = part.mean().reindex(datasets), part.std().reindex(datasets).fillna(0)
        ax.bar(x + (i - len(methods) / 2 + 0.5) * width, mean, width, yerr=std, label=label, capsize=2)
    ax.set_xticks(
        x,
        [d.replace("_top2000", "").replace("_counts", "") for d in datasets],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("ARI")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(methods), frameon=False, loc="upper left")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def scaling_plot(df: pd.DataFrame, path: Path) -> None:
    """Log–log wall time and peak memory against cells, one line per command."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    df = df.assign(data=df["data"].fillna("simulated") if "data" in df else "simulated")
    for (command, source), part in df.groupby(["command", "data"]):
        part = part.sort_values("cells")
        for ax, col in zip(axes, ("seconds", "peak_gb"), strict=True):
            ax.plot(
                part.cells,
                part[col],
                marker="o" if source == "simulated" else "s",
                label=f"{command} ({source})",
            )
    for ax, label in zip(axes, ("wall time (s)", "peak RSS (GB)"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def gpu_section(df: pd.DataFrame) -> str:
    """The table of ``benchmarks/gpu.py``: each command on the GPU with seconds, memory and ARI."""
    lines = [
        "## On a GPU",
        "",
        (
            "`python -m benchmarks.gpu --data DIR --out DIR` on a machine with CUDA, alone on it: the tests "
            "marked `gpu`, then `scsc cluster --device cuda` on CBMC and on simulated cells (10 types), each a "
            "fresh process. Peak GPU memory is the most torch held at once "
            '(`uns["scsc"]["peak_gpu_memory_gb"]`).'
        ),
        "",
        (
            "| data | device | cells | seconds | peak RSS GB | peak GPU GB | preprocess + graph s | pretrain s | "
            "init s | cluster s | ARI |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v, spec: str = ".0f") -> str:
        return "–" if v is None or pd.isna(v) else format(v, spec)

    for _, r in df.iterrows():
        stages = " | ".join(
            fmt(r.get(f"stage_{k}"), ".1f") for k in ("preprocess_graph", "pretrain", "init", "cluster")
        )
        failed = f" (exit {int(r.exit_code)})" if r.get("exit_code", 0) else ""
        lines.append(
            f"| {r.data}{failed} | {r.device} | {fmt(r.get('cells'), ',.0f')} | {r.seconds:.1f} | "
            f"{r.peak_rss_gb:.2f} | {fmt(r.get('peak_gpu_gb'), '.2f')} | {stages} | "
            f"{fmt(r.get('ari'), '.3f')} |"
        )
    return "\n".join(lines)


def ranks_section(df: pd.DataFrame) -> str:
    """The table of ``benchmarks/ranks.py``: peak memory of every rank of a distributed run against one process."""
    cells = int(df.cells.iloc[0])
    sets = df.sets.iloc[0] if "sets" in df and isinstance(df.sets.iloc[0], str) else ""
    lines = [
        f"## Memory per rank of a distributed run ({cells:,} simulated cells)",
        "",
        (
            f"`python -m benchmarks.ranks --cells {cells} --ranks {' '.join(str(r) for r in df.ranks)}"
            + "".join(f" --set {x}" for x in sets.split())
            + "`, alone on the machine: one whole "
            "`scsc cluster --distributed` per row (1 rank: a plain process; more: `torchrun`), each rank's "
            "peak RSS recorded by the rank itself. The cores are divided among the ranks (at least one thread "
            "each, so 4 ranks share 2 cores: their seconds are not a speed-up figure)."
            + (
                " Shortened schedules: the peak is reached in the whole-data embeddings and the clustering "
                "stage, whose size does not depend on the number of epochs."
                if sets
                else ""
            )
        ),
        "",
        "| ranks | threads per rank | seconds | peak GB, largest rank | peak GB per rank | fall from 1 rank | ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        lines.append(
            f"| {r.ranks} | {r.threads_per_rank} | {r.seconds:.0f} | {r.peak_gb_max:.2f} | "
            f"{r.peak_gb_per_rank} | {r.fall_vs_fewest:.2f}× | {r.ari:.3f} |"
        )
    return "\n".join(lines)


#: Every file of benchmarks/results/ and the command that writes it (listed at the top of docs/benchmarks.md).
RESULT_COMMANDS = [
    (
        "`quality_tuning.csv`",
        (
            "`python -m benchmarks.quality --collection tuning --seeds 0 1 2 3 4 --jobs 2 --threads 1 --scvi "
            '--out benchmarks/results/quality_tuning.csv` (scVI needs `pip install -e ".[scvi]"`)'
        ),
    ),
    (
        "`quality_tuning_lineages.csv`",
        (
            "the same without `--scvi`, with `--labels coarse` (the lineage-level annotation) and `--out "
            "benchmarks/results/quality_tuning_lineages.csv`"
        ),
    ),
    (
        "`quality.csv`",
        (
            "`python -m benchmarks.quality --collection scoring --seeds 0 1 2 3 4 --jobs 2 --threads 1 --scvi "
            "--out benchmarks/results/quality.csv`"
        ),
    ),
    (
        "`quality_k_tuning.csv`, `quality_k_scoring.csv`",
        "the tuning and the scoring command without `--scvi`, with `--k estimated` and `--out` these files",
    ),
    (
        "`batch_key_tuning.csv`, `batch_key_k_tuning.csv`",
        (
            "`python -m benchmarks.quality --collection tuning --datasets Ding2020_PBMC_10xv2v3_scDesign3Py "
            "vanGalen2019_BM_SeqWell --set preprocess.batch_key=batch --no-baselines --seeds 0 1 2 3 4 --jobs 2 "
            "--threads 1 --out benchmarks/results/batch_key_tuning.csv`, and the same with `--k estimated` and "
            "`--out benchmarks/results/batch_key_k_tuning.csv`"
        ),
    ),
    (
        "`quality_minibatch.csv`",
        (
            "`python -m benchmarks.quality --set minibatch.batch_size=1024 --no-baselines --seeds 0 1 2 --jobs 2 "
            "--threads 1 --out benchmarks/results/quality_minibatch.csv`"
        ),
    ),
    (
        "`quality_minibatch_2048.csv`",
        "the same with `minibatch.batch_size=2048` and `--out benchmarks/results/quality_minibatch_2048.csv`",
    ),
    ("`timing.csv`", "`bash benchmarks/timing.sh` (alone on the machine; each command 3 times, in turn)"),
    ("`under_load.csv`", "`python -m benchmarks.under_load` (alone on the machine)"),
    (
        "`scaling.csv`, `scaling_exponents.csv`",
        (
            "`python -m benchmarks.scaling --sizes 2000 10000 30000 100000` (alone on the machine); the rows "
            "marked † (earlier defaults) with `--append` and `--sizes 1000000 --depth 0.1 --no-scanpy`, and "
            "`--sizes 100000 --resample ../shared/datasets/Grace_CITE_CBMC_counts_top2000.h5`"
        ),
    ),
    (
        "`ranks.csv`",
        (
            "`python -m benchmarks.ranks --cells 200000 --ranks 1 2 4 --set pretrain.ae_epochs=10 --set "
            "pretrain.gae_epochs=10 --set pretrain.joint_epochs=10 --set cluster.epochs=2` (alone on the "
            "machine)"
        ),
    ),
    (
        "`embedding_stages.csv`",
        (
            "`python -m benchmarks.embedding_stages --seeds 0 1 2 --jobs 2 --set preprocess.n_pcs=50` (the 50-PC "
            "input of November 2026; its tables are in the [decision log](decisions.md#stage-table))"
        ),
    ),
    (
        "`ablation_pancreas2.csv`, `ablation_pancreas2.md`",
        (
            "`scsc ablate ../shared/datasets/Maayan_Mouse_Pancreas_cell_2.h5 --preset paper --seeds 0,1 --out "
            "pancreas_ablate`, its `results.csv` and `summary.md` copied under these names (23 November 2026, "
            "with the defaults of then: the published input)"
        ),
    ),
]


def header_lines() -> list[str]:
    """The top of docs/benchmarks.md: where every result file comes from and how this page is made."""
    lines = [
        "Every file in `benchmarks/results/` comes from one of these commands (2 CPU cores):",
        "",
        "| file in `benchmarks/results/` | command |",
        "|---|---|",
    ]
    lines += [f"| {files} | {command} |" for files, command in RESULT_COMMANDS]
    lines += [
        "",
        (
            "Then `python -m benchmarks.report benchmarks/results/quality_tuning.csv "
            "benchmarks/results/quality_tuning_lineages.csv benchmarks/results/quality.csv "
            "--k-estimated benchmarks/results/quality_k_*.csv --batch-key benchmarks/results/batch_key_tuning.csv "
            "benchmarks/results/batch_key_k_tuning.csv --timing benchmarks/results/timing.csv "
            "--under-load benchmarks/results/under_load.csv --scaling benchmarks/results/scaling.csv "
            "--minibatch benchmarks/results/quality_minibatch*.csv --earlier minibatch --ranks "
            "benchmarks/results/ranks.csv` writes the tables of this page, draws the figures in "
            "`docs/figures/` and appends the `.md` files of `benchmarks/results/` (the notes under "
            "the distributed and scaling tables are written by hand). Labels are used only for these "
            "scores. Defaults are chosen on the tuning collection only; the scoring set reports the "
            "adopted choice. Every candidate measured, and why it was or was not adopted: the "
            "[decision log](decisions.md); what each round of these benchmarks said: [Benchmark notes "
            "by stop](history.md)."
        ),
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("quality", type=Path, nargs="+", help="quality CSV(s); several are concatenated")
    ap.add_argument("--timing", type=Path)
    ap.add_argument("--scaling", type=Path)
    ap.add_argument(
        "--minibatch",
        type=Path,
        nargs="*",
        default=[],
        help="quality CSVs of minibatch runs (scsc rows only), one batch size each",
    )
    ap.add_argument(
        "--minibatch-reference",
        type=Path,
        default=None,
        help="full-batch quality CSV the minibatch runs are compared with (default: the quality CSVs); "
        "needed when the default config changed after the minibatch runs",
    )
    ap.add_argument(
        "--k-estimated",
        type=Path,
        nargs="*",
        default=[],
        help="quality CSVs of `quality.py --k estimated` runs (any collection)",
    )
    ap.add_argument("--under-load", type=Path, default=None, help="CSV of benchmarks/under_load.py")
    ap.add_argument(
        "--batch-key",
        type=Path,
        nargs="*",
        default=[],
        help="quality CSVs of runs with --set preprocess.batch_key=batch (true K and/or estimated K)",
    )
    ap.add_argument(
        "--earlier",
        nargs="*",
        default=[],
        choices=("minibatch", "scaling", "timing"),
        help="sections whose CSVs were measured with earlier defaults (their heading says so)",
    )
    ap.add_argument(
        "--gpu", type=Path, default=None, help="CSV of benchmarks/gpu.py (a run on a CUDA machine)"
    )
    ap.add_argument("--ranks", type=Path, default=None, help="CSV of benchmarks/ranks.py")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    earlier_note = (
        "\n\n*Measured with the defaults before December 2026 (50 PCs, 50 clustering epochs; the "
        "minibatch tables also with 200 joint pretraining epochs) and not rerun since: read them for "
        "how the costs scale, not for today's figures. The minibatch tables' full-batch columns are "
        "today's quality table (seeds 0–2), so their Δ mixes two configurations.*"
    )

    def mark(section: str, text: str) -> str:
        if section not in args.earlier:
            return text
        head, _, rest = text.partition("\n")
        return head + earlier_note + "\n" + rest

    parts = ["# Benchmarks", "", *header_lines()]
    quality = pd.concat(
        [
            pd.read_csv(q).assign(
                **({} if "collection" in pd.read_csv(q, nrows=1) else {"collection": "scoring"})
            )
            for q in args.quality
        ],
        ignore_index=True,
    )
    if "labels" in quality:  # the tuning collection scored against its lineage-level annotation
        quality.loc[quality["labels"] == "coarse", "collection"] = "tuning lineages"
    order = [c for c in ("tuning", "tuning lineages", "scoring") if c in set(quality.collection)]
    for coll in order + sorted(set(quality.collection) - set(order)):
        parts += [quality_section(quality[quality.collection == coll], coll), ""]
    parts.append(stage_section(quality))
    k_estimated = None
    if args.k_estimated:
        k_estimated = read_runs(args.k_estimated)
        parts += ["", k_section(k_estimated)]
    if args.batch_key:
        keyed = read_runs(args.batch_key)
        parts += ["", batch_key_section(keyed, quality, k_estimated)]
    figures = args.out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    minibatch = sorted(
        (pd.read_csv(m) for m in args.minibatch if m.exists()), key=lambda m: m.batch_size.max()
    )
    scoring = quality[quality.collection == "scoring"]
    # Minibatch bars only beside full-batch runs of the same config.
    quality_plot(
        scoring,
        figures / "quality_ari.png",
        minibatch[0] if minibatch and not args.minibatch_reference else None,
    )
    parts += ["", "![ARI per dataset (scoring set)](figures/quality_ari.png)"]
    if args.under_load and args.under_load.exists():
        parts += ["", under_load_section(pd.read_csv(args.under_load))]
    reference = args.minibatch_reference
    full = pd.read_csv(reference) if reference else scoring
    for mini in minibatch:
        parts += [
            "",
            mark("minibatch", minibatch_section(full, mini, reference.as_posix() if reference else None)),
        ]
    if args.timing and args.timing.exists():
        parts += ["", mark("timing", timing_section(pd.read_csv(args.timing)))]
    if args.gpu and args.gpu.exists():
        parts += ["", gpu_section(pd.read_csv(args.gpu))]
    if args.ranks and args.ranks.exists():
        parts += ["", ranks_section(pd.read_csv(args.ranks))]
    if args.scaling and args.scaling.exists():
        exp = args.scaling.with_name(args.scaling.stem + "_exponents.csv")
        scaling = pd.read_csv(args.scaling)
        parts += ["", mark("scaling", scaling_section(scaling, pd.read_csv(exp) if exp.exists() else None))]
        scaling_plot(scaling, figures / "scaling.png")
        parts += ["", "![time and memory against cells](figures/scaling.png)"]
    # Other studies saved as markdown (e.g. `scsc ablate` summaries) follow, their headings one level down.
    for extra in sorted(args.quality[0].parent.glob("*.md")):
        text = extra.read_text().replace("\n# ", "\n## ")
        parts += ["", "#" + text if text.startswith("# ") else text]
    args.out.write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
