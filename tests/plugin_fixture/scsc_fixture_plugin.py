"""A third-party scsc plugin used by tests/test_registry.py.

It is exposed through a real entry point (group ``scsc``): the test writes a ``*.dist-info`` folder whose
``entry_points.txt`` names this module, next to a copy of this file, into a folder on ``sys.path``.
"""

from scsc.components.cluster import KMeansHead
from scsc.plugins import hookimpl


class FixtureHead(KMeansHead):
    """KMeans on the final embedding, registered under another name by a plugin."""


@hookimpl
def scsc_register_components(registry):
    registry.add("cluster", "fixture_head", FixtureHead, "test plugin head\n(second line is not shown)")
