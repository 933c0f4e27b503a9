"""docs/benchmarks.md's tables: the speed table (medians, run-by-run ratios) and the reading of run CSVs."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # the repository root: `benchmarks` is not installed

from benchmarks.report import timing_section


def _runs(scsc: list[float], peer: list[float]) -> pd.DataFrame:
    rows = []
    for run, (a, b) in enumerate(zip(scsc, peer, strict=True), start=1):
        rows.append(
            {
                "dataset": "d",
                "cells": 100,
                "command": "scsc cluster",
                "run": run,
                "seconds": a,
                "peak_gb": 1.0,
                "stage_cluster": 1.0,
                "stage_total": 4.0,
            }
        )
        rows.append(
            {
                "dataset": "d",
                "cells": 100,
                "command": "scanpy Leiden pipeline (+UMAP)",
                "run": run,
                "seconds": b,
                "peak_gb": 0.5,
            }
        )
    return pd.DataFrame(rows)


def test_ratio_is_the_median_of_run_by_run_ratios():
    # A slow machine in run 3 slows both commands: pair by pair the ratio stays 1.2, while the ratio of the
    # medians would read 30 / 10 = 3.0.
    text = timing_section(_runs([12.0, 30.0, 120.0], [10.0, 25.0, 100.0]))
    assert "scsc / scanpy = 1.20× time (runs 1.20–1.20×)" in text
    assert "| d | 100 | scsc cluster | 3 | 30.0 | 1.00 |" in text


def test_single_run_tables_without_a_run_column_still_report():
    df = _runs([12.0], [10.0]).drop(columns="run")
    assert "1.20× time" in timing_section(df)


def test_runs_of_true_k_only_keep_their_k_mode_as_text(tmp_path):
    # A file of true-K runs alone: pandas alone reads its k_mode column as booleans, and the batch-key table
    # then found no true-K row ("–" instead of the figure).
    from benchmarks.report import batch_key_section, read_runs

    rows = [
        {
            "dataset": "d",
            "collection": "tuning",
            "method": "scsc",
            "seed": s,
            "k": 3,
            "k_mode": "true",
            "ari": 0.5 + 0.1 * s,
        }
        for s in range(2)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "keyed.csv", index=False)
    keyed = read_runs([tmp_path / "keyed.csv"])
    assert set(keyed.k_mode) == {"true"}
    quality = pd.DataFrame([{"dataset": "d", "collection": "tuning", "method": "scsc", "ari": 0.4}])
    assert "| d | 0.400" in batch_key_section(keyed, quality, None)
    assert "0.550 ± 0.071" in batch_key_section(keyed, quality, None)
