"""Handing freed memory back to the operating system between the stages of a run.

glibc's allocator keeps freed heap memory for reuse; after the large temporaries of reading, preprocessing
and the kNN search it can hold gigabytes that the next stage, allocating blocks of other sizes, does not reuse,
so the process's resident memory (what a scheduler or a lab server counts) stays at its high-water mark. A
``malloc_trim(0)`` between stages returns those pages; it changes no value a run computes. Elsewhere than
glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Collect garbage and return the allocator's free pages to the OS; True when glibc's ``malloc_trim`` ran."""
    gc.collect()
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    return True
