"""Study reports: ``summary.md`` (mean ± std per variant, best in bold, Δ vs the reference variant), a grouped
bar chart (``ablation.png``) and rich tables for the terminal. ``results.csv`` itself is written by the runner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.io import atomic_path, atomic_write_text
from .runner import METRICS
from .study import Study

LABELS = {"acc": "ACC", "nmi": "NMI", "ari": "ARI", "f1": "F1"}


@dataclass
class VariantSummary:
    """Aggregates of one variant on one dataset over its seeds."""

    dataset: str
    variant: str
    n_ok: int = 0
    n_error: int = 0
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    time_s: float = math.nan
    peak_mem_mb: float = math.nan
    same_as: str = ""
    errors: list[str] = field(default_factory=list)


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def summarize(study: Study, rows: list[dict[str, str]]) -> dict[str, list[VariantSummary]]:
    """Per dataset, one :class:`VariantSummary` per variant (study order); Δ is against ``study.baseline``."""
    out: dict[str, list[VariantSummary]] = {}
    for ds in study.datasets:
        items = []
        for v in study.variants:
            mine = [r for r in rows if r["dataset"] == ds.name and r["variant"] == v.name]
            ok = [r for r in mine if r["status"] == "ok"]
            s = VariantSummary(ds.name, v.name, n_ok=len(ok), n_error=len(mine) - len(ok))
            s.errors = [f"seed {r['seed']}: {r['error']}" for r in mine if r["status"] != "ok"]
            same = {r["same_as"] for r in ok if r.get("same_as")}
            s.same_as = same.pop() if len(same) == 1 and all(r.get("same_as") for r in ok) else ""
            for k in METRICS:
                vals = np.array([_num(r[k]) for r in ok], dtype=float)
                vals = vals[np.isfinite(vals)]
                s.mean[k] = float(vals.mean()) if len(vals) else math.nan
                s.std[k] = float(vals.std(ddof=1)) if len(vals) > 1 else (0.0 if len(vals) else math.nan)
            times = [_num(r["time_s"]) for r in ok]
            mems = [_num(r["peak_mem_mb"]) for r in ok]
            s.time_s = float(np.nanmean(times)) if any(np.isfinite(times)) else math.nan
            s.peak_mem_mb = float(np.nanmax(mems)) if any(np.isfinite(mems)) else math.nan
            items.append(s)
        ref = next((s for s in items if s.variant == study.baseline), None)
        for s in items:
            for k in METRICS:
                s.delta[k] = s.mean[k] - ref.mean[k] if ref is not None else math.nan
        out[ds.name] = items
    return out


def _best(items: list[VariantSummary], k: str) -> float:
    vals = [s.mean[k] for s in items if np.isfinite(s.mean[k])]
    return max(vals) if vals else math.nan


def _f(x: float, digits: int = 3, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _pretrain_times(study: Study, out: Path, dataset: str) -> list[float]:
    """Times of the pretraining checkpoints this study's cells on ``dataset`` use."""
    from .runner import checkpoint_path, plan

    times = []
    paths = {checkpoint_path(out, c).with_suffix(".json") for c in plan(study) if c.dataset.name == dataset}
    for meta in sorted(p for p in paths if p.is_file()):
        try:
            t = json.loads(meta.read_text()).get("pretrain_s")
        except (OSError, ValueError):
            continue
        if t is not None:
            times.append(float(t))
    return times


def _table_row(s: VariantSummary, is_baseline: bool, best: dict[str, float]) -> str:
    """One variant's row of a dataset's table in ``summary.md``: mean ± std per metric (the column's ``best``
    mean in bold), Δ against the reference variant, time, peak memory and runs."""
    name = _md_escape(s.variant) + (f" (= {_md_escape(s.same_as)})" if s.same_as else "")
    if is_baseline:
        name = f"*{name}*"
    cells = [name]
    for k in METRICS:
        txt = f"{_f(s.mean[k])} ± {_f(s.std[k])}" if np.isfinite(s.mean[k]) else "–"
        if np.isfinite(s.mean[k]) and np.isclose(s.mean[k], best[k], rtol=0, atol=5e-7):
            txt = f"**{txt}**"
        cells.append(txt)
    for k in METRICS:
        cells.append("—" if is_baseline else _f(s.delta[k], signed=True))
    runs = f"{s.n_ok}/{s.n_ok + s.n_error}" + (" ⚠" if s.n_error else "")
    cells += [_f(s.time_s, 1), _f(s.peak_mem_mb, 0), runs]
    return "| " + " | ".join(cells) + " |"


def summary_markdown(study: Study, summary: dict[str, list[VariantSummary]], out: Path | None = None) -> str:
    """The text of ``summary.md``."""
    n_ok = sum(s.n_ok for items in summary.values() for s in items)
    n_err = sum(s.n_error for items in summary.values() for s in items)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Ablation study: {study.title}",
        "",
        (
            f"Seeds {', '.join(map(str, study.seeds))} · {len(study.variants)} variants · "
            f"{n_ok} cells ok, {n_err} failed · reference variant **{_md_escape(study.baseline)}** · {when}"
        ),
        "",
        (
            "Mean ± standard deviation over seeds (final epoch, no selection by labels). **Bold**: best mean in the "
            f"column. Δ: mean minus the mean of *{_md_escape(study.baseline)}*. Time: seconds per cell after the "
            "shared pretraining (reading, preprocessing, graph, clustering stage). Peak memory: the worker's peak RSS."
        ),
    ]
    for ds in study.datasets:
        items = summary[ds.name]
        best = {k: _best(items, k) for k in METRICS}
        lines += ["", f"## {ds.name}", "", f"Data: `{ds.path}`"]
        pre = _pretrain_times(study, out, ds.name) if out is not None else []
        if pre:
            lines += [
                "",
                (
                    f"Shared pretraining: {len(pre)} checkpoint(s), {np.mean(pre):.1f} s each on average "
                    "(reused by every variant with the same pretraining configuration)."
                ),
            ]
        head = [
            "variant",
            *(LABELS[k] for k in METRICS),
            *(f"Δ{LABELS[k]}" for k in METRICS),
            "time (s)",
            "peak mem (MiB)",
            "runs",
        ]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [_table_row(s, s.variant == study.baseline, best) for s in items]
        failed = [(s.variant, e) for s in items for e in s.errors]
        if failed:
            lines += ["", "Failed cells:", ""]
            lines += [f"- {_md_escape(v)}, {_md_escape(e)}" for v, e in failed]
    lines += ["", "Variants:", ""]
    for v in study.variants:
        what = [f"{k} = {val}" for k, val in v.components.items()]
        what += [f"{k} = {val}" for k, val in v.sets.items()]
        desc = f" — {v.description}" if v.description else ""
        lines.append(f"- **{_md_escape(v.name)}**: {', '.join(what) or 'base configuration'}{desc}")
    lines += ["", "Per-seed values: `results.csv`. Chart: `ablation.png`.", ""]
    return "\n".join(lines)


def bar_chart(study: Study, summary: dict[str, list[VariantSummary]], path: Path) -> None:
    """Grouped bars: one panel per dataset, one group per variant, one bar per metric (± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_var = len(study.variants)
    fig, axes = plt.subplots(
        len(summary), 1, figsize=(max(8.0, 0.75 * n_var + 2), 4.2 * len(summary)), squeeze=False
    )
    width = 0.8 / len(METRICS)
    x = np.arange(n_var)
    colors = plt.get_cmap("tab10")
    for ax, (ds, items) in zip(axes[:, 0], summary.items(), strict=True):
        for j, k in enumerate(METRICS):
            means = np.array([s.mean[k] for s in items], dtype=float)
            stds = np.array([s.std[k] for s in items], dtype=float)
            ax.bar(
                x + (j - (len(METRICS) - 1) / 2) * width,
                np.nan_to_num(means),
                width,
                yerr=np.nan_to_num(stds),
                capsize=2,
                label=LABELS[k],
                color=colors(j),
            )
        ref = next((s for s in items if s.variant == study.baseline), None)
        if ref is not None and np.isfinite(ref.mean["ari"]):
            ax.axhline(
                ref.mean["ari"],
                color=colors(METRICS.index("ari")),
                lw=0.8,
                ls="--",
                label=f"ARI of {study.baseline}",
            )
        ax.set_xticks(x)
        ax.set_xticklabels([s.variant for s in items], rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.2)  # scores are at most 1: the band above holds the legend
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("score")
        ax.set_title(f"{ds} — mean ± std over seeds {', '.join(map(str, study.seeds))}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=5, loc="upper center", frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def rich_tables(study: Study, summary: dict[str, list[VariantSummary]]):
    """One rich table per dataset (same content as summary.md)."""
    from rich.table import Table
    from rich.text import Text

    tables = []
    for ds, items in summary.items():
        best = {k: _best(items, k) for k in METRICS}
        t = Table(
            title=f"scsc ablate · {ds} (mean ± std over {len(study.seeds)} seed(s))", title_justify="left"
        )
        t.add_column("variant", overflow="fold")
        for k in METRICS:
            t.add_column(LABELS[k], justify="right")
        t.add_column("ΔARI", justify="right")
        t.add_column("time s", justify="right")
        t.add_column("mem MiB", justify="right")
        t.add_column("runs", justify="right")
        for s in items:
            name = Text(
                s.variant + (f" (= {s.same_as})" if s.same_as else ""),
                style="italic" if s.variant == study.baseline else "",
            )
            row: list = [name]
            for k in METRICS:
                txt = f"{_f(s.mean[k])} ± {_f(s.std[k])}" if np.isfinite(s.mean[k]) else "–"
                bold = np.isfinite(s.mean[k]) and np.isclose(s.mean[k], best[k], rtol=0, atol=5e-7)
                row.append(Text(txt, style="bold green" if bold else ""))
            d = s.delta["ari"]
            row.append(
                Text(
                    "—" if s.variant == study.baseline else _f(d, signed=True),
                    style="red" if np.isfinite(d) and d < 0 else "green" if np.isfinite(d) else "",
                )
            )
            row += [
                _f(s.time_s, 1),
                _f(s.peak_mem_mb, 0),
                Text(f"{s.n_ok}/{s.n_ok + s.n_error}", style="red" if s.n_error else ""),
            ]
            t.add_row(*row)
        tables.append(t)
    return tables


def write_reports(study: Study, rows: list[dict[str, str]], out: Path) -> dict[str, list[VariantSummary]]:
    """Write ``summary.md`` and ``ablation.png`` into ``out``; returns the summary."""
    summary = summarize(study, rows)
    atomic_write_text(out / "summary.md", summary_markdown(study, summary, out))
    bar_chart(study, summary, out / "ablation.png")
    return summary
