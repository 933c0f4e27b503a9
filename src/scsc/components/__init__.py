"""Built-in components, one module per kind (augment, encoder, fusion, cluster), registered through pluggy.

List what is registered (built-ins and plugins) with :func:`scsc.list_components` or ``scsc components``.
"""

from .._lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)  # scsc.components.<module> after a bare ``import scsc``
