"""Metanetworks that read a network's weights and predict its properties."""

from metanets.models import METANETS, VIEWS, MetanetContext, MetanetEntry, get_metanet, register_metanet
from metanets.views import STATISTICS, statistics_view, trainable_view

# Structure-aware metanets register themselves on import.
from metanets import nfn  # noqa: E402,F401  (after the registry exists)


def _build_gmn(context: MetanetContext):
    # Imported when a GMN is built: torch_geometric takes ~3 s to import, which every symzoo
    # command would otherwise pay.
    from metanets.gmn import GraphMetanet

    return GraphMetanet(context.layout, context.arch)


# Published GMNs standardise each weight tensor with train-split statistics (without it a
# permutation-equivariant GMN stays near chance) and bound predicted accuracies with a sigmoid
# (neural-graphs' cnn_generalization trainer; on the standard digits zoo it lifts τ .695 -> .742).
register_metanet("gmn", "flat", invariant=True, normalize=True, sigmoid=True)(_build_gmn)

__all__ = ["METANETS", "VIEWS", "MetanetContext", "MetanetEntry", "STATISTICS", "get_metanet", "register_metanet", "statistics_view",
           "trainable_view"]
