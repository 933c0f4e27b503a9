"""Read every supported input into an AnnData of raw counts; write results atomically.

Supported inputs (METHOD §1): ``.h5`` with datasets ``X`` (cells × genes) and optional ``Y`` (labels),
``.h5ad`` (counts in ``.X`` or a named layer, labels from an ``obs`` column), 10x ``.h5``, a 10x ``mtx``
folder, and CSV/TSV (optionally gzipped; cells × genes, or genes × cells with ``transpose=True``).

Every reader returns an AnnData whose ``X`` is a float32 CSR matrix of counts and, when labels exist,
``obs["label"]`` (categorical). Problems raise :class:`~scsc.errors.InputError` with a one-line message that
names the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

LABEL_KEY = "label"
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
#: Values of a dense ``.h5`` X read or written at a time (80 MB as int32 or float32).
BLOCK_ENTRIES = 20_000_000


# --------------------------------------------------------------------------- reading
def read(
    path: str | Path,
    *,
    layer: str | None = None,
    label_key: str | None = None,
    transpose: bool = False,
    shard: Callable[[int], tuple[int, int]] | None = None,
) -> ad.AnnData:
    """Read ``path`` into an AnnData (N cells × G genes) of counts, validated for numeric sanity.

    Args:
        path: input file or 10x mtx folder.
        layer: h5ad only; take counts from ``adata.layers[layer]`` instead of ``X``.
        label_key: h5ad only; ``obs`` column with true labels (copied to ``obs["label"]``).
        transpose: tables only; the file is genes × cells.
        shard: given the file's number of cells N, the rows ``(lo, hi)`` to read (one rank's cells in a
            distributed run). ``.h5ad`` and ``.h5`` with a dense ``X`` read only those rows from disk; other
            formats are read whole and cut.

    Returns:
        AnnData with float32 CSR ``X`` of shape (N, G) and optional categorical ``obs["label"]``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    name = path.name.lower()
    if layer is not None and not name.endswith(".h5ad"):
        raise InputError(f"{path}: --layer applies to .h5ad files only")
    if path.is_dir():
        adata = _read_mtx_dir(path)
    elif name.endswith(".h5ad"):
        adata = _read_h5ad(path, layer, label_key, shard)
    elif name.endswith((".h5", ".hdf5")):
        adata = _read_h5(path, shard)
    elif name.endswith(TABLE_SUFFIXES):
        adata = _read_table(path, transpose)
    else:
        raise InputError(
            f"{path}: unknown format (expected .h5, .h5ad, 10x .h5, a 10x mtx folder, .csv or .tsv)"
        )
    if shard is not None and adata.uns.pop("scsc_rows", None) is None:  # a reader that cannot read rows: cut
        lo, hi = shard(adata.n_obs)
        adata = adata[lo:hi].copy()
    _check_matrix(adata, path)
    adata.uns["scsc_input"] = {"path": str(path), "format": _format_name(path)}
    return adata


def reads_rows(path: str | Path) -> bool:
    """Whether :func:`read` with ``shard`` takes only those rows off the disk for ``path`` (``.h5ad``, and
    ``.h5`` with a dense ``X``); other formats are read whole and cut. False for a file it cannot open."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return False
    if name.endswith(".h5ad"):
        return True
    if not name.endswith((".h5", ".hdf5")):
        return False
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("X"), h5py.Dataset) and "matrix" not in f
    except OSError:
        return False


def _format_name(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "10x-mtx"
    for suffix in (".h5ad", ".h5", ".hdf5"):
        if name.endswith(suffix):
            return suffix[1:]
    return "table"


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not an HDF5 file, or the file is corrupt") from None


def _read_h5(path: Path, shard: Callable[[int], tuple[int, int]] | None = None) -> ad.AnnData:
    with _open_h5(path) as f:
        keys = set(f.keys())
        if "matrix" in keys or any(isinstance(f[k], h5py.Group) and "barcodes" in f[k] for k in keys):
            return _read_10x_h5(path)
        if "X" not in keys:
            raise InputError(
                f"{path}: no dataset 'X' (cells × genes counts) found; datasets present: "
                f"{', '.join(sorted(keys)) or 'none'}"
            )
        xd = f["X"]
        if not isinstance(xd, h5py.Dataset):
            raise InputError(f"{path}: 'X' is a group, expected a cells × genes dataset")
        if xd.ndim != 2:
            raise InputError(f"{path}: 'X' has {xd.ndim} dimensions, expected 2 (cells × genes)")
        if not np.issubdtype(xd.dtype, np.number) and xd.dtype != np.bool_:
            raise InputError(f"{path}: 'X' holds non-numeric values ({xd.dtype})")
        lo, hi = (0, xd.shape[0]) if shard is None else shard(xd.shape[0])
        x = _read_dense_rows(xd, path, lo, hi)
        labels = None
        if "Y" in keys:
            labels = np.asarray(f["Y"][()]).reshape(-1)
            if len(labels) != xd.shape[0]:
                raise InputError(f"{path}: Y has {len(labels)} labels but there are {xd.shape[0]} cells")
        genes = None
        if "gene_names" in keys:
            genes = [g.decode() if isinstance(g, bytes) else str(g) for g in f["gene_names"][()]]
        # Other per-cell annotations (a `batch` of runs or donors, say) become obs columns of the same name.
        columns = {
            k: _text(f[k][lo:hi])
            for k in sorted(keys - {"X", "Y", "gene_names"})
            if isinstance(f[k], h5py.Dataset) and f[k].ndim == 1 and f[k].shape[0] == xd.shape[0]
        }
    adata = ad.AnnData(X=x)
    adata.obs_names = [f"cell{i}" for i in range(lo, hi)]
    if shard is not None:
        adata.uns["scsc_rows"] = [lo, hi]
    if genes is not None and len(genes) == adata.n_vars:
        adata.var_names = genes
        _unique_gene_names(adata, path)
        adata.uns["scsc_gene_names"] = True
    else:
        adata.var_names = [f"gene{j}" for j in range(adata.n_vars)]
        adata.uns["scsc_gene_names"] = False
    for key, values in columns.items():
        adata.obs[key] = pd.Categorical(values)
    if labels is not None:
        _attach_labels(adata, labels, path, "Y", rows=(lo, hi))
    return adata


def _text(values: np.ndarray) -> np.ndarray:
    """A per-cell dataset's values (n,) as strings (byte strings decoded)."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def _read_dense_rows(xd: h5py.Dataset, path: Path, first: int = 0, stop: int | None = None) -> sp.csr_matrix:
    """Rows ``first:stop`` (default all) of the dense cells × genes dataset ``xd`` as a float32 CSR matrix,
    read BLOCK_ENTRIES values at a time.

    Peak memory is one dense block plus the sparse result, not the dense N × G matrix (8 GB at 1M × 2,000).
    """
    stop = xd.shape[0] if stop is None else stop
    n, g = stop - first, xd.shape[1]
    step = max(1, BLOCK_ENTRIES // max(g, 1))
    blocks = []
    for lo in range(first, stop, step):
        try:
            block = np.asarray(xd[lo : min(lo + step, stop)])
        except OSError:
            raise InputError(f"{path}: 'X' cannot be read (corrupt file)") from None
        blocks.append(_to_csr(block, path))
    if not blocks:
        return sp.csr_matrix((n, g), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else sp.csr_matrix(sp.vstack(blocks, format="csr"))


def _read_10x_h5(path: Path) -> ad.AnnData:
    import scanpy as sc

    try:
        adata = sc.read_10x_h5(path)
    except Exception as exc:  # noqa: BLE001 (scanpy raises assorted errors on malformed files)
        raise InputError(f"{path}: cannot read as a 10x HDF5 file ({_reason(exc)})") from None
    _unique_gene_names(adata, path)
    adata.X = _to_csr(adata.X, path)
    adata.uns["scsc_gene_names"] = True
    return adata


def _read_mtx_dir(path: Path) -> ad.AnnData:
    import scanpy as sc

    if not any((path / f).exists() for f in ("matrix.mtx", "matrix.mtx.gz")):
        raise InputError(f"{path}: folder has no matrix.mtx(.gz); expected a 10x mtx folder")
    try:
        with np.errstate(
            over="ignore"
        ):  # a count beyond float32 becomes inf, refused below with a clear error
            adata = sc.read_10x_mtx(path)
    except Exception as exc:  # noqa: BLE001 (any reader error becomes an InputError naming the file)
        raise InputError(f"{path}: cannot read as a 10x mtx folder ({_reason(exc)})") from None
    _unique_gene_names(adata, path)
    adata.X = _to_csr(adata.X, path)
    adata.uns["scsc_gene_names"] = True
    return adata


def _read_h5ad(
    path: Path,
    layer: str | None,
    label_key: str | None,
    shard: Callable[[int], tuple[int, int]] | None = None,
) -> ad.AnnData:
    with _open_h5(path):
        pass
    rows, all_labels = None, None
    try:
        src = ad.read_h5ad(path, backed="r" if shard is not None else None)
        if shard is not None:  # only these rows of X and the layers come off the disk
            rows = shard(src.n_obs)
            if label_key is not None and label_key in src.obs:
                all_labels = src.obs[label_key].to_numpy()  # checked as a whole, as one read would
            src = src[rows[0] : rows[1]].to_memory()
            src.uns["scsc_rows"] = list(rows)
    except Exception as exc:  # noqa: BLE001 (any reader error becomes an InputError naming the file)
        raise InputError(f"{path}: cannot read as .h5ad ({_reason(exc)})") from None
    if layer is not None:
        if layer not in src.layers:
            raise InputError(
                f"{path}: no layer {layer!r}; layers present: {', '.join(src.layers.keys()) or 'none'}"
            )
        x = src.layers[layer]
    else:
        x = src.X
    if x is None:
        raise InputError(f"{path}: .X is empty; name the counts layer with --layer")
    adata = ad.AnnData(X=_to_csr(x, path), obs=src.obs.copy(), var=src.var.copy())
    if "scsc_rows" in src.uns:
        adata.uns["scsc_rows"] = src.uns["scsc_rows"]
    _unique_gene_names(adata, path)
    adata.uns["scsc_gene_names"] = True
    if label_key is not None:
        if label_key not in src.obs:
            raise InputError(
                f"{path}: no obs column {label_key!r} for labels; columns: {', '.join(src.obs.columns) or 'none'}"
            )
        if rows is None:
            _attach_labels(adata, src.obs[label_key].to_numpy(), path, label_key)
        else:
            _attach_labels(adata, all_labels, path, label_key, rows=rows)
    return adata


def _read_table(path: Path, transpose: bool) -> ad.AnnData:
    sep = "\t" if ".tsv" in path.name.lower() or ".txt" in path.name.lower() else ","
    try:
        df = pd.read_csv(path, sep=sep, index_col=0)
    except Exception as exc:  # noqa: BLE001 (any reader error becomes an InputError naming the file)
        raise InputError(f"{path}: cannot parse as a table ({_reason(exc)})") from None
    if transpose:
        df = df.T
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"{path}: non-numeric values in column {bad[0]!r}")
    blank = [i for i, c in enumerate(df.columns.astype(str)) if c.startswith("Unnamed: ") or not c.strip()]
    if blank:
        raise InputError(f"{path}: gene {blank[0] + 1} has no name (empty column header)")
    adata = ad.AnnData(X=_to_csr(df.to_numpy(dtype=np.float64), path))
    adata.obs_names = df.index.astype(str)
    adata.var_names = [_strip_pandas_suffix(c, set(df.columns)) for c in df.columns.astype(str)]
    _unique_gene_names(adata, path)
    adata.uns["scsc_gene_names"] = True
    return adata


def _reason(exc: BaseException) -> str:
    """A library's error text on one line (pandas' parser errors end in a newline)."""
    return " ".join(str(exc).split())


def _strip_pandas_suffix(name: str, columns: set) -> str:
    """pandas renames a repeated header ``g`` to ``g.1``, ``g.2``; give the duplicate its own name back."""
    base, dot, tail = name.rpartition(".")
    return base if dot and tail.isdigit() and base in columns else name


def _unique_gene_names(adata: ad.AnnData, path: Path) -> None:
    """Refuse empty gene names; make repeated ones unique (``g``, ``g-1``, …), counting them for ``info``.

    Repeated symbols are common (two Ensembl IDs with one symbol); scanpy makes them unique the same way.
    """
    names = adata.var_names.astype(str)
    empty = np.flatnonzero([not n.strip() or n.lower() == "nan" for n in names])
    if empty.size:
        raise InputError(f"{path}: gene {int(empty[0]) + 1} has an empty name")
    adata.uns["scsc_duplicate_genes"] = int(len(names) - len(set(names)))
    adata.var_names_make_unique()


def _to_csr(x, path: Path) -> sp.csr_matrix:
    if sp.issparse(x):
        m = sp.csr_matrix(x)
        if not np.issubdtype(m.dtype, np.number) and m.dtype != np.bool_:
            raise InputError(f"{path}: counts hold non-numeric values ({m.dtype})")
        if m.dtype.kind == "f" and m.nnz and not np.isfinite(m.data).all():
            raise InputError(f"{path}: counts contain NaN or infinite values")
        _check_range(m.data, path)
        # Every caller passes a matrix it has just read, so float32 input is kept rather than copied.
        m = m.astype(np.float32, copy=False)
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
            raise InputError(f"{path}: counts hold non-numeric values ({arr.dtype})")
        if arr.ndim != 2:
            raise InputError(f"{path}: counts have {arr.ndim} dimensions, expected 2")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"{path}: counts contain NaN or infinite values")
        _check_range(arr, path)
        m = sp.csr_matrix(arr.astype(np.float32))
    m.sum_duplicates()
    return m


#: The largest count accepted: beyond it float32 (the model's precision) loses whole counts and sums overflow
#: soon after (float32's largest value is about 3.4e38).
MAX_COUNT = 1e15


def _check_range(values: np.ndarray, path: Path) -> None:
    if values.size and values.dtype.kind in "fiu" and np.abs(values).max() > MAX_COUNT:
        raise InputError(
            f"{path}: a value of {np.abs(values).max():.3g} is far beyond any count "
            f"(limit {MAX_COUNT:.0e}); expected raw counts"
        )


def _attach_labels(
    adata: ad.AnnData, labels: np.ndarray, path: Path, key: str, rows: tuple[int, int] | None = None
) -> None:
    """``obs["label"]`` from the file's ``labels`` (one per cell of the file), checked and converted as a whole;
    with ``rows`` (lo, hi), ``adata`` holds those cells of the file only (the caller has checked that ``labels``
    covers the file). A shard's labels thus equal the rows of a whole read's, categories included."""
    lo, hi = (0, len(labels)) if rows is None else rows
    if hi - lo != adata.n_obs:
        raise InputError(f"{path}: {key} has {len(labels)} labels but there are {adata.n_obs} cells")
    if labels.dtype.kind == "f":
        if np.isnan(labels).any():
            raise InputError(f"{path}: {key} contains NaN labels")
        if np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
    if labels.dtype.kind in "SOU":
        labels = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in labels])
        if all(not v.strip() or v.lower() in {"nan", "none", "na"} for v in labels):
            raise InputError(f"{path}: {key} holds no labels (every value is missing)")
    adata.obs[LABEL_KEY] = pd.Categorical(labels.astype(str))[lo:hi]


def _check_matrix(adata: ad.AnnData, path: Path) -> None:
    n, g = adata.shape
    if n == 0 or g == 0:
        raise InputError(f"{path}: the matrix is empty ({n} cells × {g} genes)")
    data = adata.X.data
    if data.size and not np.isfinite(data).all():
        raise InputError(f"{path}: counts contain NaN or infinite values")
    if data.size and data.min() < 0:
        raise InputError(f"{path}: counts contain negative values (min {data.min():g}); expected raw counts")


def looks_like_counts(adata: ad.AnnData) -> bool:
    """True when every stored value is a non-negative integer (raw counts, not normalised data)."""
    data = adata.X.data
    return bool(data.size == 0 or (np.all(data >= 0) and np.all(data == np.round(data))))


def summarize(adata: ad.AnnData) -> dict:
    """Facts for ``scsc info``: shape, sparsity, count range, raw-count check, label summary."""
    x = adata.X
    n, g = adata.shape
    totals = np.asarray(x.sum(axis=1)).ravel()
    info = {
        "cells": int(n),
        "genes": int(g),
        "nonzero_fraction": float(x.nnz / (n * g)),
        "min_value": float(x.data.min()) if x.nnz else 0.0,
        "max_value": float(x.data.max()) if x.nnz else 0.0,
        "median_counts_per_cell": float(np.median(totals)),
        "empty_cells": int((totals == 0).sum()),
        "raw_counts": looks_like_counts(adata),
        "gene_names": bool(adata.uns.get("scsc_gene_names", True)),
        "duplicate_gene_names": int(adata.uns.get("scsc_duplicate_genes", 0)),
    }
    if LABEL_KEY in adata.obs:
        counts = adata.obs[LABEL_KEY].value_counts()
        info["labels"] = {"n_types": len(counts), "sizes": {str(k): int(v) for k, v in counts.items()}}
    return info


# --------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    A crash or an exception leaves no half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-1:]), dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    """Write ``adata`` to ``path`` atomically (compressed)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_csv(df: pd.DataFrame, path: str | Path, index: bool = True) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def write_h5_counts(
    path: str | Path,
    x: np.ndarray | sp.spmatrix,
    labels: np.ndarray | None = None,
    gene_names: list[str] | None = None,
) -> None:
    """Write the ``.h5`` exchange format (dense ``X`` counts, optional ``Y`` labels) atomically.

    ``x`` (N × G) may be dense or sparse; it is written BLOCK_ENTRIES values at a time into a gzip dataset
    chunked by rows, so a sparse ``x`` is never densified whole and the readers here read it back in row
    blocks. The file still holds (compressed) N × G values: prefer ``.h5ad`` (sparse) for large data.
    """
    n, g = x.shape
    step = max(1, BLOCK_ENTRIES // max(g, 1))
    # HDF5 chunks of about 1 MB of whole rows: each block written or read touches only its own chunks.
    chunk_rows = max(1, min(n, (1 << 18) // max(g, 1)))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset(
            "X", shape=(n, g), dtype=x.dtype, compression="gzip", chunks=(chunk_rows, g) if n and g else None
        )
        for lo in range(0, n, step):
            block = x[lo : lo + step]
            ds[lo : lo + block.shape[0]] = block.toarray() if sp.issparse(block) else np.asarray(block)
        if labels is not None:
            f.create_dataset("Y", data=labels)
        if gene_names is not None:
            f.create_dataset("gene_names", data=np.array(gene_names, dtype="S"))
