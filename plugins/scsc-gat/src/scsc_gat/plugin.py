"""The module named by the ``scsc`` entry point: one hook that registers the encoder and its settings.

torch-geometric (and torch's compiler stack, which it imports) takes seconds to import, so the encoder module
is imported only when a run builds the ``gat`` encoder: installing the plugin costs other runs nothing.
"""

from scsc.plugins import hookimpl

from .settings import GATSettings


def gat_encoder(config, **context):
    """Build :class:`scsc_gat.encoder.GATEncoder` (imported on first use)."""
    from .encoder import GATEncoder

    return GATEncoder(config, **context)


@hookimpl
def scsc_register_components(registry):
    registry.add_config_section("gat", GATSettings)
    registry.add(
        "encoder",
        "gat",
        gat_encoder,
        "graph attention (torch-geometric GATConv) over the cell graph; one branch; [plugin.gat]",
    )
