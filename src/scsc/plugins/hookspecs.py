"""The plugin contract.

A plugin is any module or object with a function decorated by :data:`hookimpl` named
``scsc_register_components``; it receives the :class:`~scsc.plugins.manager.Registry` and calls
``registry.add(kind, name, factory, summary)``. Third-party packages expose such a module through the
``scsc`` entry-point group::

    [project.entry-points.scsc]
    my_plugin = "my_package.scsc_plugin"
"""

import pluggy

PROJECT = "scsc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def scsc_register_components(registry):
    """Register components with ``registry.add(kind, name, factory, summary)``.

    ``kind`` is one of ``augment``, ``encoder``, ``fusion``, ``cluster``; ``factory(config, **context)``
    builds the component from a :class:`~scsc.config.RunConfig`.
    """
