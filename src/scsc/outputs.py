"""The run directory: every file of a run, each written atomically."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ScscError

if TYPE_CHECKING:  # the run folder's lock and checks come before the seconds of importing torch
    from .session import RunResult

#: Files of an earlier clustering run that a new run must not silently replace (config.toml, which
#: ``scsc pretrain`` also writes, is regenerated and kept inside every checkpoint).
RESULT_FILES = ("result.h5ad", "clusters.csv", "loss.csv", "model.pt", "metrics.json")


#: Held in a run folder while a command writes there; a second command into the same folder is refused.
LOCK_NAME = ".scsc.lock"


class RunLock:
    """An exclusive claim on a run folder for one process (``with RunLock(out): …``).

    The lock is a file created with O_EXCL holding the owner's pid and host. A lock left by a process of this
    host that no longer runs (killed) is taken over; a live one raises :class:`ScscError`. A folder that the
    lock had to create is removed again on release when nothing was written into it.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._created = False

    def __enter__(self) -> RunLock:
        if self.out.exists() and not self.out.is_dir():
            raise ScscError(f"{self.out}: exists and is not a folder")
        self._created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScscError(f"{self.out}: cannot create the run folder ({exc.strerror})") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except PermissionError as exc:
                self._cleanup()
                raise ScscError(f"{self.out}: cannot write in the run folder ({exc.strerror})") from None
            except FileExistsError:
                if not self._stale():
                    self._cleanup()
                    owner = self._owner()
                    raise ScscError(
                        f"{self.out}: another scsc run (pid {owner[0]} on {owner[1]}) is writing "
                        "here; wait for it to finish or choose another --out"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            return self
        raise ScscError(f"{self.out}: cannot take the run folder's lock {self.path}")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        self._cleanup()

    def _owner(self) -> tuple[str, str]:
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return "?", "?"
        return pid, host

    def _stale(self) -> bool:
        pid, host = self._owner()
        if host != socket.gethostname() or not pid.isdigit():
            return False  # another machine's run (shared file system): never taken over
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _cleanup(self) -> None:
        if self._created and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()


def check_out_dir(out: Path, overwrite: bool, files: tuple[str, ...] = RESULT_FILES) -> None:
    """Refuse to overwrite the results of an earlier run unless ``overwrite`` is set."""
    if out.exists() and not out.is_dir():
        raise ScscError(f"{out}: exists and is not a folder")
    clash = [f for f in files if (out / f).exists()]
    if clash and not overwrite:
        raise ScscError(f"{out}: already holds {', '.join(clash)}; choose another --out or pass --overwrite")


def k_columns(adata) -> list[str]:
    """The ``obs["scsc_cluster_k<K>"]`` columns of a run with several candidate K, by increasing K."""
    keys = [k for k in adata.obs if k.startswith("scsc_cluster_k") and k[len("scsc_cluster_k") :].isdigit()]
    return sorted(keys, key=lambda k: int(k[len("scsc_cluster_k") :]))


def write_run(result: RunResult, out: Path, plots: bool = True) -> list[Path]:
    """Write result.h5ad, clusters.csv, loss.csv, model.pt, config.toml, metrics.json and figures.

    Figures: umap.png, loss.png, k_selection.png (score against K, when K was estimated) and k_tree.png (how
    clusters split across the candidate K values, when there are several).
    """
    import pandas as pd

    from .checkpoint import save_checkpoint
    from .data.io import atomic_write_text, write_csv, write_h5ad

    out.mkdir(parents=True, exist_ok=True)
    written = []
    adata = result.adata
    k_keys = k_columns(adata)
    if plots:
        from .plotting import k_selection_plot, k_tree_plot, loss_plot, umap_plot

        umap_plot(adata, out / "umap.png", seed=result.config.seed)
        loss_plot(result.loss_table, out / "loss.png")
        written += [out / "umap.png", out / "loss.png"]
        if "k_selection" in adata.uns["scsc"] and len(adata.uns["scsc"]["k_selection"]["k_values"]):
            k_selection_plot(adata.uns["scsc"]["k_selection"], out / "k_selection.png")
            written.append(out / "k_selection.png")
        if len(k_keys) > 1:
            k_tree_plot(adata.obs, k_keys, out / "k_tree.png")
            written.append(out / "k_tree.png")
    write_h5ad(adata, out / "result.h5ad")
    clusters = pd.DataFrame({"cell": adata.obs_names, "cluster": adata.obs["scsc_cluster"].to_numpy()})
    for key in k_keys:
        clusters[key.replace("scsc_cluster_", "cluster_")] = adata.obs[key].to_numpy()
    if "label" in adata.obs:
        clusters["label"] = adata.obs["label"].to_numpy()
    write_csv(clusters, out / "clusters.csv", index=False)
    write_csv(result.loss_table, out / "loss.csv", index=False)
    save_checkpoint(
        {
            "encoder": result.model.encoder.state_dict(),
            "fusion": result.model.fusion.state_dict(),
            "head": result.model.head.state_dict(),
            "config": result.config.to_dict(),
            "fingerprint": result.checkpoint.get("fingerprint"),
        },
        out / "model.pt",
    )
    result.config.save(out / "config.toml")
    written += [out / f for f in ("result.h5ad", "clusters.csv", "loss.csv", "model.pt", "config.toml")]
    if result.metrics:
        atomic_write_text(out / "metrics.json", json.dumps(result.metrics, indent=2))
        written.append(out / "metrics.json")
    return written
