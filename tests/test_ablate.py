"""``scsc ablate``: study validation, presets, shared pretraining, failures, resume after a kill, reports."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scsc.ablate import StudyError, load_study, plan, pretrain_key, run_study, study_from_data
from scsc.ablate.presets import PRESETS
from scsc.ablate.report import summarize, summary_markdown
from scsc.ablate.runner import COLUMNS

SHARED = Path(__file__).parents[2] / "shared" / "datasets"

#: Tiny epochs: every cell takes about a second on 300 simulated cells.
TINY = """
[base.pretrain]
ae_epochs = 2
gae_epochs = 2
joint_epochs = 2
[base.cluster]
epochs = 2
n_clusters = 3
"""

PAPER_NAMES = [
    "full model",
    "w/o siamese fusion",
    "w/o ZINB",
    "w/o clustering loss",
    "w/o cross-correlation",
    "w/o graph correlation",
    "w/o propagation",
    "w/o reconstruction",
    "augment: dual",
    "augment: noise",
    "augment: graph",
    "augment: none",
    "head: sinkhorn",
    "head: dec",
    "head: kmeans",
    "head: Z alone",
]


def write_study(folder: Path, data: Path, body: str, seeds: str = "[0]", top: str = "") -> Path:
    """A study file: top-level keys, the tiny [base] tables, then ``body`` (the variants)."""
    path = folder / "study.toml"
    path.write_text(f'datasets = ["{data}"]\nseeds = {seeds}\n{top}\n{TINY}\n{body}')
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- presets and keys
def test_paper_preset_has_every_published_ablation(small_h5):
    study = study_from_data([small_h5], preset="paper", seeds=[0, 1])
    assert [v.name for v in study.variants] == PAPER_NAMES
    assert study.baseline == "full model"
    assert len(plan(study)) == len(PAPER_NAMES) * 2
    by = {v.name: v for v in study.variants}
    assert by["w/o ZINB"].sets == {"loss.zinb": 0}
    assert by["w/o siamese fusion"].components == {"fusion": "mean"}
    assert by["w/o clustering loss"].components == {"cluster": "kmeans"}
    assert set(by["w/o reconstruction"].sets) == {"loss.rec_x", "loss.rec_graph", "loss.rec_adj"}
    assert set(by["w/o cross-correlation"].sets) == {
        "loss.cr_sample_ae",
        "loss.cr_sample_graph",
        "loss.cr_feature_ae",
        "loss.cr_feature_graph",
    }
    assert by["w/o propagation"].sets == {"loss.prop": 0}
    assert by["head: Z alone"].sets == {"cluster.input_weight": 0, "cluster.kmeans_restarts": 10}
    for sub in ("losses", "augment", "heads"):
        assert {v["name"] for v in PRESETS[sub][1]} <= set(PAPER_NAMES)


def test_all_paper_variants_share_one_pretraining_per_seed(small_h5):
    study = study_from_data([small_h5], preset="paper", seeds=[0, 1])
    cells = plan(study)
    assert len({c.pkey for c in cells if c.seed == 0}) == 1
    assert len({c.pkey for c in cells}) == 2
    # identical configurations are recognised (they run once)
    hashes = {c.variant.name: c.chash for c in cells if c.seed == 0}
    assert hashes["augment: dual"] == hashes["full model"] == hashes["head: sinkhorn"]
    assert hashes["head: kmeans"] == hashes["w/o clustering loss"]
    assert len(set(hashes.values())) == 13


def test_pretrain_key_tracks_only_what_pretraining_sees(small_h5):
    study = study_from_data([small_h5], preset="paper")
    base = study.base
    key = pretrain_key(base)
    for change in (
        {"loss.zinb": 0},
        {"components.cluster": "dec"},
        {"components.augment": "none"},
        {"components.fusion": "mean"},
        {"cluster.epochs": 3},
        {"cluster.n_clusters": 4},
    ):
        assert pretrain_key(base.copy().override(change)) == key, change
    for change in (
        {"components.encoder": "ae"},
        {"pretrain.ae_epochs": 3},
        {"seed": 1},
        {"graph.k": 5},
        {"preprocess.n_hvg": 200},
        {"model.latent": 8},
    ):
        assert pretrain_key(base.copy().override(change)) != key, change


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "body, expect",
    [
        (
            '[[variants]]\nname = "a"\nset = { "loss.zinbb" = 0 }\n',
            ["study.toml:", "variant 'a'", "unknown loss term 'zinbb'", "loss.zinbb", "rec_x"],
        ),
        (
            '[[variants]]\nname = "a"\n\n[[variants]]\nname = "b"\ncluster = "nope"\n',
            ["study.toml:", "variant 'b'", "unknown cluster component 'nope'", "sinkhorn"],
        ),
        (
            '[[variants]]\nname = "a"\naugment = "dual"\nfusoin = "mean"\n',
            ["variant 'a'", "unknown key 'fusoin'"],
        ),
        (
            '[[variants]]\nname = "a"\nset = { "cluster.epochs" = "many" }\n',
            ["variant 'a'", "cluster.epochs", "invalid value"],
        ),
        ('[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n', ["variant name 'a' is used twice"]),
        ('[[variants]]\nname = "a"\nset = { "seed" = 3 }\n', ["seeds list"]),
        ('baseline = "zzz"\n[[variants]]\nname = "a"\n', ["study.toml:3: baseline 'zzz' is not a variant"]),
        ('preset = "nope"\n', ["study.toml:3: unknown preset 'nope'", "paper"]),
        ('wrong = 1\n[[variants]]\nname = "a"\n', ["study.toml:3: unknown top-level key 'wrong'"]),
        ('[[variants]]\nname = "a"\n[variants.loss]\nzinb = 0\n', ["unknown key 'loss'", "set = {"]),
    ],
)
def test_bad_study_files_name_the_problem_and_its_line(tmp_path, small_h5, body, expect):
    top = ""
    if not body.startswith("[["):  # top-level keys go before the [base] tables
        top, body = body.split("\n", 1)
    path = write_study(tmp_path, small_h5, body, top=top)
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    for part in expect:
        assert part in msg, msg


def test_error_points_at_the_right_line(tmp_path, small_h5):
    path = write_study(
        tmp_path,
        small_h5,
        '[[variants]]\nname = "ok"\n\n[[variants]]\nname = "bad"\nset = { "loss.zinbb" = 0 }\n',
    )
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "zinbb" in t)
    with pytest.raises(StudyError, match=rf"study\.toml:{line}: variant 'bad'"):
        load_study(path)


def test_unknown_base_key_and_several_problems_reported_together(tmp_path, small_h5):
    path = write_study(
        tmp_path, small_h5, '[base.loss]\nzinbb = 1\n[[variants]]\nname = "a"\ncluster = "x"\n'
    )
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert (
        "2 problems" in msg and "unknown loss term 'zinbb'" in msg and "unknown cluster component 'x'" in msg
    )


def test_toml_syntax_error_shows_the_line(tmp_path, small_h5):
    path = tmp_path / "study.toml"
    path.write_text(f'datasets = ["{small_h5}"]\nseeds = [0, 1]\n[[variants]]\nname = w/o ZINB\n')
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert "study.toml:4:8: invalid TOML" in msg and "4 | name = w/o ZINB" in msg


def test_missing_dataset_is_reported_before_training(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('datasets = ["no/such/file.h5"]\n[[variants]]\nname = "a"\n')
    with pytest.raises(StudyError, match=r"study\.toml:1: dataset not found: no/such/file\.h5"):
        load_study(path)


def test_cli_bad_study_exits_2_without_running(runner, cli_app, tmp_path, small_h5):
    path = write_study(tmp_path, small_h5, '[[variants]]\nname = "a"\nencoder = "gat?"\n')
    out = tmp_path / "out"
    res = runner.invoke(cli_app, ["ablate", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "unknown encoder component 'gat?'" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_cli_data_file_needs_a_preset(runner, cli_app, small_h5, tmp_path):
    res = runner.invoke(cli_app, ["ablate", str(small_h5), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--preset paper" in res.output


def test_cli_dry_run_lists_the_plan(runner, cli_app, small_h5, tmp_path):
    res = runner.invoke(
        cli_app,
        [
            "ablate",
            str(small_h5),
            "--preset",
            "paper",
            "--seeds",
            "0,1",
            "--dry-run",
            "--json",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["cells"]) == 32
    assert {c["variant"] for c in data["cells"]} == set(PAPER_NAMES)
    assert len({c["pretrain"] for c in data["cells"]}) == 2
    assert not (tmp_path / "o").exists()


def test_cli_overrides_reach_the_configs(small_h5):
    study = study_from_data(
        [small_h5], preset="losses", seeds=[3], sets=["pretrain.ae_epochs=1"], epochs=7, n_clusters=4
    )
    cfgs = {c.variant.name: c.config for c in plan(study)}
    assert all(
        c.cluster.epochs == 7 and c.pretrain.ae_epochs == 1 and c.seed == 3 and c.cluster.n_clusters == 4
        for c in cfgs.values()
    )
    assert cfgs["w/o ZINB"].loss.zinb == 0 and cfgs["full model"].loss.zinb == 5.0


def test_real_dataset_study_validates(tmp_path):
    data = SHARED / "Maayan_Mouse_Pancreas_cell_2.h5"
    if not data.is_file():
        pytest.skip(f"real data set not found at {data}")
    path = tmp_path / "real.toml"
    path.write_text(f'datasets = ["{data}"]\nseeds = [0, 1]\npreset = "paper"\n')
    study = load_study(path)
    assert study.datasets[0].name == "Maayan_Mouse_Pancreas_cell_2" and len(plan(study)) == 32


# ----------------------------------------------------------------------------- running (in process)
def test_study_runs_shares_pretraining_survives_failure_and_resumes(tmp_path, small_h5):
    body = """
[[variants]]
name = "full model"
[[variants]]
name = "w/o ZINB"
set = { "loss.zinb" = 0 }
[[variants]]
name = "augment: dual"
augment = "dual"
[[variants]]
name = "too many clusters"
set = { "cluster.n_clusters" = 5000 }
"""
    study = load_study(write_study(tmp_path, small_h5, body))
    out = tmp_path / "out"
    outcome = run_study(study, out, jobs=0)
    assert outcome.pretrained == 1  # one checkpoint for all four variants
    assert len(list((out / "pretrain").glob("*.pt"))) == 1
    assert outcome.computed == 3 and outcome.copied == 1
    rows = {r["variant"]: r for r in read_rows(out / "results.csv")}
    assert list(read_rows(out / "results.csv")[0]) == list(COLUMNS)
    assert set(rows) == {"full model", "w/o ZINB", "augment: dual", "too many clusters"}
    for name in ("full model", "w/o ZINB"):
        r = rows[name]
        assert r["status"] == "ok" and 0 <= float(r["ari"]) <= 1 and float(r["peak_mem_mb"]) > 0
        assert float(r["time_s"]) > 0 and float(r["pretrain_s"]) > 0
    assert rows["augment: dual"]["same_as"] == "full model"
    assert rows["augment: dual"]["ari"] == rows["full model"]["ari"]
    bad = rows["too many clusters"]
    assert bad["status"] == "error" and "exceeds" in bad["error"]
    assert list((out / "errors").glob("*.txt"))
    assert [r["variant"] for r in outcome.errors] == ["too many clusters"]

    summary = (out / "summary.md").read_text()
    for name in rows:
        assert name in summary
    assert "**" in summary and "ΔARI" in summary and "Failed cells" in summary
    assert (out / "ablation.png").stat().st_size > 1000

    # resume: finished cells are not computed again; the failed one is retried
    before = {r["variant"]: r["finished_at"] for r in read_rows(out / "results.csv")}
    again = run_study(study, out, jobs=0)
    assert again.skipped == 3 and again.computed == 1 and again.pretrained == 0
    after = {r["variant"]: r["finished_at"] for r in read_rows(out / "results.csv")}
    assert all(after[n] == before[n] for n in ("full model", "w/o ZINB", "augment: dual"))
    assert after["too many clusters"] != before["too many clusters"]

    # a changed configuration is a different cell: it is computed again (pretraining is still shared)
    changed = load_study(study.source, epochs=3)
    third = run_study(changed, out, jobs=0, reports=False)
    assert third.skipped == 0 and third.pretrained == 0


def test_cli_exit_code_is_1_when_a_cell_fails(runner, cli_app, tmp_path, small_h5):
    body = '[[variants]]\nname = "too many clusters"\nset = { "cluster.n_clusters" = 5000 }\n'
    path = write_study(tmp_path, small_h5, body)
    res = runner.invoke(cli_app, ["ablate", str(path), "--out", str(tmp_path / "o"), "--jobs", "0"])
    assert res.exit_code == 1, res.output
    assert "1 cell(s) failed" in res.output
    for f in ("results.csv", "summary.md", "ablation.png", "study.toml"):
        assert (tmp_path / "o" / f).is_file()


def test_summary_marks_best_and_delta(small_h5):
    study = study_from_data([small_h5], preset="heads", seeds=[0, 1])
    rows = []
    for v, base in (("full model", 0.5), ("head: sinkhorn", 0.5), ("head: dec", 0.7), ("head: kmeans", 0.4)):
        for seed in (0, 1):
            rows.append(
                {
                    "dataset": "sim300",
                    "variant": v,
                    "seed": str(seed),
                    "status": "ok",
                    "same_as": "",
                    "acc": str(base + 0.01 * seed),
                    "nmi": str(base),
                    "ari": str(base),
                    "f1": str(base),
                    "time_s": "1.0",
                    "peak_mem_mb": "100",
                    "error": "",
                }
            )
    summary = summarize(study, rows)
    md = summary_markdown(study, summary)
    dec_line = next(line for line in md.splitlines() if line.startswith("| head: dec"))
    assert "**0.700 ± 0.000**" in dec_line and "+0.200" in dec_line
    km_line = next(line for line in md.splitlines() if line.startswith("| head: kmeans"))
    assert "-0.100" in km_line and "**" not in km_line


# ----------------------------------------------------------------------------- kill and resume (subprocess)
def _wait_for_rows(path: Path, proc: subprocess.Popen, n: int, timeout: float) -> list[dict[str, str]]:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file():
            rows = [r for r in read_rows(path) if r["status"] == "ok"]
            if len(rows) >= n:
                return rows
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    return []


@pytest.mark.parametrize(
    "jobs", [pytest.param(0, id="in-process"), pytest.param(2, id="workers", marks=pytest.mark.slow)]
)
def test_killed_study_resumes_without_repeating_cells(tmp_path, small_h5, jobs):
    body = "".join(
        f'[[variants]]\nname = "v{i}"\nset = {{ "cluster.lr" = {0.001 * (i + 1)} }}\n' for i in range(3)
    )
    path = write_study(tmp_path, small_h5, body, seeds="[0, 1]")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "scsc",
        "ablate",
        str(path),
        "--out",
        str(out),
        "--jobs",
        str(jobs),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        first = _wait_for_rows(out / "results.csv", proc, 1, timeout=240)
        assert first, f"no cell finished before the timeout: {proc.communicate()[1][-2000:]!r}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # no clean-up: the study and its workers die at once
        proc.communicate()
    killed = read_rows(out / "results.csv")
    assert 1 <= len(killed) < 6, "the study finished before it could be killed"
    stamps = {(r["variant"], r["seed"]): r["finished_at"] for r in killed}

    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["skipped"] == len(killed)
    assert report["computed"] == 6 - len(killed)
    rows = read_rows(out / "results.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    for r in rows:
        key = (r["variant"], r["seed"])
        if key in stamps:
            assert r["finished_at"] == stamps[key], f"{key} was computed again"
    assert len(list((out / "pretrain").glob("*.pt"))) == 2  # one per seed, never redone
    for f in ("summary.md", "ablation.png"):
        assert (out / f).is_file()
    if jobs:
        assert all(float(r["peak_mem_mb"]) > 50 for r in rows)  # measured in each worker process
