"""Ablation studies: a grid of variants × seeds × datasets, with shared pretraining and resumable results.

>>> from scsc.ablate import load_study, run_study
>>> study = load_study("study.toml")            # validated before anything runs (scsc.ablate.study)
>>> outcome = run_study(study, "ablate_out")    # results.csv, summary.md, ablation.png

See docs/ablate.md for the study-file format and the ``paper`` preset.
"""

from __future__ import annotations

from pathlib import Path

from .presets import PRESETS, preset_names, preset_variants
from .runner import Cell, Outcome, ResultsStore, StudyRunner, plan
from .study import (
    DatasetSpec,
    ReadOptions,
    Study,
    StudyError,
    Variant,
    config_hash,
    load_study,
    pretrain_key,
    study_from_data,
)


def run_study(study: Study, out: str | Path, jobs: int = 1, events=None, reports: bool = True) -> Outcome:
    """Run every unfinished cell of ``study`` into ``out`` and (by default) write the reports."""
    out = Path(out)
    outcome = StudyRunner(study, out, jobs=jobs, events=events).run()
    if reports:
        from .report import write_reports

        write_reports(study, outcome.rows, out)
    return outcome


__all__ = [
    "PRESETS",
    "Cell",
    "DatasetSpec",
    "Outcome",
    "ReadOptions",
    "ResultsStore",
    "Study",
    "StudyError",
    "StudyRunner",
    "Variant",
    "config_hash",
    "load_study",
    "plan",
    "preset_names",
    "preset_variants",
    "pretrain_key",
    "run_study",
    "study_from_data",
]
