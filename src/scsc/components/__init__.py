"""Built-in components, one module per kind (augment, encoder, fusion, cluster), registered through pluggy.

List what is registered (built-ins and plugins) with :func:`scsc.list_components` or ``scsc components``.
"""
