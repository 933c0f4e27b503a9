"""Conversions between scipy sparse matrices and torch tensors."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

# torch says once per process that its CSR support is beta; a scanpy user calling scsc.cluster in a notebook
# saw it on every first run. One narrow filter, set once: a catch_warnings per call would sit in the training
# loop (rows of a distributed rank's graph are cut per layer and step).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)


def sparse_to_torch(m: sp.spmatrix, device: str | torch.device = "cpu") -> torch.Tensor:
    """A scipy sparse matrix (N × M) as a float32 torch CSR tensor on ``device``.

    CSR is used because sparse × dense products (and their backward) are about twice as fast as with COO.
    """
    csr = sp.csr_matrix(m, dtype=np.float32)
    csr.sort_indices()
    return csr_tensor(
        torch.from_numpy(csr.indptr.astype(np.int64)),
        torch.from_numpy(csr.indices.astype(np.int64)),
        torch.from_numpy(csr.data),
        csr.shape,
        device,
    )


def csr_tensor(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    size: tuple[int, int],
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """A torch CSR tensor (size[0] × size[1]) from row pointers (size[0] + 1,), column indices and values
    (nnz,), which must already form a valid CSR matrix (scipy's, or rows cut from one).

    Invariant checks follow ``torch.sparse.check_sparse_tensor_invariants`` (off unless a user turns them on
    to debug), chosen explicitly, so torch does not warn that they are "implicitly disabled".
    """
    checks = torch.sparse.check_sparse_tensor_invariants.is_enabled()
    return torch.sparse_csr_tensor(crow, col, values, size=size, device=device, check_invariants=checks)


def edges_of(m: sp.spmatrix, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zero entries of a sparse matrix as ``(edge_index (2 × E) int64, values (E,) float32)``."""
    coo = sp.coo_matrix(m)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)).to(device)
    return idx, torch.from_numpy(coo.data.astype(np.float32)).to(device)
