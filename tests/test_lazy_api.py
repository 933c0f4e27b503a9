"""``import scsc`` is cheap and gives the same names as when it imported everything at once."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_scsc_leaves_torch_and_scanpy_for_first_use():
    code = ("import sys, scsc\n"
            "heavy = ('torch', 'scanpy', 'sklearn', 'anndata')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "print(callable(scsc.cluster) and 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr


@pytest.mark.parametrize("name", ["cluster", "pretrain", "run", "make_config", "read", "write_h5ad", "simulate",
                                  "RunConfig", "RunSession", "RunControl", "list_components", "ScscError",
                                  "__version__"])
def test_public_names_resolve(name):
    import scsc

    assert name in scsc.__all__ and getattr(scsc, name) is not None


def test_submodules_resolve_as_attributes_and_unknown_names_are_refused():
    import scsc

    assert callable(scsc.annotate.find_markers) and callable(scsc.k_selection.partition_at)
    assert callable(scsc.api.run) and "annotate" in dir(scsc) and "cluster" in dir(scsc)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scsc.nope  # noqa: B018
