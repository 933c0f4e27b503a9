"""Bad input reaches the user as one line naming the file and the problem, exit code 2, no traceback.

Every case is fed to ``scsc info``, ``scsc pretrain`` and ``scsc cluster``. The training commands must refuse
bad data *before* any training starts (a guard below fails the test if a model is ever built) and must leave
nothing in ``--out``.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from scsc.config import PreprocessConfig
from scsc.data.io import read
from scsc.data.preprocess import preprocess


# --------------------------------------------------------------------------- bad files
def _counts(n=40, g=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(2.0, size=(n, g)).astype(np.float64)


def _h5(path: Path, x, y=None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x)
        if y is not None:
            f.create_dataset("Y", data=y)
    return path


def missing(tmp: Path) -> Path:
    return tmp / "does_not_exist.h5"


def corrupt_h5(tmp: Path) -> Path:
    path = tmp / "corrupt.h5"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return path


def truncated_h5(tmp: Path) -> Path:
    good = _h5(tmp / "good.h5", _counts())
    path = tmp / "truncated.h5"
    path.write_bytes(good.read_bytes()[:1000])
    return path


def no_x(tmp: Path) -> Path:
    path = tmp / "no_x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("counts", data=_counts())
        f.create_dataset("Y", data=np.zeros(40))
    return path


def string_x(tmp: Path) -> Path:
    x = np.array([[f"v{i}{j}" for j in range(30)] for i in range(40)], dtype=object)
    path = tmp / "string_x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x, dtype=h5py.string_dtype())
    return path


def csv_text_column(tmp: Path) -> Path:
    df = pd.DataFrame(
        _counts().astype(int), index=[f"c{i}" for i in range(40)], columns=[f"g{j}" for j in range(30)]
    )
    df["g7"] = ["high" if i % 2 else "low" for i in range(40)]
    path = tmp / "text_column.csv"
    df.to_csv(path)
    return path


def tsv_gz_text_column(tmp: Path) -> Path:
    df = pd.DataFrame(
        _counts().astype(int), index=[f"c{i}" for i in range(40)], columns=[f"g{j}" for j in range(30)]
    )
    df["g3"] = "n/a?"
    path = tmp / "text_column.tsv.gz"
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh, sep="\t")
    return path


def with_nan(tmp: Path) -> Path:
    x = _counts()
    x[3, 4] = np.nan
    return _h5(tmp / "nan.h5", x)


def with_inf(tmp: Path) -> Path:
    x = _counts()
    x[5, 6] = np.inf
    return _h5(tmp / "inf.h5", x)


def negative(tmp: Path) -> Path:
    x = _counts()
    x[2, 2] = -3
    return _h5(tmp / "negative.h5", x)


def label_length(tmp: Path) -> Path:
    return _h5(tmp / "labels.h5", _counts(), y=np.arange(39) % 3)


def all_zero(tmp: Path) -> Path:
    return _h5(tmp / "all_zero.h5", np.zeros((40, 30)))


def genes_too_rare(tmp: Path) -> Path:
    # Every gene is seen in a single cell: the min_cells=3 gene filter leaves no gene.
    return _h5(tmp / "rare_genes.h5", np.eye(40, 30) * 5)


def too_few_cells(tmp: Path) -> Path:
    return _h5(tmp / "five_cells.h5", _counts(n=5))


def empty_cells_leave_too_few(tmp: Path) -> Path:
    x = _counts()
    x[6:] = 0  # 6 cells with counts < k + 1 = 11
    return _h5(tmp / "mostly_empty.h5", x)


def normalised(tmp: Path) -> Path:
    x = _counts()
    x = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    return _h5(tmp / "lognorm.h5", x)


@dataclass
class Case:
    make: Callable[[Path], Path]
    problem: tuple[str, ...]  # every string must appear in the message
    #: The file itself is unreadable or invalid, so ``info`` refuses it too. Otherwise the file is fine to
    #: describe and only clustering (which needs k + 1 cells, expressed genes and raw counts) refuses it.
    file_level: bool = True


CASES = {
    "missing": Case(missing, ("no such file",)),
    "corrupt_random_bytes": Case(corrupt_h5, ("not an HDF5 file",)),
    "truncated_h5": Case(truncated_h5, ("corrupt",)),
    "h5_without_X": Case(no_x, ("no dataset 'X'", "counts")),
    "string_X": Case(string_x, ("non-numeric",)),
    "csv_text_column": Case(csv_text_column, ("non-numeric", "g7")),
    "tsv_gz_text_column": Case(tsv_gz_text_column, ("non-numeric", "g3")),
    "nan": Case(with_nan, ("NaN",)),
    "inf": Case(with_inf, ("infinite",)),
    "negative": Case(negative, ("negative",)),
    "label_length": Case(label_length, ("39 labels", "40 cells")),
    "all_zero": Case(all_zero, ("no gene is expressed",), file_level=False),
    "genes_too_rare": Case(genes_too_rare, ("no gene is expressed in at least 3 cells",), file_level=False),
    "five_cells_k10": Case(too_few_cells, ("only 5 cells", "at least 11"), file_level=False),
    "empty_cells_leave_six": Case(
        empty_cells_leave_too_few, ("only 6 cells", "at least 11"), file_level=False
    ),
    "normalised_values": Case(normalised, ("not integer counts", "--log-normalized"), file_level=False),
}


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if a command gets as far as building a model: validation must come first."""
    import scsc.session

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built: input validation must happen before training")

    monkeypatch.setattr(scsc.session, "build_model", refuse)


def assert_user_error(result, path: Path | None, problem: tuple[str, ...]) -> None:
    out = result.output
    assert result.exit_code == 2, (
        f"exit code {result.exit_code}, output:\n{out}\nexception: {result.exception!r}"
    )
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    # A training command first says what it starts (test_a_training_command_says_what_it_does_before_torch_loads);
    # the error is then its only other line.
    if lines and lines[0].startswith(("scsc cluster: ", "scsc pretrain: ")):
        lines = lines[1:]
    assert len(lines) == 1, f"expected one line, got:\n{out}"
    line = lines[0]
    assert line.startswith("error: "), line
    if path is not None:
        assert str(path) in line, f"message does not name the file: {line}"
    for text in problem:
        assert text in line, f"{text!r} not in message: {line}"


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists() or not any(out_dir.iterdir()), sorted(out_dir.iterdir())


# --------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.file_level])
def test_info_refuses_bad_file(name, tmp_path, runner, cli_app):
    case = CASES[name]
    path = case.make(tmp_path)
    for extra in ([], ["--json"]):
        result = runner.invoke(cli_app, ["info", str(path), *extra])
        assert_user_error(result, path, case.problem)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.file_level])
def test_info_describes_files_that_only_clustering_refuses(name, tmp_path, runner, cli_app):
    """``info`` is a description: an all-zero or normalised matrix is reported, not refused."""
    import json

    path = CASES[name].make(tmp_path)
    result = runner.invoke(cli_app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    if name == "all_zero":
        assert facts["empty_cells"] == facts["cells"] == 40
    if name == "normalised_values":
        assert facts["raw_counts"] is False


@pytest.mark.parametrize("command", ["cluster", "pretrain"])
@pytest.mark.parametrize("name", list(CASES))
def test_training_commands_refuse_bad_input_before_training(
    name, command, tmp_path, runner, cli_app, no_training
):
    case = CASES[name]
    path = case.make(tmp_path)
    out_dir = tmp_path / "run"
    args = [command, str(path), "--out", str(out_dir), "--quiet"]
    result = runner.invoke(cli_app, args + (["--no-plots"] if command == "cluster" else []))
    assert_user_error(result, path, case.problem)
    assert_nothing_written(out_dir)


def _cli_in_fresh_python(fresh_python, args: list[str]) -> tuple[str, str]:
    """``scsc ARGS`` in a new interpreter → ("<exit code> <heavy modules it imported>", its output)."""
    code = (
        "import sys; from typer.testing import CliRunner; from scsc.cli import app; "
        f"r = CliRunner().invoke(app, {args!r}); "
        "print(r.exit_code, sorted(m for m in ('torch', 'scanpy', 'sklearn', 'anndata') if m in sys.modules)); "
        "print(r.output)"
    )
    status, _, output = fresh_python(code).partition("\n")
    return status, output


@pytest.mark.parametrize("command", ["cluster", "pretrain"])
def test_a_training_command_says_what_it_does_before_torch_loads(command, small_h5, tmp_path, fresh_python):
    """The first line comes at once: reading the data and importing torch take seconds before the first bar.
    A bad option stops the command right after that line, so torch is never imported here."""
    args = [command, str(small_h5), "--out", str(tmp_path / "run"), "--set", "cluster.foo=1"]
    code = (
        "import sys; from typer.testing import CliRunner; from scsc.cli import app, run; seen = []; "
        "say = run.err_console.print; "
        "run.err_console.print = lambda *a, **k: (seen.append('torch' in sys.modules), say(*a, **k)); "
        f"r = CliRunner().invoke(app, {args!r}); print(r.exit_code, seen[:1]); print(r.output)"
    )
    status, _, output = fresh_python(code).partition("\n")
    assert status == "2 [False]", output
    assert output.splitlines()[0].startswith(f"scsc {command}: {small_h5} → "), output
    quiet = fresh_python(code.replace("cluster.foo=1']", "cluster.foo=1', '-q']")).partition("\n")[2]
    assert f"scsc {command}:" not in quiet


@pytest.mark.parametrize(
    "command", ["--help", "cluster --help", "cluster {missing} --out {out}", "pretrain {missing} --out {out}"]
)
def test_help_and_a_missing_input_answer_without_importing_torch(command, tmp_path, fresh_python):
    """The command line answers --help and refuses a missing file before the seconds of importing torch,
    scanpy and scikit-learn (8.5 s for a missing file before)."""
    args = command.format(missing=tmp_path / "missing.h5", out=tmp_path / "run").split()
    status, output = _cli_in_fresh_python(fresh_python, args)
    assert status == ("0 []" if "--help" in args else "2 []"), output
    assert ("Usage" in output) if "--help" in args else ("missing.h5: no such file or folder" in output)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "command, options, message",
    [
        *(
            (c, o, m)
            for c in ("cluster", "pretrain")
            for o, m in (
                ("--set cluster.foo=1", "unknown key 'foo'"),
                ("--device tpu", "unknown device 'tpu'"),
                ("--set graph.k=[", "graph.k: invalid value"),
            )
        ),
        ("cluster", "--n-clusters 1", "--n-clusters '1'"),
    ],
)
def test_a_bad_option_is_refused_without_importing_torch(command, options, message, tmp_path, fresh_python):
    """Option and --set mistakes are refused before torch, scanpy and scikit-learn load (they waited for those
    imports before: about 4 s on 2 cores)."""
    data = tmp_path / "cells.h5"
    data.write_bytes(b"")  # never read: the options fail first
    args = [command, str(data), "--out", str(tmp_path / "run"), *options.split()]
    status, output = _cli_in_fresh_python(fresh_python, args)
    assert status == "2 []", output
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "run").exists()


def test_path_with_brackets_is_printed_verbatim(tmp_path, runner, cli_app):
    """File names are not rich markup: ``[abc]`` must survive in the message."""
    path = tmp_path / "sample[abc]" / "x[bold].h5"
    path.parent.mkdir()
    path.write_bytes(b"not hdf5 at all")
    result = runner.invoke(cli_app, ["info", str(path)])
    assert_user_error(result, path, ("not an HDF5 file",))


def test_unknown_format(tmp_path, runner, cli_app):
    path = tmp_path / "counts.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert_user_error(runner.invoke(cli_app, ["info", str(path)]), path, ("unknown format",))


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("option", ["--augment", "--encoder", "--fusion", "--cluster"])
def test_unknown_component_lists_valid_names(option, small_h5, tmp_path, runner, cli_app, no_training):
    out_dir = tmp_path / "run"
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out_dir), option, "nope", "-q"])
    # Built-in names; installed plugins may add more to the list.
    valid = {
        "--augment": ("dual", "graph", "noise", "none"),
        "--encoder": ("ae", "graph", "siamese"),
        "--fusion": ("mean", "siamese"),
        "--cluster": ("dec", "kmeans", "sinkhorn"),
    }[option]
    assert_user_error(result, None, ("'nope'", "valid: ", *valid))
    assert_nothing_written(out_dir)


@pytest.mark.parametrize(
    "setting, problem",
    [
        ("loss.nope=1", ("unknown key 'nope'", "zinb")),
        ("nope.k=1", ("unknown key 'nope'", "graph")),
        ("graph.k=ten", ("k", "invalid value 'ten'")),
        ("graph.k=1.5", ("invalid value 1.5",)),
        ("loss=1", ("[loss] must be a table",)),
        ("graph.k.x=1", ("'k' is not a section",)),
        ("graph.k", ("expected section.key=value",)),
        ("components.cluster=nope", ("unknown cluster component 'nope'", "sinkhorn")),
    ],
)
def test_bad_set_is_refused(setting, problem, small_h5, tmp_path, runner, cli_app, no_training):
    out_dir = tmp_path / "run"
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out_dir), "--set", setting, "-q"])
    assert_user_error(result, None, problem)
    assert_nothing_written(out_dir)


def test_missing_config_file(small_h5, tmp_path, runner, cli_app, no_training):
    cfg = tmp_path / "nope.toml"
    out_dir = tmp_path / "run"
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out_dir), "-c", str(cfg)])
    assert_user_error(result, cfg, ("config file not found",))


def test_existing_results_are_not_overwritten(small_h5, tmp_path, runner, cli_app, no_training):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "result.h5ad").write_text("earlier run")
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out_dir), "-q"])
    assert_user_error(result, out_dir, ("result.h5ad", "--overwrite"))
    assert (out_dir / "result.h5ad").read_text() == "earlier run"


# --------------------------------------------------------------------------- --log-normalized
def test_log_normalized_input_is_accepted_with_the_flag(tmp_path):
    path = normalised(tmp_path)
    adata = read(path)
    with pytest.raises(Exception, match="--log-normalized"):
        preprocess(adata, PreprocessConfig(), min_cells_required=11, source=path)
    prepared = preprocess(adata, PreprocessConfig(log_normalized=True), min_cells_required=11, source=path)
    assert prepared.counts is None
    assert prepared.x.shape[0] == 40 and np.isfinite(prepared.x).all()
    assert np.all(prepared.size_factors == 1.0)


def test_log_normalized_flag_reaches_the_config():
    from scsc.cli.run import build_config

    cfg = build_config(None, None, **{"preprocess.log_normalized": True})
    assert cfg.preprocess.log_normalized is True
    assert build_config(None, None, **{"preprocess.log_normalized": False}).preprocess.log_normalized is False


def test_second_run_into_the_same_folder_is_refused_while_the_first_holds_it(
    tmp_path, runner, cli_app, small_h5
):
    from scsc.outputs import LOCK_NAME

    out = tmp_path / "busy"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live process holds it
    before = sorted(p.name for p in out.iterdir())
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out), "-k", "3", "--no-plots"])
    assert result.exit_code == 2 and "another scsc run" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, the owner's lock kept


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    from scsc.outputs import LOCK_NAME, RunLock

    out = tmp_path / "stale"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False
    )
    (out / LOCK_NAME).write_text(f"{proc.stdout.strip()} {socket.gethostname()}\n")  # that process has ended
    with RunLock(out):
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_concurrent_runs_into_one_folder(tmp_path, small_h5):
    """Two real `scsc cluster` processes aimed at one --out: the second is refused while the first runs, and
    the first finishes with its results intact."""
    from scsc.outputs import LOCK_NAME

    out = tmp_path / "shared_out"
    cmd = [
        sys.executable,
        "-m",
        "scsc",
        "cluster",
        str(small_h5),
        "--out",
        str(out),
        "-k",
        "3",
        "--no-plots",
        "-q",
        "--set",
        "pretrain.ae_epochs=60",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if (out / LOCK_NAME).exists() or first.poll() is not None:
            break
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, check=False)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "another scsc run" in second.stderr and "Traceback" not in second.stderr
    assert (out / "result.h5ad").exists() and not (out / LOCK_NAME).exists()
