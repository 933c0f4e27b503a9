"""Batch correction of the model input (``--batch-key``): Harmony (Korsunsky et al., Nature Methods 2019).

Real studies hold several runs, donors or chemistries, and their differences can outweigh those between cell
types (docs/method.md, "Batches"). With a batch key the highly variable genes are chosen within each batch
(scanpy's ``batch_key``), and the PCA input X (N × P) is corrected by harmonypy before the cell graph is built,
so the graph, both encoders and the head all see the corrected input. The raw counts the ZINB decoder
reconstructs are left as they are. Harmony works on soft clusters of the cells (N × C, C ≤ 100): linear in N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError


def batch_labels(obs: pd.DataFrame, key: str, where: str = "") -> np.ndarray:
    """The batch of every cell (N,) as strings from ``obs[key]``.

    Raises :class:`InputError` naming the obs columns when ``key`` is not one of them, and when a cell has no
    batch.
    """
    if key not in obs.columns:
        columns = ", ".join(map(str, obs.columns)) or "none"
        raise InputError(
            f"{where}--batch-key {key!r} is not a column of the cells' annotation (obs columns: {columns})"
        )
    values = obs[key]
    if values.isna().any():
        raise InputError(f"{where}--batch-key {key!r}: {int(values.isna().sum())} cells have no batch")
    return values.astype(str).to_numpy()


def harmonize(x: np.ndarray, batches: np.ndarray, seed: int = 0) -> np.ndarray:
    """Harmony-corrected ``x`` (N × P, float32) for the cell batches ``batches`` (N,); ``x`` itself when there is
    a single batch. Deterministic for a given ``seed``."""
    if len(np.unique(batches)) < 2:
        return x
    import harmonypy

    out = harmonypy.run_harmony(
        x.astype(np.float64), pd.DataFrame({"batch": batches}), ["batch"], random_state=seed, verbose=False
    )
    z = np.asarray(out.Z_corr)
    if z.shape != x.shape:  # harmonypy releases differ in orientation (PCs × cells in older ones)
        z = z.T
    return np.ascontiguousarray(z, dtype=np.float32)
