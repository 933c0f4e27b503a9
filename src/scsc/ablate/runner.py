"""Run a study: shared pretraining, one worker process per cell, resumable results.

A *cell* is one (dataset, variant, seed). The runner

- pretrains once per (dataset, pretraining key) — the hash of the config parts pretraining depends on
  (:func:`~scsc.ablate.study.pretrain_key`) — and stores the checkpoint in ``OUT/pretrain/``; every variant with
  that key reuses it (``scsc.api.run(..., pretrained=ckpt)``), in this run and in later runs;
- runs every cell in a fresh worker process (``spawn``), ``jobs`` at a time, and records the worker's peak
  resident memory (``resource.getrusage``);
- runs a cell whose whole configuration equals another's only once (e.g. ``augment: dual`` and ``full model``)
  and records it for both, with ``same_as`` naming the variant that ran;
- appends every finished cell to ``OUT/results.csv`` at once (rewritten through a temporary file and a rename),
  so a study that is killed and started again skips every cell already recorded with ``status=ok`` and the
  same configuration hash;
- survives a failing cell (or a worker that dies): the row gets ``status=error`` and the message, the traceback
  goes to ``OUT/errors/``, the other cells go on. Failed cells are tried again on the next run.

``jobs=0`` runs the cells one after another inside the calling process (for debugging; the peak memory is then
the calling process's peak so far).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig
from ..data.io import atomic_write_text
from .study import DatasetSpec, Study, Variant, config_hash, pretrain_key

METRICS = ("acc", "nmi", "ari", "f1")
COLUMNS = (
    "dataset",
    "variant",
    "seed",
    "status",
    *METRICS,
    "time_s",
    "peak_mem_mb",
    "pretrain_s",
    "n_clusters",
    "kmeans_acc",
    "kmeans_nmi",
    "kmeans_ari",
    "kmeans_f1",
    "same_as",
    "config_hash",
    "pretrain_key",
    "finished_at",
    "error",
)


# ----------------------------------------------------------------------------- plan
@dataclass
class Cell:
    """One (dataset, variant, seed) of a study with its resolved configuration."""

    dataset: DatasetSpec
    variant: Variant
    seed: int
    config: RunConfig
    chash: str
    pkey: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.dataset.name, self.variant.name, self.seed)

    @property
    def label(self) -> str:
        return f"{self.dataset.name} · {self.variant.name} · seed {self.seed}"


def plan(study: Study) -> list[Cell]:
    """Every cell, in execution order: per dataset, all variants of the first seed, then the next seed."""
    cells = []
    for ds in study.datasets:
        for seed in study.seeds:
            for v in study.variants:
                cfg = study.config(v, seed, ds)
                cells.append(Cell(ds, v, seed, cfg, config_hash(cfg), pretrain_key(cfg)))
    return cells


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def checkpoint_path(out: Path, cell: Cell) -> Path:
    return out / "pretrain" / f"{_slug(cell.dataset.name)}-seed{cell.seed}-{cell.pkey}.pt"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- results table
class ResultsStore:
    """``results.csv``: one row per cell, rewritten atomically after every finished cell."""

    def __init__(self, path: Path, order: Callable[[tuple[str, str, int]], tuple] | None = None):
        self.path = Path(path)
        self.order = order
        self.rows: dict[tuple[str, str, int], dict[str, str]] = {}
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        key = (row["dataset"], row["variant"], int(row["seed"]))
                    except (KeyError, TypeError, ValueError):
                        continue  # a foreign or damaged row: ignored, and dropped on the next write
                    self.rows[key] = {c: row.get(c, "") or "" for c in COLUMNS}

    def finished(self, cell: Cell) -> dict[str, str] | None:
        """The recorded row if the cell finished with this exact configuration."""
        row = self.rows.get(cell.key)
        if row and row.get("status") == "ok" and row.get("config_hash") == cell.chash:
            return row
        return None

    def ok_with_hash(self, dataset: str, chash: str) -> dict[str, str] | None:
        return next(
            (
                r
                for r in self.rows.values()
                if r["dataset"] == dataset
                and r["status"] == "ok"
                and r["config_hash"] == chash
                and not r["same_as"]
            ),
            None,
        )

    def record(self, row: dict[str, Any]) -> None:
        key = (row["dataset"], row["variant"], int(row["seed"]))
        self.rows[key] = {c: _fmt(row.get(c)) for c in COLUMNS}
        self.write()

    def write(self) -> None:
        keys = list(self.rows)
        if self.order is not None:
            keys.sort(key=self.order)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        for k in keys:
            writer.writerow(self.rows[k])
        atomic_write_text(self.path, buf.getvalue())


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


# ----------------------------------------------------------------------------- work done in a worker
def _task_config(task: dict[str, Any]) -> tuple[DatasetSpec, RunConfig]:
    d = dict(task["dataset"])
    ds = DatasetSpec(
        name=d["name"],
        path=Path(d["path"]),
        layer=d.get("layer"),
        label_key=d.get("label_key"),
        transpose=bool(d.get("transpose", False)),
        n_clusters=d.get("n_clusters"),
    )
    return ds, RunConfig.from_dict(task["config"])


def _peak_mem_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task (``kind`` ``pretrain`` or ``cell``) and return a result dict; never raises."""
    from .. import api
    from ..session import RunControl

    t0 = time.perf_counter()
    out: dict[str, Any] = {"kind": task["kind"], "id": task["id"]}
    try:
        ds, cfg = _task_config(task)
        adata = ds.read()
        if task["kind"] == "pretrain":
            ckpt = api.pretrain(adata, cfg, control=RunControl(source=str(ds.path)))
            api.save_checkpoint(ckpt, task["checkpoint"])
        else:
            ckpt = api.load_checkpoint(task["checkpoint"])
            result = api.run(adata, config=cfg, pretrained=ckpt, control=RunControl(source=str(ds.path)))
            out["n_clusters"] = result.n_clusters
            out["metrics"] = (result.metrics or {}).get("scsc", {})
            out["kmeans"] = (result.metrics or {}).get("pretrain_kmeans", {})
            if not result.metrics:
                out["note"] = "no true labels in the data set: no scores"
        out["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing cell must not stop the study
        out["status"] = "error"
        msg = " ".join(str(exc).split()) or "(no message)"
        out["error"] = f"{type(exc).__name__}: {msg}"[:500]
        out["traceback"] = traceback.format_exc()
    out["time_s"] = time.perf_counter() - t0
    out["peak_mem_mb"] = _peak_mem_mb()
    return out


def _death(code: int | None) -> str:
    """Why a worker ended without a result, from its exit code."""
    import signal

    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"worker process was killed by {name}{hint}"
    return f"worker process exited with code {code} without a result"


def _watch_parent() -> None:
    """Exit this worker when the study process goes away (killed), instead of running on as an orphan."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


#: Modules the pipeline imports lazily; a fresh worker imports them first so that a cell's time is its work.
WARM_UP = (
    "scsc.api",
    "torch._dynamo",
    "torch.optim",
    "scanpy.preprocessing",
    "scanpy.tools",
    "scanpy.neighbors",
    "sklearn.cluster",
    "sklearn.decomposition",
    "sklearn.neighbors",
    "sklearn.metrics",
    "ot",
    "igraph",
    "leidenalg",
    "pynndescent",
)


def _warm_up() -> None:
    import importlib

    from ..numba_cache import cache_umap_kernels

    cache_umap_kernels()  # before pynndescent, so that its kernels come from the on-disk cache
    for name in WARM_UP:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110 - an optional speed-up only
            pass


def _worker(task: dict[str, Any], conn) -> None:
    """Entry point of a spawned worker process."""
    import warnings

    _watch_parent()
    warnings.filterwarnings("ignore")
    _warm_up()
    threads = task.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        conn.send(execute(task))
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the runner
class Events(Protocol):
    """What the runner tells its caller (the CLI draws progress from it)."""

    def planned(self, total: int, skipped: int, pretrain: int) -> None: ...

    def started(self, task: dict[str, Any]) -> None: ...

    def pretrained(self, task: dict[str, Any], result: dict[str, Any]) -> None: ...

    def finished(self, row: dict[str, Any]) -> None: ...


class SilentEvents:
    def planned(self, total: int, skipped: int, pretrain: int) -> None:
        pass

    def started(self, task: dict[str, Any]) -> None:
        pass

    def pretrained(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        pass

    def finished(self, row: dict[str, Any]) -> None:
        pass


@dataclass
class Outcome:
    """What a study run did: counts, and the rows of this study's cells (in study order)."""

    cells: list[Cell]
    rows: list[dict[str, str]]
    computed: int = 0
    skipped: int = 0
    copied: int = 0
    pretrained: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


class StudyRunner:
    """Schedules pretraining and cells of a :class:`Study` on ``jobs`` worker processes."""

    def __init__(
        self,
        study: Study,
        out: str | Path,
        jobs: int = 1,
        events: Events | None = None,
        threads: int | None = None,
    ):
        self.study = study
        self.out = Path(out)
        self.jobs = max(0, int(jobs))
        self.events = events or SilentEvents()
        if threads is None and not os.environ.get("OMP_NUM_THREADS"):
            threads = max(1, (os.cpu_count() or 1) // max(1, self.jobs))
        self.threads = threads
        self.cells = plan(study)
        index = {
            c.key: i
            for i, c in enumerate(
                sorted(self.cells, key=lambda c: (self._ds_index(c), self._v_index(c), c.seed))
            )
        }
        self.store = ResultsStore(
            self.out / "results.csv", order=lambda k: (0, index[k]) if k in index else (1, k)
        )

    def _ds_index(self, c: Cell) -> int:
        return [d.name for d in self.study.datasets].index(c.dataset.name)

    def _v_index(self, c: Cell) -> int:
        return [v.name for v in self.study.variants].index(c.variant.name)

    # ------------------------------------------------------------------ rows
    def _row(self, cell: Cell, result: dict[str, Any], same_as: str = "") -> dict[str, Any]:
        m = result.get("metrics") or {}
        km = result.get("kmeans") or {}
        row: dict[str, Any] = {
            "dataset": cell.dataset.name,
            "variant": cell.variant.name,
            "seed": cell.seed,
            "status": result["status"],
            "time_s": result.get("time_s"),
            "peak_mem_mb": result.get("peak_mem_mb"),
            "pretrain_s": result.get("pretrain_s"),
            "n_clusters": result.get("n_clusters"),
            "same_as": same_as,
            "config_hash": cell.chash,
            "pretrain_key": cell.pkey,
            "finished_at": _now(),
            "error": result.get("error") or result.get("note") or "",
        }
        for k in METRICS:
            row[k] = m.get(k)
            row[f"kmeans_{k}"] = km.get(k)
        return row

    def _copy_row(self, cell: Cell, source: dict[str, str]) -> dict[str, Any]:
        row = dict(source)
        row.update(
            variant=cell.variant.name,
            seed=cell.seed,
            same_as=source["variant"],
            finished_at=_now(),
            config_hash=cell.chash,
        )
        return row

    def _save_traceback(self, name: str, text: str) -> None:
        try:
            atomic_write_text(self.out / "errors" / f"{_slug(name)}.txt", text)
        except OSError:
            pass

    # ------------------------------------------------------------------ main loop
    def run(self) -> Outcome:
        """Run every unfinished cell, pretraining first where a checkpoint is missing; rows in study order."""
        self.out.mkdir(parents=True, exist_ok=True)
        # temporary files of a run that was killed while writing (atomic writes never leave a final name)
        for stale in [*self.out.glob(".results.csv.*.tmp*"), *(self.out / "pretrain").glob(".*.tmp*")]:
            stale.unlink(missing_ok=True)
        outcome = Outcome(cells=self.cells, rows=[])
        todo = [c for c in self.cells if self.store.finished(c) is None]
        outcome.skipped = len(self.cells) - len(todo)
        primaries, followers, copies = self._group_identical(todo)
        pre_tasks, waiting, ready = self._pretrain_tasks(primaries)
        self.events.planned(len(self.cells), outcome.skipped, len(pre_tasks))
        for c, earlier in copies:
            self.store.record(self._copy_row(c, earlier))
            outcome.copied += 1
            self.events.finished(self.store.rows[c.key])
        schedule = _Schedule(
            self,
            outcome,
            pre_queue=list(pre_tasks.values()),
            waiting=waiting,
            ready=ready,
            followers=followers,
            by_id={c.label: c for c in primaries},
        )
        if self.jobs == 0:
            while True:
                task = schedule.next_task()
                if task is None:
                    break
                self.events.started(task)
                schedule.on_result(task, execute(task))
        else:
            self._pool_loop(schedule.next_task, schedule.on_result)

        outcome.rows = [
            self.store.rows[c.key]
            for c in sorted(self.cells, key=lambda c: (self._ds_index(c), self._v_index(c), c.seed))
            if c.key in self.store.rows
        ]
        outcome.errors = [r for r in outcome.rows if r["status"] != "ok"]
        return outcome

    def _group_identical(
        self, todo: list[Cell]
    ) -> tuple[list[Cell], dict[tuple, list[Cell]], list[tuple[Cell, dict[str, str]]]]:
        """Identical configurations run once; an earlier run's identical result is copied right away.

        Returns:
            (the cells to run, the cells that take the row of an identical one, by that one's key; the cells
            whose configuration an earlier run finished, each with that row).
        """
        primaries: list[Cell] = []
        followers: dict[tuple, list[Cell]] = {}
        first: dict[tuple[str, str], Cell] = {}
        copies: list[tuple[Cell, dict[str, str]]] = []
        for c in todo:
            earlier = self.store.ok_with_hash(c.dataset.name, c.chash)
            if earlier is not None:
                copies.append((c, earlier))
                continue
            ident = (c.dataset.name, c.chash)
            if ident in first:
                followers.setdefault(first[ident].key, []).append(c)
            else:
                first[ident] = c
                primaries.append(c)
        return primaries, followers, copies

    def _pretrain_tasks(
        self, cells: list[Cell]
    ) -> tuple[dict[Path, dict[str, Any]], dict[Path, list[Cell]], list[Cell]]:
        """One pretraining task per missing checkpoint.

        Returns:
            (the task of every missing checkpoint, the cells waiting for each, the cells whose checkpoint
            exists).
        """
        pre_tasks: dict[Path, dict[str, Any]] = {}
        waiting: dict[Path, list[Cell]] = {}
        ready: list[Cell] = []
        for c in cells:
            ckpt = checkpoint_path(self.out, c)
            if ckpt.is_file():
                ready.append(c)
                continue
            waiting.setdefault(ckpt, []).append(c)
            if ckpt not in pre_tasks:
                pre_tasks[ckpt] = {
                    "kind": "pretrain",
                    "id": f"pretrain {c.dataset.name} seed {c.seed} [{c.pkey}]",
                    "dataset": c.dataset.to_dict(),
                    "config": c.config.to_dict(),
                    "checkpoint": str(ckpt),
                    "threads": self.threads,
                }
        return pre_tasks, waiting, ready

    def _pool_loop(
        self,
        next_task: Callable[[], dict[str, Any] | None],
        on_result: Callable[[dict[str, Any], dict[str, Any]], None],
    ) -> None:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        running: dict[Any, tuple[Any, dict[str, Any], Any]] = {}  # sentinel → (process, task, conn)
        try:
            while True:
                while len(running) < self.jobs:
                    task = next_task()
                    if task is None:
                        break
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(
                        target=_worker, args=(task, send), daemon=True, name=f"scsc-ablate {task['id']}"
                    )
                    proc.start()
                    send.close()
                    running[proc.sentinel] = (proc, task, recv)
                    self.events.started(task)
                if not running:
                    break
                conns = {entry[2]: s for s, entry in running.items()}
                for obj in wait(list(conns) + list(running)):
                    sentinel = conns.get(obj, obj)
                    if sentinel not in running:
                        continue
                    proc, task, recv = running.pop(sentinel)
                    result = None
                    try:
                        if recv.poll(0 if obj is sentinel else 5):
                            result = recv.recv()
                    except (EOFError, OSError):
                        result = None
                    recv.close()
                    proc.join(timeout=30)
                    if result is None:
                        result = {
                            "status": "error",
                            "error": _death(proc.exitcode),
                            "kind": task["kind"],
                            "id": task["id"],
                        }
                    on_result(task, result)
        except BaseException:
            for proc, _, _ in running.values():
                proc.terminate()
            for proc, _, _ in running.values():
                proc.join(timeout=10)
            raise


@dataclass
class _Schedule:
    """The queues of one :meth:`StudyRunner.run` and what becomes of each result.

    Pretraining tasks come first; a cell is ready once its checkpoint exists. When a cell finishes, the cells
    with the same configuration (its followers) get its row.
    """

    runner: StudyRunner
    outcome: Outcome
    pre_queue: list[dict[str, Any]]
    waiting: dict[Path, list[Cell]]
    ready: list[Cell]
    followers: dict[tuple, list[Cell]]
    by_id: dict[str, Cell]

    def next_task(self) -> dict[str, Any] | None:
        """The next task to start (None: nothing can start until a running task finishes)."""
        if self.pre_queue:
            return self.pre_queue.pop(0)
        if self.ready:
            return self._cell_task(self.ready.pop(0))
        return None

    def _cell_task(self, c: Cell) -> dict[str, Any]:
        r = self.runner
        return {
            "kind": "cell",
            "id": c.label,
            "dataset": c.dataset.to_dict(),
            "config": c.config.to_dict(),
            "checkpoint": str(checkpoint_path(r.out, c)),
            "threads": r.threads,
        }

    def on_result(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        if task["kind"] == "pretrain":
            self._pretrained(task, result)
            return
        self._finish_cell(self.by_id[task["id"]], result)

    def _pretrained(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        """Release the cells waiting for this checkpoint, or fail them all when pretraining failed."""
        ckpt = Path(task["checkpoint"])
        cells = self.waiting.pop(ckpt, [])
        self.outcome.pretrained += result["status"] == "ok"
        if result["status"] == "ok":
            meta = {
                "pretrain_s": result["time_s"],
                "peak_mem_mb": result["peak_mem_mb"],
                "finished_at": _now(),
                "config": task["config"],
            }
            atomic_write_text(ckpt.with_suffix(".json"), json.dumps(meta, indent=2))
            self.ready.extend(cells)
        else:
            self.runner._save_traceback(task["id"], result.get("traceback", result.get("error", "")))
            for c in cells:
                fail = {
                    "status": "error",
                    "error": f"pretraining failed: {result.get('error')}",
                    "time_s": result.get("time_s"),
                    "peak_mem_mb": result.get("peak_mem_mb"),
                }
                self._finish_cell(c, fail)
        self.runner.events.pretrained(task, result)

    def _finish_cell(self, c: Cell, result: dict[str, Any]) -> None:
        """Record the cell's row (with its checkpoint's pretraining time), then its followers'."""
        r = self.runner
        meta = checkpoint_path(r.out, c).with_suffix(".json")
        if meta.is_file() and result.get("pretrain_s") is None:
            try:
                result["pretrain_s"] = json.loads(meta.read_text()).get("pretrain_s")
            except (OSError, ValueError):
                pass
        if result["status"] != "ok" and result.get("traceback"):
            r._save_traceback(c.label, result["traceback"])
        r.store.record(r._row(c, result))
        self.outcome.computed += 1
        r.events.finished(r.store.rows[c.key])
        for f in self.followers.pop(c.key, []):
            if result["status"] == "ok":
                r.store.record(r._copy_row(f, r.store.rows[c.key]))
                self.outcome.copied += 1
            else:
                r.store.record(r._row(f, result, same_as=c.variant.name))
            r.events.finished(r.store.rows[f.key])
