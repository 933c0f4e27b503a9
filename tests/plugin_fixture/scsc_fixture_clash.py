"""A plugin that claims a built-in name (``cluster`` / ``kmeans``): registering it must fail."""

from scsc.components.cluster import KMeansHead
from scsc.plugins import hookimpl


@hookimpl
def scsc_register_components(registry):
    registry.add("cluster", "kmeans", KMeansHead, "a second kmeans")
