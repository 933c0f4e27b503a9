"""A property-based fuzzer of malformed inputs: every reader, every kind of defect, refused cleanly.

Hypothesis draws a format (.h5, .h5ad, 10x .h5, 10x mtx folder, CSV/TSV, gzipped tables), a defect that the
format can carry, a shape, a seed and whether the path holds non-ASCII characters. Every generated input must
be refused by ``scsc cluster`` with exit code 2 and one line that names the file, no traceback, nothing left in
``--out`` and the input byte-identical afterwards. ``scsc info`` refuses the same file (exit 2) when it cannot
be read or is invalid, and describes it with a warning (exit 0) when only clustering would refuse it.

The examples are derandomised (the same every run); the number refused is printed with the test output.
"""

from __future__ import annotations

import gzip
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FORMATS = ("h5", "h5ad", "10x_h5", "mtx", "csv", "tsv", "csv.gz", "tsv.gz")
#: Generated inputs per (format, defect) pair: 82 pairs, 82 inputs.
EXAMPLES_PER_PAIR = 1
TABLES = ("csv", "tsv", "csv.gz", "tsv.gz")


# --------------------------------------------------------------------------- writers
@dataclass
class Data:
    """What a file holds: counts (N × G, float64 or object), gene names, labels (or None)."""

    x: np.ndarray
    genes: list[str]
    labels: np.ndarray | None = None


def write(fmt: str, base: Path, d: Data) -> Path:
    """Write ``d`` as ``fmt`` next to ``base`` (a stem); returns the path to give scsc."""
    if fmt == "h5":
        path = base.with_suffix(".h5")
        with h5py.File(path, "w") as f:
            if d.x.dtype == object:
                f.create_dataset("X", data=d.x.astype(str).astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset("X", data=d.x)
            f.create_dataset("gene_names", data=np.array(d.genes, dtype="S"))
            if d.labels is not None:
                f.create_dataset("Y", data=d.labels)
        return path
    if fmt == "h5ad":
        path = base.with_suffix(".h5ad")
        a = ad.AnnData(X=d.x)
        a.var_names = d.genes
        if d.labels is not None:
            a.obs["cell_type"] = d.labels
        a.write_h5ad(path)
        return path
    if fmt == "10x_h5":
        path = base.with_suffix(".h5")
        m = sp.csc_matrix(d.x.T)  # genes × cells
        with h5py.File(path, "w") as f:
            g = f.create_group("matrix")
            g.create_dataset("data", data=m.data)
            g.create_dataset("indices", data=m.indices.astype(np.int64))
            g.create_dataset("indptr", data=m.indptr.astype(np.int64))
            g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
            g.create_dataset(
                "barcodes", data=np.array([f"AAAC{i:06d}-1" for i in range(d.x.shape[0])], dtype="S")
            )
            feats = g.create_group("features")
            feats.create_dataset(
                "id", data=np.array([f"ENSG{j:08d}" for j in range(len(d.genes))], dtype="S")
            )
            feats.create_dataset("name", data=np.array(d.genes, dtype="S"))
            feats.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(d.genes), dtype="S"))
            feats.create_dataset("genome", data=np.array(["GRCh38"] * len(d.genes), dtype="S"))
        return path
    if fmt == "mtx":
        folder = base.with_suffix("")
        folder.mkdir()
        scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.coo_matrix(d.x.T))
        (folder / "genes.tsv").write_text("".join(f"ENSG{j:08d}\t{g}\n" for j, g in enumerate(d.genes)))
        (folder / "barcodes.tsv").write_text("".join(f"AAAC{i:06d}-1\n" for i in range(d.x.shape[0])))
        return folder
    sep = "\t" if fmt.startswith("tsv") else ","
    path = base.with_name(base.name + "." + fmt)
    df = pd.DataFrame(d.x, index=[f"cell{i}" for i in range(d.x.shape[0])], columns=d.genes)
    text = df.to_csv(sep=sep)
    if fmt.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _rewrite_table(path: Path, edit: Callable[[list[str]], list[str]]) -> None:
    gz = path.name.endswith(".gz")
    text = gzip.open(path, "rt").read() if gz else path.read_text()
    new = "\n".join(edit(text.splitlines())) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(new)
    else:
        path.write_text(new)


def _main_file(path: Path) -> Path:
    return path / "matrix.mtx" if path.is_dir() else path


# --------------------------------------------------------------------------- defects
@dataclass
class Defect:
    formats: tuple[str, ...]
    #: Change the data before writing (``rng`` draws where).
    data: Callable[[Data, np.random.Generator], Data] | None = None
    #: Change the written file.
    file: Callable[[Path, str, np.random.Generator], None] | None = None
    #: Every string must appear in the error line (empty: any one-line error naming the file).
    problem: tuple[str, ...] = ()
    #: The file is unreadable or invalid (``info`` refuses it); otherwise only clustering does.
    file_level: bool = True
    cells: tuple[int, int] = (12, 60)


def _put(value):
    def f(d: Data, rng: np.random.Generator) -> Data:
        x = d.x.copy()
        x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] = value
        return Data(x, d.genes, d.labels)

    return f


def _truncate(path: Path, fmt: str, rng: np.random.Generator) -> None:
    main = _main_file(path)
    raw = main.read_bytes()
    main.write_bytes(raw[: max(16, int(len(raw) * rng.uniform(0.2, 0.7)))])


def _text_value(d: Data, rng: np.random.Generator) -> Data:
    x = d.x.astype(object)
    x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] = "n/a?"
    return Data(x, d.genes, d.labels)


def _ragged(path: Path, fmt: str, rng: np.random.Generator) -> None:
    sep = "\t" if fmt.startswith("tsv") else ","

    def edit(lines: list[str]) -> list[str]:
        i = int(rng.integers(1, len(lines)))
        lines[i] = lines[i] + sep + "7" + sep + "7"
        return lines

    _rewrite_table(path, edit)


def _empty_gene(d: Data, rng: np.random.Generator) -> Data:
    genes = list(d.genes)
    genes[int(rng.integers(len(genes)))] = ""
    return Data(d.x, genes, d.labels)


def _short_labels(d: Data, rng: np.random.Generator) -> Data:
    return Data(d.x, d.genes, np.arange(d.x.shape[0] - 1) % 3)


def _missing_labels(d: Data, rng: np.random.Generator) -> Data:
    return Data(d.x, d.genes, np.full(d.x.shape[0], np.nan))


def _all_zero(d: Data, rng: np.random.Generator) -> Data:
    return Data(np.zeros_like(d.x), d.genes, d.labels)


def _normalised(d: Data, rng: np.random.Generator) -> Data:
    x = d.x / np.maximum(d.x.sum(axis=1, keepdims=True), 1) * 1e4
    return Data(np.log1p(x), d.genes, d.labels)


def _one_dim(path: Path, fmt: str, rng: np.random.Generator) -> None:
    with h5py.File(path, "r+") as f:
        x = f["X"][()]
        del f["X"]
        f.create_dataset("X", data=x.reshape(-1))


DEFECTS = {
    "truncated": Defect(FORMATS, file=_truncate),
    "nan": Defect(FORMATS, data=_put(np.nan), problem=("NaN",)),
    "inf": Defect(FORMATS, data=_put(np.inf), problem=("infinite",)),
    "negative": Defect(FORMATS, data=_put(-3.0), problem=("negative",)),
    "huge_value": Defect(FORMATS, data=_put(1e39), problem=("far beyond any count",)),
    "text_value": Defect(("h5", *TABLES), data=_text_value, problem=("non-numeric",)),
    "ragged_rows": Defect(TABLES, file=_ragged),
    "empty_gene_name": Defect(
        ("h5", "h5ad", *TABLES), data=_empty_gene, problem=("has no name", "empty name")
    ),
    "labels_wrong_length": Defect(("h5",), data=_short_labels, problem=("labels but there are",)),
    "labels_all_missing": Defect(("h5", "h5ad"), data=_missing_labels, problem=("label",)),
    "one_dimensional_X": Defect(("h5",), file=_one_dim, problem=("dimensions",)),
    "all_zero": Defect(FORMATS, data=_all_zero, problem=("no gene is expressed",), file_level=False),
    "too_few_cells": Defect(
        FORMATS, problem=("cells with counts", "at least 11"), file_level=False, cells=(3, 9)
    ),
    "normalised_values": Defect(FORMATS, data=_normalised, problem=("not integer counts",), file_level=False),
}
#: Problems the one-line message may name for any of these (each needs one).
ANY_OF = {
    "empty_gene_name": ("has no name", "empty name"),
    "truncated": (),
    # scanpy reads 10x mtx values as float32, where 1e39 is already infinite
    "huge_value": ("far beyond any count", "infinite"),
}


@st.composite
def malformed(draw, fmt: str, name: str):
    """A ``fmt`` input with the defect ``name``: its shape, seed and path drawn."""
    lo, hi = DEFECTS[name].cells
    return {
        "format": fmt,
        "defect": name,
        "cells": draw(st.integers(lo, hi)),
        "genes": draw(st.integers(4, 25)),
        "seed": draw(st.integers(0, 2**16)),
        "unicode": draw(st.booleans()),
    }


def build(case: dict, folder: Path) -> Path:
    rng = np.random.default_rng(case["seed"])
    defect = DEFECTS[case["defect"]]
    x = rng.poisson(3.0, size=(case["cells"], case["genes"])).astype(np.float64)
    x[:, 0] += 1  # every cell has counts and at least one gene is expressed everywhere
    labels = np.arange(case["cells"]) % 3 if case["format"] in ("h5", "h5ad") else None
    d = Data(x, [f"G{j}" for j in range(case["genes"])], labels)
    if defect.data is not None:
        d = defect.data(d, rng)
    stem = ("données_细胞_α_" if case["unicode"] else "input_") + case["defect"]
    path = write(case["format"], folder / stem, d)
    if defect.file is not None:
        defect.file(path, case["format"], rng)
    return path


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


#: Warnings Python's default filters keep from a user's terminal (libraries' deprecations at import).
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning)


def one_error_line(result, path: Path, problem: tuple[str, ...], any_of: tuple[str, ...] | None) -> str:
    out = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}: {out}\n{result.exception!r}"
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert str(path) in lines[0], f"the message does not name {path}: {lines[0]}"
    if any_of:
        assert any(p in lines[0] for p in any_of), lines[0]
    else:
        assert all(p in lines[0] for p in problem), lines[0]
    return lines[0]


def test_generated_malformed_inputs_are_refused(tmp_path_factory, runner, cli_app, monkeypatch, capsys):
    import scsc.session

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built: input validation must happen before training")

    monkeypatch.setattr(scsc.session, "build_model", refuse)
    seen: list[tuple[str, str]] = []

    def check(case):
        folder = tmp_path_factory.mktemp("fuzz")
        path = build(case, folder)
        before = digest(path)
        defect = DEFECTS[case["defect"]]
        any_of = ANY_OF.get(case["defect"])
        label = (
            ["--label-key", "cell_type"]
            if case["format"] == "h5ad" and defect.data is _missing_labels
            else []
        )
        out = folder / "run out"
        with warnings.catch_warnings(record=True) as caught:  # a warning would reach the user's terminal too
            warnings.simplefilter("always")
            result = runner.invoke(
                cli_app, ["cluster", str(path), "--out", str(out), "-k", "3", "--no-plots", "-q", *label]
            )
        one_error_line(result, path, defect.problem, any_of)
        shown = [w for w in caught if not issubclass(w.category, HIDDEN_WARNINGS)]
        assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
        info = runner.invoke(cli_app, ["info", str(path), *label])
        if defect.file_level:
            one_error_line(info, path, defect.problem, any_of)
        else:
            assert info.exit_code == 0, info.output
            assert "warning:" in info.output and "scsc cluster would refuse it" in info.output
        assert digest(path) == before, "the input file changed"
        seen.append((case["format"], case["defect"]))

    for fmt in FORMATS:  # every defect a reader can meet, each with its own drawn examples
        for name in (n for n, d in DEFECTS.items() if fmt in d.formats):
            settings(
                max_examples=EXAMPLES_PER_PAIR,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            )(given(case=malformed(fmt, name))(check))()
    distinct = set(seen)
    with capsys.disabled():
        print(
            f"\ninput fuzzer: {len(seen)} generated malformed inputs refused "
            f"({len(distinct)} distinct format × defect pairs, {len({f for f, _ in seen})} formats, "
            f"{len({d for _, d in seen})} defects)"
        )
    assert len(seen) >= 50
    assert {f for f, _ in seen} == set(FORMATS) and {d for _, d in seen} == set(DEFECTS)


@pytest.mark.parametrize("blocker", ["file", "parent_file"])
def test_output_folder_that_cannot_be_made_is_refused(blocker, tmp_path, runner, cli_app, small_h5):
    before = digest(small_h5)
    if blocker == "file":
        out = tmp_path / "taken"
        out.write_text("not a folder")
    else:
        (tmp_path / "plain_file").write_text("x")
        out = tmp_path / "plain_file" / "run"
    result = runner.invoke(cli_app, ["cluster", str(small_h5), "--out", str(out), "-k", "3", "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(out) in lines[0], result.output
    assert digest(small_h5) == before


def test_repeated_gene_names_are_made_unique_and_reported(tmp_path, runner, cli_app):
    import json

    x = np.random.default_rng(0).poisson(3.0, size=(30, 6)).astype(np.float64)
    path = write("csv", tmp_path / "dups", Data(x, ["A", "B", "A", "C", "B", "A"]))
    result = runner.invoke(cli_app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["duplicate_gene_names"] == 3 and facts["genes"] == 6
    from scsc.data.io import read

    assert list(read(path).var_names) == ["A", "B", "A-1", "C", "B-1", "A-2"]
