"""``scsc annotate``: marker genes, cell types from marker sets, reference label transfer and its CV.

The "result" is built directly (simulated counts with ``obs["scsc_cluster"]`` = the true types; no model is
trained); the reference is another simulation seed with the same gene names and planted marker programs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scsc.annotate as sa
from scsc.data.simulate import simulate
from scsc.errors import InputError

TOP = 10


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sim():
    return simulate(n_cells=300, n_types=3, n_genes=500, seed=0)


@pytest.fixture(scope="module")
def result(sim) -> ad.AnnData:
    """A clustered AnnData like ``result.h5ad``: raw counts, clusters = the planted types (named 0, 1, 2)."""
    a = sim.to_anndata()
    a.obs["scsc_cluster"] = pd.Categorical(a.obs["label"].astype(str).str.replace("type_", ""))
    a.uns["scsc_gene_names"] = True
    return a


@pytest.fixture(scope="module")
def reference() -> ad.AnnData:
    ref = simulate(n_cells=300, n_types=3, n_genes=500, seed=1).to_anndata()
    ref.obs["cell_type"] = ref.obs["label"].astype(str)
    return ref


@pytest.fixture(scope="module")
def files(tmp_path_factory, result, reference, sim) -> dict[str, Path]:
    import tomli_w

    d = tmp_path_factory.mktemp("annotate")
    paths = {"result": d / "result.h5ad", "reference": d / "ref.h5ad", "markers": d / "markers.toml"}
    result.write_h5ad(paths["result"])
    reference.write_h5ad(paths["reference"])
    paths["markers"].write_text(tomli_w.dumps(sim.markers))
    return paths


def _cluster_type(c: str) -> str:
    return f"type_{c}"


def _invoke(runner, app, args):
    return runner.invoke(app, ["annotate", *map(str, args)])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- marker genes
@pytest.mark.parametrize("method", ["wilcoxon", "t-test", "logreg"])
def test_planted_markers_are_the_top_markers(result, sim, method):
    a = result.copy()
    table = sa.find_markers(a, method=method, n_genes=50)
    assert list(table.columns) == sa.MARKER_COLUMNS
    assert set(table["cluster"].astype(str)) == {"0", "1", "2"}
    for cluster, genes in sa.top_markers(table, TOP).items():
        planted = set(sim.markers[_cluster_type(cluster)])
        hits = sum(g in planted for g in genes)
        assert hits >= (TOP if method == "wilcoxon" else TOP - 1), (method, cluster, genes)
    top = table[table["rank"] <= TOP]
    assert (top["log2_fold_change"] > 0).all()
    assert top["pct_in"].between(0, 1).all() and top["pct_out"].between(0, 1).all()
    assert (top["pct_in"] > top["pct_out"]).all()
    # gene_index points at the gene's column of the input
    assert (a.var_names[table["gene_index"].to_numpy()] == table["gene"].to_numpy()).all()
    if method == "logreg":
        assert table["pval_adj"].isna().all()
    else:
        assert (top["pval_adj"] < 1e-6).all()
    assert "scsc_markers" in a.uns


def test_two_cluster_logreg_gives_each_cluster_its_own_markers(result, sim):
    a = result[result.obs["scsc_cluster"].isin(["0", "1"])].copy()
    a.obs["scsc_cluster"] = a.obs["scsc_cluster"].cat.remove_unused_categories()
    top = sa.top_markers(sa.find_markers(a, method="logreg"), 5)
    for cluster, genes in top.items():
        assert sum(g in sim.markers[_cluster_type(cluster)] for g in genes) >= 4, (cluster, genes)


# --------------------------------------------------------------------------- cell types from marker sets
def test_annotate_assigns_the_planted_types(result, sim):
    a = result.copy()
    ann = sa.annotate_clusters(a, sim.markers)
    got = dict(zip(ann.clusters["cluster"], ann.clusters["cell_type"], strict=True))
    assert got == {c: _cluster_type(c) for c in ("0", "1", "2")}
    assert (ann.clusters["confidence"] >= 0.9).all()
    assert (ann.clusters["enrichment_padj"] < 1e-6).all()
    assert (a.obs["scsc_cell_type"].astype(str) == a.obs["label"].astype(str)).all()
    assert a.obsm["scsc_marker_scores"].shape == (a.n_obs, 3)
    assert ann.missing == {}


def test_unknown_type_is_unassigned_and_missing_genes_are_reported(result, sim):
    a = result.copy()
    sets = {
        "type_0": sim.markers["type_0"] + ["NOT_A_GENE"],
        "type_1": sim.markers["type_1"],
        "decoy": [g for g in a.var_names if g.startswith("GENE")][:20],
        "B cell": ["MS4A1", "CD79A"],
    }
    ann = sa.annotate_clusters(a, sets)
    got = dict(zip(ann.clusters["cluster"], ann.clusters["cell_type"], strict=True))
    assert got["0"] == "type_0" and got["1"] == "type_1"
    assert got["2"] == sa.UNASSIGNED
    assert ann.clusters.set_index("cluster").loc["2", "reason"]
    assert ann.missing == {"type_0": ["NOT_A_GENE"], "B cell": ["MS4A1", "CD79A"]}
    assert a.uns["scsc_annotation"]["sets_without_genes"] == ["B cell"]
    assert not ann.genes.set_index("gene").loc["NOT_A_GENE", "found"]


def test_marker_genes_match_case_insensitively(result, sim):
    a = result.copy()
    sets = {t: [g.lower() for g in gs] for t, gs in sim.markers.items()}
    ann = sa.annotate_clusters(a, sets)
    assert ann.missing == {}
    assert set(ann.clusters["cell_type"]) == set(sim.markers)


def _write_formats(d: Path) -> dict[str, Path]:
    sets = {"T cell": ["CD3E", "CD3D"], "B cell": ["MS4A1", "CD79A", "CD3E"]}
    out = {
        "toml": ('"T cell" = ["CD3E", "CD3D"]\n"B cell" = ["MS4A1", "CD79A", "CD3E"]\n', "m.toml"),
        "toml_table": (
            '[markers]\n"T cell" = "CD3E, CD3D"\n"B cell" = ["MS4A1", "CD79A", "CD3E"]\n',
            "t.toml",
        ),
        "json": (json.dumps(sets), "m.json"),
        "csv_long": (
            (
                "cell_type,gene,source\nT cell,CD3E,x\nT cell,CD3D,x\nB cell,MS4A1,y\n"
                "B cell,CD79A,y\nB cell,CD3E,y\n"
            ),
            "long.csv",
        ),
        "csv_rows": ("T cell,CD3E,CD3D\nB cell,MS4A1,CD79A,CD3E\n", "rows.csv"),
        "tsv": (
            ("type\tgene\nT cell\tCD3E\nT cell\tCD3D\nB cell\tMS4A1\nB cell\tCD79A\nB cell\tCD3E\n"),
            "m.tsv",
        ),
        "gmt": ("T cell\tna\tCD3E\tCD3D\nB cell\thttp://x\tMS4A1\tCD79A\tCD3E\n", "m.gmt"),
    }
    paths = {}
    for kind, (text, name) in out.items():
        paths[kind] = d / name
        paths[kind].write_text(text)
    return paths


def test_marker_file_formats(tmp_path):
    expected = {"T cell": ["CD3E", "CD3D"], "B cell": ["MS4A1", "CD79A", "CD3E"]}
    for kind, path in _write_formats(tmp_path).items():
        assert sa.read_marker_sets(path) == expected, kind


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("m.xlsx", "x", "unknown marker file format"),
        ("bad.json", "{not json", "cannot parse as JSON"),
        ("list.json", '["CD3E"]', "mapping"),
        ("empty.toml", "", "no marker sets"),
        ("bad.gmt", "only_name\n", "not GMT"),
    ],
)
def test_bad_marker_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        sa.read_marker_sets(path)


# --------------------------------------------------------------------------- reference classification
def test_transfer_labels_from_another_simulation(result, reference):
    a = result.copy()
    tr = sa.transfer_labels(a, reference, key="cell_type")
    acc = float(np.mean(tr.labels == a.obs["label"].astype(str).to_numpy()))
    assert acc >= 0.95
    assert len(tr.genes) >= 400
    assert np.all((tr.probability > 0) & (tr.probability <= 1))
    assert np.allclose(tr.proba.sum(axis=1), 1.0)
    assert a.obs["scsc_transfer"].dtype == "category"
    assert "scsc_transfer_prob" in a.obs and a.obsm["scsc_transfer_proba"].shape == (a.n_obs, 3)


def test_cross_validation_on_the_reference(reference):
    cv = sa.cross_validate(reference, key="cell_type")
    assert cv["n_splits"] == 5 and len(cv["fold_accuracy"]) == 5
    assert cv["accuracy"] >= 0.95 and cv["macro_f1"] >= 0.95
    assert set(cv["per_type"]) == {"type_0", "type_1", "type_2"}
    assert len(cv["predictions"]) == reference.n_obs


def test_reference_without_shared_genes(result, reference):
    ref = reference.copy()
    ref.var_names = [f"OTHER{i}" for i in range(ref.n_vars)]
    with pytest.raises(InputError, match="shares no gene"):
        sa.transfer_labels(result.copy(), ref, key="cell_type")


# --------------------------------------------------------------------------- command line
def test_cli_full_run(runner, cli_app, files, sim, tmp_path):
    out = tmp_path / "ann"
    before = _sha(files["result"])
    res = _invoke(
        runner,
        cli_app,
        [
            files["result"],
            "--out",
            out,
            "--markers",
            files["markers"],
            "--reference",
            files["reference"],
            "--reference-key",
            "cell_type",
            "--cv",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert _sha(files["result"]) == before  # the input is never changed
    for name in (
        "markers.csv",
        "markers_dotplot.png",
        "markers_dotplot.svg",
        "markers_heatmap.png",
        "markers_heatmap.svg",
        "annotation.csv",
        "annotation_scores.csv",
        "marker_genes.csv",
        "transfer.csv",
        "transfer_clusters.csv",
        "cv.json",
        "cv_predictions.csv",
        "annotated.h5ad",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "markers_dotplot.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (out / "markers_heatmap.svg").read_bytes()[:2000]
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind

    markers = pd.read_csv(out / "markers.csv", dtype={"cluster": str})
    assert list(markers.columns) == sa.MARKER_COLUMNS
    for cluster, part in markers[markers["rank"] <= TOP].groupby("cluster"):
        assert set(part["gene"]) <= set(sim.markers[_cluster_type(cluster)])
    ann = pd.read_csv(out / "annotation.csv", dtype={"cluster": str})
    assert dict(zip(ann["cluster"], ann["cell_type"], strict=True)) == {
        c: _cluster_type(c) for c in ("0", "1", "2")
    }

    adata = ad.read_h5ad(out / "annotated.h5ad")
    assert (adata.obs["scsc_cell_type"].astype(str) == adata.obs["label"].astype(str)).all()
    assert np.mean(adata.obs["scsc_transfer"].astype(str) == adata.obs["label"].astype(str)) >= 0.95
    assert adata.X.max() > 1 and float(adata.X.max()).is_integer()  # raw counts kept in X
    assert "scsc_markers" in adata.uns

    assert summary["cv"]["accuracy"] >= 0.95 and summary["cv"]["macro_f1"] >= 0.95
    assert summary["annotation"]["0"]["cell_type"] == "type_0"
    assert summary["top_markers"]["1"][0] in sim.markers["type_1"]
    assert json.loads((out / "cv.json").read_text())["n_splits"] == 5


def test_cli_terminal_table_and_cv(runner, cli_app, files, sim, tmp_path):
    res = _invoke(
        runner,
        cli_app,
        [
            files["result"],
            "--out",
            tmp_path / "o",
            "--markers",
            files["markers"],
            "--reference",
            files["reference"],
            "--cv",
            "--no-plots",
            "--top",
            "3",
            "--method",
            "t-test",
        ],
    )
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "accuracy" in text and "macro-F1" in text
    assert "type_2" in text
    assert any(g in res.stdout for g in sim.markers["type_0"])


def test_cli_cv_alone_on_an_h5_without_gene_names(runner, cli_app, sim, tmp_path):
    from scsc.data.io import write_h5_counts

    h5 = tmp_path / "ref.h5"
    write_h5_counts(h5, sim.counts, sim.labels.astype("S"))  # no gene names, like the shared files
    res = _invoke(runner, cli_app, ["--reference", h5, "--cv", "--out", tmp_path / "cv", "--json"])
    assert res.exit_code == 0, res.output
    cv = json.loads(res.stdout)["cv"]
    assert cv["accuracy"] >= 0.95 and 0 < cv["macro_f1"] <= 1


def test_cli_without_gene_names(runner, cli_app, result, files, tmp_path):
    a = result.copy()
    a.var_names = [f"gene{j}" for j in range(a.n_vars)]
    a.uns["scsc_gene_names"] = False
    path = tmp_path / "noname.h5ad"
    a.write_h5ad(path)
    res = _invoke(runner, cli_app, [path, "--out", tmp_path / "ok", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "no gene names" in res.output
    markers = pd.read_csv(tmp_path / "ok" / "markers.csv")
    assert markers["gene"].str.fullmatch(r"gene\d+").all()
    assert (markers["gene"] == "gene" + markers["gene_index"].astype(str)).all()

    res = _invoke(runner, cli_app, [path, "--out", tmp_path / "bad", "--markers", files["markers"]])
    assert res.exit_code == 2
    assert "no gene names" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()


def _no_cluster(tmp: Path, result, files) -> list:
    a = result.copy()
    del a.obs["scsc_cluster"]
    a.write_h5ad(tmp / "nocluster.h5ad")
    return [tmp / "nocluster.h5ad"]


def _bad_format(tmp: Path, result, files) -> list:
    (tmp / "markers.xlsx").write_text("x")
    return [files["result"], "--markers", tmp / "markers.xlsx"]


def _no_shared_genes(tmp: Path, result, files) -> list:
    ref = ad.read_h5ad(files["reference"])
    ref.var_names = [f"OTHER{i}" for i in range(ref.n_vars)]
    ref.write_h5ad(tmp / "other.h5ad")
    return [files["result"], "--reference", tmp / "other.h5ad"]


def _bad_key(tmp: Path, result, files) -> list:
    return [files["result"], "--reference", files["reference"], "--reference-key", "nope"]


def _bad_method(tmp: Path, result, files) -> list:
    return [files["result"], "--method", "magic"]


@pytest.mark.parametrize(
    "case,match",
    [
        (_no_cluster, "no obs column 'scsc_cluster'"),
        (_bad_format, "unknown marker file format"),
        (_no_shared_genes, "shares no gene"),
        (_bad_key, "no obs column 'nope'"),
        (_bad_method, "unknown --method"),
    ],
)
def test_cli_bad_input_writes_nothing(runner, cli_app, result, files, tmp_path, case, match):
    out = tmp_path / "out"
    res = _invoke(runner, cli_app, [*case(tmp_path, result, files), "--out", out])
    assert res.exit_code == 2, res.output
    assert match in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 3  # one message (soft-wrapped at most)
    assert not out.exists()


def test_cli_other_cluster_key_log_normalised_input_and_overwrite(runner, cli_app, result, files, tmp_path):
    import scanpy as sc

    a = result.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    a.obs["leiden"] = a.obs["scsc_cluster"].astype(str)
    del a.obs["scsc_cluster"]
    path = tmp_path / "scanpy.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "o"
    args = [path, "--out", out, "--cluster-key", "leiden", "--markers", files["markers"], "--no-plots"]
    res = _invoke(runner, cli_app, args)
    assert res.exit_code == 0, res.output
    assert "log-normalised" in res.output
    assert set(pd.read_csv(out / "annotation.csv")["cell_type"]) == {"type_0", "type_1", "type_2"}

    res = _invoke(runner, cli_app, args)  # an earlier run is not replaced silently
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = _invoke(
        runner, cli_app, [path, "--out", out, "--cluster-key", "leiden", "--no-plots", "--overwrite"]
    )
    assert res.exit_code == 0, res.output
    assert not (out / "annotation.csv").exists()  # stale tables of the earlier run are removed
    assert "scsc_cell_type" not in ad.read_h5ad(out / "annotated.h5ad").obs
