"""Metanetworks that read a network's weights and predict its properties."""

from metanets.models import METANETS, VIEWS, MetanetContext, MetanetEntry, get_metanet, register_metanet
from metanets.views import STATISTICS, statistics_view, trainable_view

# Structure-aware metanets register themselves on import.
from metanets import gmn, nfn  # noqa: E402,F401  (after the registry exists)

__all__ = ["METANETS", "VIEWS", "MetanetContext", "MetanetEntry", "STATISTICS", "get_metanet", "register_metanet", "statistics_view",
           "trainable_view"]
