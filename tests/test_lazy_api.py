"""``import scsc`` is cheap and gives the same names as when it imported everything at once."""

from __future__ import annotations

import pytest


def test_import_scsc_leaves_torch_and_scanpy_for_first_use(fresh_python):
    code = (
        "import sys, scsc\n"
        "heavy = ('torch', 'scanpy', 'sklearn', 'anndata')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(callable(scsc.cluster) and 'torch' in sys.modules)\n"
    )
    assert fresh_python(code) == "[]\nTrue"


@pytest.mark.parametrize(
    "name",
    [
        "cluster",
        "pretrain",
        "run",
        "make_config",
        "read",
        "write_h5ad",
        "simulate",
        "RunConfig",
        "RunSession",
        "RunControl",
        "list_components",
        "ScscError",
        "__version__",
    ],
)
def test_public_names_resolve(name):
    import scsc

    assert name in scsc.__all__ and getattr(scsc, name) is not None


def test_submodules_resolve_as_attributes_and_unknown_names_are_refused(fresh_python):
    """In a fresh process, where nothing else imported them first."""
    code = (
        "import scsc\n"
        "for f in (scsc.annotate.find_markers, scsc.k_selection.partition_at, scsc.api.run, scsc.data.io.read,\n"
        "          scsc.components.base.Views, scsc.train.state.TrainState):\n"
        "    assert callable(f), f\n"
        "for bad in (lambda: scsc.nope, lambda: scsc.data.nope, lambda: scsc._private):\n"
        "    try:\n"
        "        bad()\n"
        "    except AttributeError:\n"
        "        continue\n"
        "    raise SystemExit('an unknown name resolved')\n"
        "print('ok')\n"
    )
    assert fresh_python(code) == "ok"
