"""The module named by the ``scsc`` entry point: one hook that registers the encoder and its settings."""

from scsc.plugins import hookimpl

from .encoder import GATEncoder, GATSettings


@hookimpl
def scsc_register_components(registry):
    registry.add_config_section("gat", GATSettings)
    registry.add("encoder", "gat", GATEncoder,
                 "graph attention (torch-geometric GATConv) over the cell graph; one branch; [plugin.gat]")
