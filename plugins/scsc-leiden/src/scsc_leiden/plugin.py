"""The module named by the ``scsc`` entry point: one hook that registers the component."""

from scsc.plugins import hookimpl

from .head import LeidenHead


@hookimpl
def scsc_register_components(registry):
    registry.add(
        "cluster",
        "leiden",
        LeidenHead,
        "Leiden communities of Z as initial clusters and OT proportions (for unknown K); Sinkhorn target",
    )
