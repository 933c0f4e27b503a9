"""Run a Python module as ``__main__`` and, at exit, write this process's peak RSS in GB to DIR/rankR.txt
(R = the torchrun RANK, 0 without torchrun), so that every rank of a distributed run reports its own peak.

    python -m torch.distributed.run --standalone --nproc-per-node 4 benchmarks/peak_rss.py DIR scsc cluster …
"""

from __future__ import annotations

import atexit
import os
import resource
import runpy
import sys


def main() -> None:
    folder, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]

    def dump() -> None:
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: kilobytes
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}.txt"), "w") as fh:
            fh.write(f"{peak_gb:.4f}\n")

    atexit.register(dump)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
