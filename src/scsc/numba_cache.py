"""numba's on-disk cache for the kernels of umap-learn and pynndescent.

Both packages compile their numba kernels in every process and cache none of them: about 7 s of every
``scsc cluster`` on 2 cores went to compiling kernels for the UMAP figure (and for the Leiden estimate of K, and
for pynndescent's approximate kNN above 50,000 cells). With the cache only the first run on a machine compiles.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings


@contextlib.contextmanager
def _cache_by_default():
    """While active, ``numba.jit``/``numba.njit`` default to ``cache=True``.

    pynndescent compiles dozens of distance kernels with explicit signatures while it is imported, so they
    cannot be switched to a cache afterwards. Turning the default on for the duration of that import is the
    only way to cache them without changing the packages.
    """
    import numba

    originals = {name: getattr(numba, name) for name in ("jit", "njit")}

    def cached(original):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return original(*args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(numba, name, cached(original))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a kernel numba cannot cache still compiles, as before
            yield
    finally:
        for name, original in originals.items():
            setattr(numba, name, original)


def cache_umap_kernels() -> int:
    """Import umap-learn (and pynndescent) with numba's on-disk cache on; returns how many kernels were switched
    after import. Also hides, for the rest of the process, numba's "Cannot cache compiled function" warnings of
    pynndescent's kernels that cannot be cached (they compile in memory, as before).

    Call it before anything imports umap-learn or pynndescent (scanpy's neighbours, the UMAP, NNDescent). When
    umap-learn is not imported yet, it is imported with the cache on by default, which catches the kernels
    pynndescent compiles at import; the lazily compiled kernels of umap-learn (fuzzy graph, layout) are then
    switched one by one, which also works when umap-learn was imported before. numba keys the cache on the
    source files, so an upgrade of either package recompiles. Any failure leaves the kernels as they were (they
    then compile in memory, as before).
    """
    try:
        if "umap" not in sys.modules:
            with _cache_by_default():
                import umap
        import umap.layouts
        import umap.umap_
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except Exception:  # noqa: BLE001 - a missing or changed umap-learn/numba only costs time
        return 0
    # With the cache on by default at import, pynndescent's kernels that take a function argument (its graph
    # builders) cannot be cached and say so when they first compile, on stderr even under --quiet; they compile
    # in memory as before, so the message only alarms users. Only pynndescent's: a user's own kernels still warn.
    from numba.core.errors import NumbaWarning

    # The pattern must match from the start of the message, which numba may begin with terminal colour codes.
    warnings.filterwarnings(
        "ignore", message=r".*Cannot cache compiled function", category=NumbaWarning, module=r".*pynndescent"
    )
    switched = 0
    for module in (umap.umap_, umap.layouts):
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                    switched += 1
                except Exception:  # noqa: BLE001, S112 - that kernel then compiles in memory, as before
                    continue
    return switched
