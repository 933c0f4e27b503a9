"""The GPU checks as one prepared run, for a machine with CUDA (run it alone there).

    python -m benchmarks.gpu --data DIR --out DIR               # CUDA: the tests marked gpu, CBMC, 100k cells
    python -m benchmarks.gpu --data DIR --out DIR --device cpu --cells 3000 --no-tests   # a dry run on CPU

1. ``pytest -m gpu tests/test_device.py``: device placement of every tensor and loss term, float32, the CLI.
2. ``scsc cluster --device cuda`` on CBMC (``DIR/Grace_CITE_CBMC_counts_top2000.h5``, K = 15; copy the file
   there from ../shared/datasets when that folder is not on the GPU machine) and on ``--cells`` simulated
   cells (``scsc simulate``, 10 types, K = 10), each in a fresh process.

Writes ``OUT/gpu.csv`` (per command: wall seconds, peak RSS of the process, peak GPU memory torch held,
stage seconds, ARI against the planted or annotated types) and ``OUT/gpu_tests.log``;
``python -m benchmarks.report … --gpu OUT/gpu.csv`` adds the table to docs/benchmarks.md.

scsc runs from this checkout (``python -m scsc`` with ``src`` on the path), so a machine with torch and
CUDA needs only scsc's other dependencies (anndata, scanpy, POT, …), for example as wheels installed with
``pip install --no-index --target DIR``. Peak RSS is each command's own, from ``os.wait4`` (no
``/usr/bin/time``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CBMC = ("Grace_CITE_CBMC_counts_top2000.h5", 15)


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_command(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``cmd`` in a fresh process → (wall seconds, its own peak RSS in GB, exit code); output: ``log``."""
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the largest child's so far
        proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024**2, proc.returncode


def cluster_row(name: str, data: Path, k: int, device: str, out: Path, log: Path) -> dict:
    """``scsc cluster DATA --n-clusters K --device DEVICE`` → one row of gpu.csv."""
    run = out / f"run_{name}"
    cmd = [
        sys.executable,
        "-m",
        "scsc",
        "cluster",
        str(data),
        "--out",
        str(run),
        "--n-clusters",
        str(k),
        "--device",
        device,
        "--no-plots",
        "--overwrite",
        "--json",
    ]
    wall, peak, code = run_command(cmd, log)
    row = {
        "data": name,
        "device": device,
        "command": "scsc cluster",
        "seconds": wall,
        "peak_rss_gb": peak,
        "exit_code": code,
    }
    if code == 0:
        import anndata as ad

        result = ad.read_h5ad(run / "result.h5ad", backed="r")
        uns = result.uns["scsc"]
        row.update({f"stage_{key}": float(v) for key, v in uns["timings"].items()})
        row["peak_gpu_gb"] = float(uns.get("peak_gpu_memory_gb", float("nan")))
        row["ari"] = float(uns["metrics"]["scsc"]["ari"]) if "metrics" in uns else float("nan")
        row["cells"] = int(result.n_obs)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help=f"folder holding {CBMC[0]}")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cells", type=int, default=100_000, help="simulated cells of the large run")
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu.log"
    log.write_text("")
    if not args.no_tests:
        with (args.out / "gpu_tests.log").open("w") as fh:
            tests = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-m",
                "gpu",
                "-p",
                "no:cacheprovider",
                "tests/test_device.py",
            ]
            code = subprocess.run(
                tests, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT, check=False
            ).returncode
        print(f"pytest -m gpu: exit {code} (log: {args.out / 'gpu_tests.log'})")
    rows = []
    cbmc = args.data / CBMC[0]
    if cbmc.exists():
        rows.append(cluster_row("CBMC", cbmc, CBMC[1], args.device, args.out, log))
    else:
        print(f"{cbmc} not found: CBMC skipped")
    sim = args.out / f"sim{args.cells}.h5"
    run_command(
        [sys.executable, "-m", "scsc", "simulate", str(sim), "--cells", str(args.cells), "--types", "10"], log
    )
    rows.append(cluster_row(f"simulated {args.cells:,}", sim, 10, args.device, args.out, log))
    sim.unlink(missing_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "gpu.csv", index=False)
    print(table.to_string(index=False))
    print(json.dumps({"csv": str(args.out / "gpu.csv")}))


if __name__ == "__main__":
    main()
